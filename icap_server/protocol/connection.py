"""The ICAP/1.0 server-side connection state machine (RFC 3507), sans-I/O.

Feed it bytes with `receive_data`, pull events with `next_event`, and turn answers into bytes with `send`,
`send_continue` and `send_error`. It never touches a socket, so every case can be tested byte by byte.

An echo can be streamed instead of sent whole: `send_head` as soon as the request head is in, `send_body`
for each piece of body as it arrives, `send_end` once the message is complete. Memory then stays bounded
however large the body is; the state machine refuses every other order.

One transaction at a time: the client's message is read up to its end (or up to the end of its preview),
then the connection pauses until the server answers; after the answer all per-transaction state is reset
and the next request on the same connection is parsed from a clean slate.
"""

from __future__ import annotations

from enum import Enum, auto
from urllib.parse import urlsplit

from ._abnf import ICAP_VERSION_RE, REQUEST_LINE_CTL_RE, TOKEN_RE
from ._buffer import ReceiveBuffer
from ._quick import QuickRequest, QuickScan
from ._readers import ChunkedReader, read_head
from .encapsulated import NULL_BODY, Encapsulated, parse_encapsulated
from .errors import LocalProtocolError, RemoteProtocolError
from .events import (
    NEED_DATA,
    PAUSED,
    ConnectionClosed,
    EndOfMessage,
    EndOfPreview,
    Event,
    ICAPRequest,
    Response,
    _NeedData,
    _Paused,
)
from .headers import MAX_HEADER_FIELDS, Headers, parse_header_block
from .http import HTTPRequestHead, HTTPResponseHead, parse_http_request_head, parse_http_response_head
from .serialize import CONTINUE_BYTES, LAST_CHUNK, chunk, serialize_head, serialize_response

METHODS = frozenset({"OPTIONS", "REQMOD", "RESPMOD"})


class Phase(Enum):
    """Where the client's side of the current transaction stands."""

    HEAD = auto()  # waiting for (the rest of) an ICAP request head
    ENCAPSULATED = auto()  # head parsed, waiting for the encapsulated HTTP header sections
    BODY = auto()  # reading the chunked body (or its preview)
    NULL_BODY_END = auto()  # request had no body: EndOfMessage is next
    PREVIEW_ENDED = auto()  # preview complete without ieof: the server must decide
    DONE = auto()  # the message is complete: the server must answer
    CLOSING = auto()  # we answered and will close; nothing more is read
    ERROR = auto()  # the client broke the protocol


# Phases in which the client has nothing more to say until we answer.
WAITING = frozenset({Phase.PREVIEW_ENDED, Phase.DONE, Phase.CLOSING})
# Where the end of a body leaves the transaction.
AFTER_BODY: dict[type, Phase] = {EndOfPreview: Phase.PREVIEW_ENDED, EndOfMessage: Phase.DONE}
# The phases `send` may answer in, and where it leaves the connection (kept open, or closing).
ANSWERABLE = frozenset({Phase.DONE, Phase.PREVIEW_ENDED})
# The phases a streamed answer may begin in: the body is still arriving, or has just ended.
STREAMABLE = frozenset({Phase.BODY, Phase.DONE})
# Largest announced Preview accepted: what a preview carries is kept until the answer is chosen.
MAX_PREVIEW_BYTES = 65536

Pending = tuple[str, str, str, Headers, Encapsulated, int | None]


