"""The ICAP/1.0 server-side connection state machine (RFC 3507), sans-I/O.

Feed it bytes with `receive_data`, pull events with `next_event`, and turn answers into bytes with `send`,
`send_continue` and `send_error`. It never touches a socket, so every case can be tested byte by byte.

One transaction at a time: the client's message is read up to its end (or up to the end of its preview),
then the connection pauses until the server answers; after the answer all per-transaction state is reset
and the next request on the same connection is parsed from a clean slate.
"""

from __future__ import annotations

import re
from enum import Enum, auto
from urllib.parse import urlsplit

from .encapsulated import NULL_BODY, Encapsulated, parse_encapsulated
from .errors import LocalProtocolError, RemoteProtocolError
from .events import (
    NEED_DATA,
    PAUSED,
    BodyData,
    ConnectionClosed,
    EndOfMessage,
    EndOfPreview,
    Event,
    ICAPRequest,
    Response,
    _NeedData,
    _Paused,
)
from .headers import TOKEN_RE, Headers, parse_header_block
from .http import HTTPRequestHead, HTTPResponseHead, parse_http_request_head, parse_http_response_head
from .serialize import CONTINUE_BYTES, serialize_response

METHODS = frozenset({"OPTIONS", "REQMOD", "RESPMOD"})
ICAP_VERSION_RE = re.compile(r"^ICAP/[0-9]+\.[0-9]+\Z")
# Control characters in the request line (urlsplit would silently drop TAB, CR and LF from the URI).
REQUEST_LINE_CTL_RE = re.compile(rb"[\x00-\x1f\x7f]")
MAX_CHUNK_LINE = 1024
HEX_DIGITS = frozenset(b"0123456789abcdefABCDEF")


class Phase(Enum):
    """Where the client's side of the current transaction stands."""

    HEAD = auto()  # waiting for (the rest of) an ICAP request head
    ENCAPSULATED = auto()  # head parsed, waiting for the encapsulated HTTP header sections
    CHUNK_SIZE = auto()  # waiting for a chunk-size line
    CHUNK_DATA = auto()  # inside a chunk's data
    CHUNK_END = auto()  # waiting for the CRLF after a chunk's data
    TRAILERS = auto()  # after the zero chunk: trailers up to an empty line
    NULL_BODY_END = auto()  # request had no body: EndOfMessage is next
    PREVIEW_ENDED = auto()  # preview complete without ieof: the server must decide
    DONE = auto()  # the message is complete: the server must answer
    CLOSING = auto()  # we answered and will close; nothing more is read
    ERROR = auto()  # the client broke the protocol


