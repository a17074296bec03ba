"""Drives the sans-I/O protocol core as a server would, for the protocol tests (tests/test_protocol_*.py).

Builders write client bytes (ICAP heads, HTTP heads, chunked bodies); `drive` feeds them to an
`ICAPConnection` in the given pieces and records its events and answers; `run_both` feeds the same bytes
whole and byte by byte and requires both runs to agree. Every byte the connection writes is checked by the
independent RFC 3507 reader in `icap_grammar`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import pytest

from icap_server.protocol import (
    NEED_DATA,
    PAUSED,
    BodyData,
    ConnectionClosed,
    EndOfMessage,
    EndOfPreview,
    ICAPConnection,
    ICAPRequest,
    LocalProtocolError,
    Phase,
    RemoteProtocolError,
    Response,
)
from icap_server.service import responses

from .icap_grammar import ICAPResponse, parse_one

TAG = responses.istag(42)
URI = "icap://127.0.0.1:1344/reqmod"
CONTINUE = b"ICAP/1.0 100 Continue\r\n\r\n"

# ---- client-side builders --------------------------------------------------------------------------------


def http_head(
    method: str = "GET", target: str = "http://www.example.com/", extra: Sequence[tuple[str, str]] = ()
) -> bytes:
    """An HTTP request head as Squid encapsulates it."""
    lines = [f"{method} {target} HTTP/1.1", "Host: www.example.com", *(f"{k}: {v}" for k, v in extra)]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def http_response_head(status: int = 200, extra: Sequence[tuple[str, str]] = ()) -> bytes:
    lines = [f"HTTP/1.1 {status} OK", "Content-Type: text/plain", *(f"{k}: {v}" for k, v in extra)]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def chunks(*pieces: bytes, last: bytes = b"0\r\n\r\n") -> bytes:
    """Chunked encoding of `pieces` (one chunk each), closed by `last`."""
    return b"".join(b"%x\r\n%b\r\n" % (len(piece), piece) for piece in pieces) + last


def icap(
    method: str = "REQMOD",
    uri: str = URI,
    *,
    req_hdr: bytes | None = None,
    res_hdr: bytes | None = None,
    body: bytes | None = None,
    headers: Sequence[tuple[str, str]] = (),
    host: str | None = "127.0.0.1:1344",
    encapsulated: str | bool = True,
) -> bytes:
    """An ICAP request: head, encapsulated HTTP heads, then `body` (already chunked) if any.

    Encapsulated is computed from the parts (True), left out (False) or given verbatim (a str).
    """
    sections = b""
    items = []
    for name, part in (("req-hdr", req_hdr), ("res-hdr", res_hdr)):
        if part is not None:
            items.append(f"{name}={len(sections)}")
            sections += part
    body_name = {"REQMOD": "req-body", "RESPMOD": "res-body"}.get(method, "opt-body")
    items.append(f"{body_name if body is not None else 'null-body'}={len(sections)}")
    lines = [f"{method} {uri} ICAP/1.0"]
    if host is not None:
        lines.append(f"Host: {host}")
    lines += [f"{name}: {value}" for name, value in headers]
    if encapsulated is True:
        lines.append("Encapsulated: " + ", ".join(items))
    elif encapsulated:
        lines.append(f"Encapsulated: {encapsulated}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + sections + (body or b"")


def squid_get(target: str = "http://www.example.com/", allow_204: bool = True) -> bytes:
    """What Squid sends for every GET: null-body, yet `Preview: 0`."""
    headers = [("Preview", "0")] + ([("Allow", "204")] if allow_204 else [])
    return icap(req_hdr=http_head("GET", target), headers=headers)


def options_request(encapsulated: str | bool = False) -> bytes:
    return icap("OPTIONS", encapsulated=encapsulated)


# ---- the driver: plays the server's part, feeding bytes in the given pieces ------------------------------

Responder = Callable[[ICAPConnection, ICAPRequest, bytes, EndOfPreview | EndOfMessage], bytes]
Item = ICAPRequest | BodyData | EndOfPreview | EndOfMessage | ConnectionClosed


def answer(conn: ICAPConnection, request: ICAPRequest, body: bytes) -> Response:
    """What Clearance does when it lets a request pass: OPTIONS answer, 204 if allowed, else a full echo."""
    if request.method == "OPTIONS":
        return responses.options(TAG, "REQMOD", 100, 300)
    if conn.can_send_204:
        return responses.no_content(TAG)
    return responses.unmodified(TAG, request, body if request.has_body else None)


def respond(conn: ICAPConnection, request: ICAPRequest, body: bytes, event: EndOfPreview | EndOfMessage) -> bytes:
    """Ask for the rest after every preview; answer every complete message."""
    if isinstance(event, EndOfPreview):
        return conn.send_continue()
    return conn.send(answer(conn, request, body))


def respond_in_preview(
    conn: ICAPConnection, request: ICAPRequest, body: bytes, event: EndOfPreview | EndOfMessage
) -> bytes:
    """Decide on the preview: a 204 right away, so the client never sends the rest."""
    return conn.send(answer(conn, request, body))


@dataclass
class Transcript:
    events: list[Item] = field(default_factory=list)
    outputs: list[tuple[str | None, bytes]] = field(default_factory=list)  # (method answered, bytes sent)
    error: tuple[int, str] | None = None
    end: str = ""  # "closed" (ConnectionClosed), "paused" (we answered and are closing), "error"
    keep_alive: bool = True
    transactions: int = 0

    @property
    def output(self) -> bytes:
        return b"".join(out for _, out in self.outputs)

    @property
    def requests(self) -> list[ICAPRequest]:
        return [event for event in self.events if isinstance(event, ICAPRequest)]

    def parsed(self) -> list[ICAPResponse]:
        return [parse_one(out, method) for method, out in self.outputs]

    def comparable(self) -> tuple[object, ...]:
        outputs = [(method, re.sub(rb"\r\nDate: [^\r\n]*", b"\r\nDate: -", out)) for method, out in self.outputs]
        return (self.events, outputs, self.error, self.end, self.keep_alive, self.transactions)


def drive(pieces: Iterable[bytes], responder: Responder = respond, *, max_header_bytes: int = 65536) -> Transcript:
    """Feed `pieces` one at a time, then the end of the stream, answering each message as `responder` says."""
    conn = ICAPConnection(max_header_bytes=max_header_bytes)
    result = Transcript()
    feed = iter(pieces)
    sent_eof = False
    request: ICAPRequest | None = None
    body = bytearray()
    while True:
        try:
            event = conn.next_event()
        except RemoteProtocolError as problem:
            result.error = (problem.status, problem.message)
            with pytest.raises(LocalProtocolError):
                conn.next_event()
            result.outputs.append((None, conn.send_error(responses.error(TAG, problem.status))))
            result.end = "error"
            break
        if event is NEED_DATA:
            piece = next(feed, None)
            if piece is not None:
                assert piece, "an empty piece would mean end of stream"
                conn.receive_data(piece)
            else:
                assert not sent_eof, "NEED_DATA after the end of the stream"
                conn.receive_data(b"")
                sent_eof = True
            continue
        if event is PAUSED:
            assert conn.phase is Phase.CLOSING, "we answer at once, so only a closing connection pauses"
            result.end = "paused"
            break
        assert isinstance(event, ICAPRequest | BodyData | EndOfPreview | EndOfMessage | ConnectionClosed)
        if isinstance(event, BodyData) and result.events and isinstance(result.events[-1], BodyData):
            result.events[-1] = BodyData(result.events[-1].data + event.data)
        else:
            result.events.append(event)
        if isinstance(event, ConnectionClosed):
            result.end = "closed"
            break
        if isinstance(event, ICAPRequest):
            request, body = event, bytearray()
        elif isinstance(event, BodyData):
            assert event.data, "BodyData is never empty"
            body += event.data
        else:
            assert request is not None
            result.outputs.append((request.method, responder(conn, request, bytes(body), event)))
    result.keep_alive = conn.keep_alive
    result.transactions = conn.transactions
    return result


def run_both(data: bytes, responder: Responder = respond, *, max_header_bytes: int = 65536) -> Transcript:
    """Feed `data` whole and byte by byte; both must agree; every output must be a valid ICAP response."""
    whole = drive([data] if data else [], responder, max_header_bytes=max_header_bytes)
    bytewise = drive([data[i : i + 1] for i in range(len(data))], responder, max_header_bytes=max_header_bytes)
    assert whole.comparable() == bytewise.comparable()
    whole.parsed()
    return whole


def error_of(data: bytes, *, max_header_bytes: int = 65536) -> tuple[int, str]:
    """The RemoteProtocolError `data` causes (fed both ways); its error response is checked too."""
    result = run_both(data, max_header_bytes=max_header_bytes)
    assert result.error is not None, f"accepted: {result.events}"
    assert result.end == "error" and not result.keep_alive
    check_error_response(result.outputs[-1][1], result.error[0])
    return result.error


def check_error_response(data: bytes, status: int) -> ICAPResponse:
    parsed = parse_one(data)
    assert parsed.status == status
    assert parsed.get("ISTag") == TAG
    assert parsed.tokens("Connection") == {"close"}
    assert parsed.get("Encapsulated") == "null-body=0"
    assert parsed.body is None and parsed.raw.endswith(b"\r\n\r\n")
    return parsed


def single(result: Transcript) -> ICAPRequest:
    (request,) = result.requests
    return request


HEAD = http_head()


def preview_request(
    preview: int, preview_part: bytes, rest: bytes | None = None, *, allow_204: bool = False, ieof: bool = False
) -> bytes:
    """A request with a preview; `rest` (chunked here) is what the client sends after 100 Continue."""
    last = b"0; ieof\r\n\r\n" if ieof else b"0\r\n\r\n"
    headers = [("Preview", str(preview))] + ([("Allow", "204")] if allow_204 else [])
    body = chunks(preview_part, last=last) if preview_part else last
    return icap(req_hdr=http_head("POST"), body=body, headers=headers) + (chunks(rest) if rest is not None else b"")