class ICAPConnection:
    """Server side of one ICAP connection."""

    def __init__(
        self,
        max_header_bytes: int = 65536,
        max_header_fields: int = MAX_HEADER_FIELDS,
        max_preview_bytes: int = MAX_PREVIEW_BYTES,
        quick: QuickScan | None = None,
    ) -> None:
        self.max_header_bytes = max_header_bytes
        self.quick_scan = quick
        self.max_header_fields = max_header_fields
        self.max_preview_bytes = max_preview_bytes
        self._head_too_large = f"ICAP header exceeds {max_header_bytes} bytes"
        self._buffer = ReceiveBuffer()
        self._peer_closed = False
        self.closing = False  # set by a server that is stopping: the next answer says Connection: close
        self.phase = Phase.HEAD
        self.transactions = 0
        self._reset_transaction()

    # ---- per-transaction state -------------------------------------------------------------

    def _reset_transaction(self) -> None:
        self.request: ICAPRequest | None = None
        self._pending: Pending | None = None
        self._body: ChunkedReader | None = None
        self.streaming = False  # send_head was called: the answer is under way
        self._continued = False  # send_continue was called: the rest of a previewed body is coming
        self._close_after = False

    # ---- input ----------------------------------------------------------------------------

    def receive_data(self, data: bytes) -> None:
        """Add bytes from the client; b"" means the client closed its side."""
        if data:
            if self._peer_closed:
                raise LocalProtocolError("received data after end of stream")
            self._buffer += data
        else:
            self._peer_closed = True

    def quick(self, data: bytes) -> QuickRequest | None:
        """`data` read by the quick scan (`_quick.py`) when it is one whole common message and the connection
        is between messages; None otherwise, and then `receive_data(data)` as ever. Nothing changes here
        until `send_quick` answers it."""
        scan = self.quick_scan
        if scan is None or self.phase is not Phase.HEAD or self._buffer or self._peer_closed or self.closing:
            return None
        return scan.scan(data, scan.user_header, self.max_header_bytes, self.max_header_fields)

    def send_quick(self, response: Response) -> bytes:
        """The answer to a message `quick` read; the connection stays open for the next (`quick` only reads
        messages without `Connection`, and never while closing)."""
        if self.phase is not Phase.HEAD or self._buffer:
            raise LocalProtocolError(f"no quick request to answer in phase {self.phase.name}")
        self.transactions += 1
        return serialize_response(response, close=False)

    @property
    def their_message_in_progress(self) -> bool:
        """True once any byte of a request has arrived and until it is complete (for 408 decisions)."""
        if self.phase is Phase.HEAD:
            return self._buffer.holds_more_than_blank_lines()
        return self.phase not in (Phase.PREVIEW_ENDED, Phase.DONE, Phase.CLOSING, Phase.ERROR)

    def next_event(self) -> Event | _NeedData | _Paused:
        if self.phase is Phase.ERROR:
            raise LocalProtocolError("the connection already failed; send an error and close it")
        try:
            return self._next_event()
        except RemoteProtocolError:
            self.phase = Phase.ERROR
            raise

    def _next_event(self) -> Event | _NeedData | _Paused:
        phase = self.phase
        if phase is Phase.HEAD:
            if not self._read_icap_head():
                return self._incomplete(at_boundary=True)
            phase = self.phase
        if phase is Phase.ENCAPSULATED:
            return self._read_encapsulated_headers() or self._incomplete()
        if phase is Phase.BODY:
            assert self._body is not None
            event = self._body(self._buffer)
            if event is None:
                return self._incomplete()
            self.phase = AFTER_BODY.get(type(event), Phase.BODY)
            return event
        if phase is Phase.NULL_BODY_END:
            self.phase = Phase.DONE
            return EndOfMessage()
        if phase in WAITING:
            return PAUSED
        raise AssertionError(phase)  # pragma: no cover - every phase is handled above

    def _incomplete(self, at_boundary: bool = False) -> ConnectionClosed | _NeedData:
        """Need more bytes, unless the client closed: cleanly between messages, else in the middle of one."""
        if not self._peer_closed:
            return NEED_DATA
        return ConnectionClosed(clean=at_boundary and not self._buffer)

    def _read_icap_head(self) -> bool:
        """Parse an ICAP head into the pending transaction; False until one is complete."""
        self._buffer.skip_blank_lines()
        if not self._buffer:
            return False
        head = read_head(self._buffer, self.max_header_bytes, self._head_too_large)
        if head is None:
            return False
        self._pending = self._parse_icap_head(head)
        self.phase = Phase.ENCAPSULATED
        return True

    def _parse_icap_head(self, head: bytes) -> Pending:
        line_end = head.find(b"\r\n")
        request_line, block = (head, b"") if line_end < 0 else (head[:line_end], head[line_end + 2 :])
        method, uri = _parse_request_line(request_line)
        service = _service_path(uri)
        headers = parse_header_block(block, "ICAP", self.max_header_fields)
        if "host" not in headers:
            raise RemoteProtocolError(400, "missing Host header")
        encapsulated = self._encapsulated(headers, method)
        preview = _preview(headers, encapsulated, method)
        if preview is not None and preview > self.max_preview_bytes:
            raise RemoteProtocolError(400, f"Preview of {preview} bytes exceeds {self.max_preview_bytes}")
        return method, uri, service, headers, encapsulated, preview

    def _encapsulated(self, headers: Headers, method: str) -> Encapsulated:
        values = headers.get_all("Encapsulated")
        if len(values) > 1:
            raise RemoteProtocolError(400, "more than one Encapsulated header")
        if values:
            return parse_encapsulated(values[0], method, self.max_header_bytes)
        if method == "OPTIONS":
            return NULL_BODY
        raise RemoteProtocolError(400, f"{method} request without an Encapsulated header")

    def _read_encapsulated_headers(self) -> ICAPRequest | None:
        assert self._pending is not None
        method, uri, service, headers, encapsulated, preview = self._pending
        if len(self._buffer) < encapsulated.body_offset:
            return None
        http_request: HTTPRequestHead | None = None
        http_response: HTTPResponseHead | None = None
        for name, start, end in encapsulated.sections:
            raw = self._buffer.peek(start, end)
            if name == "req-hdr":
                http_request = parse_http_request_head(raw, self.max_header_fields)
            else:
                http_response = parse_http_response_head(raw, self.max_header_fields)
        self._buffer.discard(encapsulated.body_offset)
        request = ICAPRequest(
            method=method,
            uri=uri,
            service=service,
            headers=headers,
            encapsulated=encapsulated,
            http_request=http_request,
            http_response=http_response,
            preview=preview,
            allow=headers.tokens("Allow"),
        )
        self.request = request
        self._pending = None
        if encapsulated.has_body:
            self._body = ChunkedReader(preview, self.max_header_bytes, self.max_header_fields)
            self.phase = Phase.BODY
        else:
            self.phase = Phase.NULL_BODY_END
        return request

    # ---- output ---------------------------------------------------------------------------

    @property
    def can_send_204(self) -> bool:
        """204 is allowed if the client said `Allow: 204`, or in answer to a preview (RFC 3507 4.5, 4.6)."""
        if self.request is None:
            return False
        return "204" in self.request.allow or self.phase is Phase.PREVIEW_ENDED

    @property
    def keep_alive(self) -> bool:
        return self.phase is not Phase.CLOSING and self.phase is not Phase.ERROR

    def send_continue(self) -> bytes:
        """Ask for the rest of the body after a preview (never after ieof, never before the preview ends)."""
        if self.phase is not Phase.PREVIEW_ENDED:
            raise LocalProtocolError(f"100 Continue is not allowed in phase {self.phase.name}")
        assert self._body is not None
        self._body.resume()
        self.phase = Phase.BODY
        self._continued = True
        return CONTINUE_BYTES

    def send(self, response: Response) -> bytes:
        """Serialize the final answer to the current request and get ready for the next one."""
        if self.streaming:
            raise LocalProtocolError("a streamed answer is under way: finish it with send_end()")
        if self.phase not in ANSWERABLE or self.request is None:
            raise LocalProtocolError(f"cannot answer in phase {self.phase.name}: the request is not complete")
        if response.status == 100:
            raise LocalProtocolError("use send_continue() for 100 Continue")
        if response.status == 204 and not self.can_send_204:
            raise LocalProtocolError("204 is only allowed with Allow: 204 or in answer to a preview")
        close = self.request.wants_close or self._peer_closed or self.closing
        data = serialize_response(response, close=close)
        self._finish(close)
        return data

    def _finish(self, close: bool) -> None:
        self.transactions += 1
        if close:
            self.phase = Phase.CLOSING
        else:
            self.phase = Phase.HEAD
            self._reset_transaction()

    def send_head(self, response: Response) -> bytes:
        """Begin a streamed answer: the ICAP head and the HTTP head, with the body to follow in chunks.

        Only for a request with a body, outside a preview, or after a preview once `send_continue` asked for the
        rest (the preview's bytes are then the first `send_body`).
        """
        request = self.request
        if request is None or self.phase not in STREAMABLE or self.streaming:
            raise LocalProtocolError(f"cannot begin a streamed answer in phase {self.phase.name}")
        if not request.has_body or (request.preview is not None and not self._continued):
            raise LocalProtocolError("a streamed answer is only for a request with a body, after any preview")
        if response.status != 200:
            raise LocalProtocolError("only a 200 answer carries a streamed body")
        self._close_after = request.wants_close or self._peer_closed or self.closing
        data = serialize_head(response, close=self._close_after)
        self.streaming = True
        return data

    def send_body(self, data: bytes) -> bytes:
        """The next piece of a streamed body, as a chunk (nothing for an empty piece)."""
        if not self.streaming:
            raise LocalProtocolError("send_head() must begin the answer before its body")
        return chunk(data) if data else b""

    def send_end(self) -> bytes:
        """End a streamed answer once the client's message is complete, and get ready for the next one."""
        if not self.streaming or self.phase is not Phase.DONE:
            raise LocalProtocolError(f"cannot end a streamed answer in phase {self.phase.name}")
        self._finish(self._close_after or self._peer_closed)
        return LAST_CHUNK

    def send_error(self, response: Response) -> bytes:
        """An error answer at any point (malformed input, timeout, internal error); the connection closes.

        Not once a streamed answer has begun: its head is already out, so the only honest end is to close.
        """
        if self.phase is Phase.CLOSING:
            raise LocalProtocolError("the connection has already answered and is closing")
        if self.streaming:
            self.phase = Phase.CLOSING
            raise LocalProtocolError("a streamed answer has begun: close the connection instead")
        self.phase = Phase.CLOSING
        return serialize_response(response, close=True)