class ICAPConnection:
    """Server side of one ICAP connection."""

    def __init__(self, max_header_bytes: int = 65536) -> None:
        self.max_header_bytes = max_header_bytes
        self._buffer = bytearray()
        self._search_from = 0
        self._peer_closed = False
        self.phase = Phase.HEAD
        self.transactions = 0
        self._reset_transaction()

    # ---- per-transaction state -------------------------------------------------------------

    def _reset_transaction(self) -> None:
        self.request: ICAPRequest | None = None
        self._pending: tuple[str, str, str, Headers, Encapsulated, int | None] | None = None
        self._in_preview = False
        self._preview_bytes = 0
        self._chunk_left = 0
        self._ieof = False

    # ---- input ----------------------------------------------------------------------------

    def receive_data(self, data: bytes) -> None:
        """Add bytes from the client; b"" means the client closed its side."""
        if data:
            if self._peer_closed:
                raise LocalProtocolError("received data after end of stream")
            self._buffer += data
        else:
            self._peer_closed = True

    @property
    def their_message_in_progress(self) -> bool:
        """True once any byte of a request has arrived and until it is complete (for 408 decisions)."""
        if self.phase is Phase.HEAD:
            return bool(self._buffer.lstrip(b"\r\n"))
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
        while True:
            phase = self.phase
            if phase is Phase.HEAD:
                event = self._read_head()
                if event is not None:
                    return event
            elif phase is Phase.ENCAPSULATED:
                return self._read_encapsulated_headers()
            elif phase is Phase.NULL_BODY_END:
                self.phase = Phase.DONE
                return EndOfMessage()
            elif phase is Phase.CHUNK_DATA:
                return self._read_chunk_data()
            elif phase is Phase.CHUNK_END:
                if len(self._buffer) < 2:
                    return self._incomplete()
                if self._buffer[:2] != b"\r\n":
                    raise RemoteProtocolError(400, "chunk data is not followed by CRLF")
                del self._buffer[:2]
                self.phase = Phase.CHUNK_SIZE
            elif phase is Phase.CHUNK_SIZE:
                event = self._read_chunk_size()
                if event is not None:
                    return event
            elif phase is Phase.TRAILERS:
                return self._read_trailers()
            elif phase in (Phase.PREVIEW_ENDED, Phase.DONE, Phase.CLOSING):
                return PAUSED
            else:  # pragma: no cover - every phase is handled above
                raise AssertionError(phase)

    def _incomplete(self) -> ConnectionClosed | _NeedData:
        return ConnectionClosed(clean=False) if self._peer_closed else NEED_DATA

    def _read_head(self) -> Event | _NeedData | None:
        buffer = self._buffer
        while buffer[:2] == b"\r\n":  # tolerate stray CRLFs between messages (RFC 9112 section 2.2)
            del buffer[:2]
        if not buffer:
            return ConnectionClosed(clean=True) if self._peer_closed else NEED_DATA
        end = buffer.find(b"\r\n\r\n", self._search_from)
        if end < 0:
            if len(buffer) > self.max_header_bytes:
                raise RemoteProtocolError(400, f"ICAP header exceeds {self.max_header_bytes} bytes")
            self._search_from = max(0, len(buffer) - 3)
            return self._incomplete()
        if end + 4 > self.max_header_bytes:
            raise RemoteProtocolError(400, f"ICAP header exceeds {self.max_header_bytes} bytes")
        head = bytes(buffer[:end])
        del buffer[: end + 4]
        self._search_from = 0
        self._pending = self._parse_icap_head(head)
        self.phase = Phase.ENCAPSULATED
        return None

    def _parse_icap_head(self, head: bytes) -> tuple[str, str, str, Headers, Encapsulated, int | None]:
        line_end = head.find(b"\r\n")
        request_line, block = (head, b"") if line_end < 0 else (head[:line_end], head[line_end + 2 :])
        parts = request_line.split(b" ")
        if len(parts) != 3 or not TOKEN_RE.match(parts[0]) or not parts[1] or REQUEST_LINE_CTL_RE.search(request_line):
            raise RemoteProtocolError(400, f"malformed ICAP request line {request_line[:80]!r}")
        method, uri, version = (part.decode("latin-1") for part in parts)
        if version != "ICAP/1.0":
            if ICAP_VERSION_RE.match(version):
                raise RemoteProtocolError(505, f"ICAP version {version} is not supported")
            raise RemoteProtocolError(400, f"malformed ICAP version {version!r}")
        if method not in METHODS:
            raise RemoteProtocolError(501, f"method {method} is not implemented")
        service = _service_path(uri)
        headers = parse_header_block(block, "ICAP")
        if "host" not in headers:
            raise RemoteProtocolError(400, "missing Host header")
        encapsulated_values = headers.get_all("Encapsulated")
        if len(encapsulated_values) > 1:
            raise RemoteProtocolError(400, "more than one Encapsulated header")
        if encapsulated_values:
            encapsulated = parse_encapsulated(encapsulated_values[0], method, self.max_header_bytes)
        elif method == "OPTIONS":
            encapsulated = NULL_BODY
        else:
            raise RemoteProtocolError(400, f"{method} request without an Encapsulated header")
        preview: int | None = None
        preview_text = headers.get("Preview")
        if preview_text is not None:
            if not (preview_text.isascii() and preview_text.isdigit()) or len(preview_text) > 9:
                raise RemoteProtocolError(400, f"malformed Preview value {preview_text!r}")
            # With null-body nothing follows, whatever Preview says (Squid sends Preview: 0 on every GET).
            if encapsulated.has_body and method != "OPTIONS":
                preview = int(preview_text)
        return method, uri, service, headers, encapsulated, preview

    def _read_encapsulated_headers(self) -> ICAPRequest | ConnectionClosed | _NeedData:
        assert self._pending is not None
        method, uri, service, headers, encapsulated, preview = self._pending
        if len(self._buffer) < encapsulated.body_offset:
            return self._incomplete()
        http_request: HTTPRequestHead | None = None
        http_response: HTTPResponseHead | None = None
        for name, start, end in encapsulated.sections:
            raw = bytes(self._buffer[start:end])
            if name == "req-hdr":
                http_request = parse_http_request_head(raw)
            else:
                http_response = parse_http_response_head(raw)
        del self._buffer[: encapsulated.body_offset]
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
            self._in_preview = preview is not None
            self.phase = Phase.CHUNK_SIZE
        else:
            self.phase = Phase.NULL_BODY_END
        return request

    def _read_chunk_size(self) -> Event | _NeedData | None:
        buffer = self._buffer
        end = buffer.find(b"\r\n", 0, MAX_CHUNK_LINE + 2)
        if end < 0:
            if len(buffer) > MAX_CHUNK_LINE:
                raise RemoteProtocolError(400, "chunk-size line too long")
            return self._incomplete()
        line = bytes(buffer[:end])
        del buffer[: end + 2]
        size_text, _, extensions = line.partition(b";")
        size_text = size_text.strip(b" \t")
        if not size_text or len(size_text) > 16 or not HEX_DIGITS.issuperset(size_text):
            raise RemoteProtocolError(400, f"malformed chunk size {line[:40]!r}")
        size = int(size_text, 16)
        ieof = any(ext.strip(b" \t").lower() == b"ieof" for ext in extensions.split(b";")) if extensions else False
        if size:
            if ieof:
                raise RemoteProtocolError(400, "ieof extension on a non-zero chunk")
            if self._in_preview and self.request is not None and self.request.preview is not None:
                self._preview_bytes += size
                if self._preview_bytes > self.request.preview:
                    raise RemoteProtocolError(
                        400, f"preview carries more than the {self.request.preview} bytes announced"
                    )
            self._chunk_left = size
            self.phase = Phase.CHUNK_DATA
            return None
        if ieof and not self._in_preview:
            raise RemoteProtocolError(400, "ieof outside a preview")
        self._ieof = ieof
        self.phase = Phase.TRAILERS
        return None

    def _read_chunk_data(self) -> BodyData | ConnectionClosed | _NeedData:
        if not self._buffer:
            return self._incomplete()
        take = min(self._chunk_left, len(self._buffer))
        data = bytes(self._buffer[:take])
        del self._buffer[:take]
        self._chunk_left -= take
        if not self._chunk_left:
            self.phase = Phase.CHUNK_END
        return BodyData(data)

    def _read_trailers(self) -> Event | _NeedData:
        buffer = self._buffer
        if buffer[:2] == b"\r\n":
            trailers = Headers()
            del buffer[:2]
        else:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(buffer) > self.max_header_bytes:
                    raise RemoteProtocolError(400, "trailers too large")
                return self._incomplete()
            if end + 4 > self.max_header_bytes:  # the same limit whether the bytes came at once or slowly
                raise RemoteProtocolError(400, "trailers too large")
            trailers = parse_header_block(bytes(buffer[:end]), "trailer")
            del buffer[: end + 4]
        if self._in_preview and not self._ieof:
            self.phase = Phase.PREVIEW_ENDED
            return EndOfPreview()
        self.phase = Phase.DONE
        return EndOfMessage(ieof=self._ieof, trailers=trailers)

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
        self._in_preview = False
        self.phase = Phase.CHUNK_SIZE
        return CONTINUE_BYTES

    def send(self, response: Response) -> bytes:
        """Serialize the final answer to the current request and get ready for the next one."""
        if self.phase not in (Phase.DONE, Phase.PREVIEW_ENDED) or self.request is None:
            raise LocalProtocolError(f"cannot answer in phase {self.phase.name}: the request is not complete")
        if response.status == 100:
            raise LocalProtocolError("use send_continue() for 100 Continue")
        if response.status == 204 and not self.can_send_204:
            raise LocalProtocolError("204 is only allowed with Allow: 204 or in answer to a preview")
        close = self.request.wants_close or self._peer_closed
        data = serialize_response(response, close=close)
        self.transactions += 1
        if close:
            self.phase = Phase.CLOSING
        else:
            self.phase = Phase.HEAD
            self._reset_transaction()
        return data

    def send_error(self, response: Response) -> bytes:
        """An error answer at any point (malformed input, timeout, internal error); the connection closes."""
        if self.phase is Phase.CLOSING:
            raise LocalProtocolError("the connection has already answered and is closing")
        self.phase = Phase.CLOSING
        return serialize_response(response, close=True)


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
    if parts.scheme.lower() != "icap" or not parts.hostname:
        raise RemoteProtocolError(400, f"malformed ICAP URI {uri[:80]!r}: expected icap://host[:port]/service")
    return parts.path or "/"