def _parse_request_line(line: bytes) -> tuple[str, str]:
    """`METHOD SP URI SP ICAP/1.0` into the method and URI; the right status for each way it can be wrong."""
    parts = line.split(b" ")
    if len(parts) != 3 or not TOKEN_RE.match(parts[0]) or not parts[1] or REQUEST_LINE_CTL_RE.search(line):
        raise RemoteProtocolError(400, f"malformed ICAP request line {line[:80]!r}")
    method, uri, version = (part.decode("latin-1") for part in parts)
    if version != "ICAP/1.0":
        if ICAP_VERSION_RE.match(version):
            raise RemoteProtocolError(505, f"ICAP version {version} is not supported")
        raise RemoteProtocolError(400, f"malformed ICAP version {version!r}")
    if method not in METHODS:
        raise RemoteProtocolError(501, f"method {method} is not implemented")
    return method, uri


def _preview(headers: Headers, encapsulated: Encapsulated, method: str) -> int | None:
    """The announced preview size; with null-body nothing follows, whatever Preview says (Squid sends
    `Preview: 0` on every GET)."""
    text = headers.get("Preview")
    if text is None:
        return None
    if not (text.isascii() and text.isdigit()) or len(text) > 9:
        raise RemoteProtocolError(400, f"malformed Preview value {text!r}")
    return int(text) if encapsulated.has_body and method != "OPTIONS" else None


_services: dict[str, str] = {}


def _service_path(uri: str) -> str:
    """The service a request URI names: its path (`icap://host[:port]/reqmod?x` -> `/reqmod`).

    A proxy sends the same URI on every request, so the answer for a valid one is remembered.
    """
    found = _services.get(uri)
    if found is None:
        found = _parse_service_path(uri)
        if len(_services) >= 256:
            _services.clear()
        _services[uri] = found
    return found


def _parse_service_path(uri: str) -> str:
    try:
        parts = urlsplit(uri)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError as error:
        raise RemoteProtocolError(400, f"malformed ICAP URI {uri[:80]!r}") from error
    if parts.scheme.lower() not in ("icap", "icaps") or not parts.hostname:  # icaps: ICAP over TLS (Squid's name)
        raise RemoteProtocolError(400, f"malformed ICAP URI {uri[:80]!r}: expected icap://host[:port]/service")
    return parts.path or "/"
