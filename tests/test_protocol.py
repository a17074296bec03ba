"""Unit tests of the sans-I/O ICAP protocol core (icap_server.protocol).

Every scenario goes through `run_both`: the same client bytes are fed once in one piece and once byte by
byte, and both runs must give the same events (consecutive BodyData merged), the same answers and the same
error. Every byte the connection writes is checked by the independent RFC 3507 reader in
tests/support/icap_grammar.py.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import pytest

from icap_server.config import Config
from icap_server.protocol import (
    NEED_DATA,
    PAUSED,
    BodyData,
    ConnectionClosed,
    EndOfMessage,
    EndOfPreview,
    Headers,
    ICAPConnection,
    ICAPRequest,
    LocalProtocolError,
    Phase,
    RemoteProtocolError,
    Response,
)
from icap_server.service import responses
from icap_server.service.application import SERVICES, Application
from policy.state import PolicyState
from tests.support.icap_grammar import ICAPResponse, parse_one, parse_stream

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


# ---- request line, URI, service, methods -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("uri", "service"),
    [
        ("icap://127.0.0.1:1344/reqmod", "/reqmod"),
        ("icap://icap.example/reqmod", "/reqmod"),
        ("icap://icap.example:1344/reqmod?mode=strict&x=1", "/reqmod"),
        ("icap://icap.example/respmod?", "/respmod"),
        ("icap://[::1]:1344/reqmod", "/reqmod"),
        ("icap://icap.example", "/"),
        ("icap://icap.example/a/b", "/a/b"),
    ],
)
def test_service_is_the_uri_path(uri: str, service: str) -> None:
    result = run_both(icap(uri=uri, req_hdr=http_head(), headers=[("Allow", "204")]))
    request = single(result)
    assert (request.uri, request.service) == (uri, service)
    assert result.events[1:] == [EndOfMessage(), ConnectionClosed(clean=True)]


def test_reqmod_null_body() -> None:
    head = http_head("GET", "http://www.example.com/path?q=1", [("User-Agent", "t/1")])
    result = run_both(icap(req_hdr=head, headers=[("Allow", "204")]))
    request = single(result)
    assert request.method == "REQMOD" and not request.has_body
    assert request.http_request is not None and request.http_response is None
    assert (request.http_request.method, request.http_request.target) == ("GET", "http://www.example.com/path?q=1")
    assert request.http_request.version == "HTTP/1.1"
    assert request.http_request.raw == head
    assert request.http_request.headers.get("user-agent") == "t/1"
    assert [parsed.status for parsed in result.parsed()] == [204]


def test_respmod_with_both_heads_and_body() -> None:
    req, res = http_head(), http_response_head(200, [("Content-Length", "11")])
    data = icap("RESPMOD", "icap://icap.example/respmod", req_hdr=req, res_hdr=res, body=chunks(b"hello", b" world"))
    result = run_both(data)
    request = single(result)
    assert request.encapsulated.sections == (("req-hdr", 0, len(req)), ("res-hdr", len(req), len(req + res)))
    assert (request.encapsulated.body, request.encapsulated.body_offset) == ("res-body", len(req + res))
    assert request.http_request is not None and request.http_request.raw == req
    assert request.http_response is not None and request.http_response.raw == res
    assert (request.http_response.status, request.http_response.reason) == (200, "OK")
    assert result.events[1:] == [BodyData(b"hello world"), EndOfMessage(), ConnectionClosed()]
    (echo,) = result.parsed()  # no Allow: 204, so the response comes back whole
    assert echo.encapsulated == [("res-hdr", 0), ("res-body", len(res))]
    assert (echo.res_hdr, echo.body) == (res, b"hello world")


def test_options_without_encapsulated() -> None:
    """Squid sends OPTIONS without an Encapsulated header; that is a complete request with no body."""
    result = run_both(options_request())
    request = single(result)
    assert request.method == "OPTIONS" and not request.has_body
    assert result.events[1:] == [EndOfMessage(), ConnectionClosed()]


def test_options_with_null_body_and_with_opt_body() -> None:
    assert single(run_both(options_request("null-body=0"))).encapsulated.body == "null-body"
    result = run_both(icap("OPTIONS", body=chunks(b"opt")))
    assert single(result).encapsulated.body == "opt-body"
    assert result.events[1:] == [BodyData(b"opt"), EndOfMessage(), ConnectionClosed()]


def test_header_names_are_case_insensitive() -> None:
    head = http_head("POST")
    data = (
        b"REQMOD icap://icap.example/reqmod ICAP/1.0\r\nhost: icap.example\r\nALLOW: 204\r\npreview: 2\r\n"
        b"encapsulated: req-hdr=0, req-body=%d\r\n\r\n" % len(head) + head + chunks(b"ab") + chunks(b"cd")
    )
    result = run_both(data)
    request = single(result)
    assert request.allow == {"204"} and request.preview == 2
    assert request.headers.get("Encapsulated") == f"req-hdr=0, req-body={len(head)}"
    assert result.events[1:] == [BodyData(b"ab"), EndOfPreview(), BodyData(b"cd"), EndOfMessage(), ConnectionClosed()]
    assert [parsed.status for parsed in result.parsed()] == [100, 204]


@pytest.mark.parametrize(
    ("allow_lines", "tokens", "may_204"),
    [
        (["204, trailers"], {"204", "trailers"}, True),  # what Squid sends
        (["trailers"], {"trailers"}, False),
        (["204"], {"204"}, True),
        (["trailers", "204"], {"204", "trailers"}, True),  # two Allow fields make one list
        (["2040"], {"2040"}, False),  # a token list, not a substring search
        (["TRAILERS ,204 ,"], {"204", "trailers"}, True),
        ([], set(), False),
    ],
)
def test_allow_is_a_token_list(allow_lines: list[str], tokens: set[str], may_204: bool) -> None:
    seen: list[bool] = []

    def check(conn: ICAPConnection, request: ICAPRequest, body: bytes, event: EndOfPreview | EndOfMessage) -> bytes:
        seen.append(conn.can_send_204)
        return respond(conn, request, body, event)

    data = icap(req_hdr=http_head(), headers=[("Allow", line) for line in allow_lines])
    result = run_both(data, check)
    assert single(result).allow == tokens
    assert seen == [may_204, may_204]  # once per run
    assert result.parsed()[0].status == (204 if may_204 else 200)


# ---- Encapsulated ------------------------------------------------------------------------------------------

HEAD = http_head()
L = len(HEAD)
NEXT = squid_get()  # a following request, so that too-large offsets have bytes to swallow


@pytest.mark.parametrize(
    ("method", "value", "rest"),
    [
        ("REQMOD", f"req-hdr={L}, req-body=3", HEAD + chunks(b"x")),  # offsets decrease
        ("REQMOD", "req-hdr=0, req-body=0", HEAD + chunks(b"x")),  # offsets equal
        ("REQMOD", f"req-hdr=1, null-body={L}", HEAD),  # first offset not 0
        ("REQMOD", "req-hdr=0", HEAD),  # no body entity last
        ("REQMOD", f"req-body=0, req-hdr={L}", HEAD),  # body entity first
        ("REQMOD", f"req-hdr=0, res-body={L}", HEAD + chunks(b"x")),  # res-body on REQMOD
        ("REQMOD", f"req-hdr=0, opt-body={L}", HEAD + chunks(b"x")),  # opt-body on REQMOD
        ("REQMOD", f"req-hdr=0, res-hdr={L}, null-body={L + 5}", HEAD + b"x" * 5),  # res-hdr on REQMOD
        ("REQMOD", f"req-hdr=0, foo-body={L}", HEAD),  # unknown entity
        ("REQMOD", f"req-hdr=0, req-hdr=10, null-body={L}", HEAD),  # duplicate
        ("REQMOD", f"req-hdr=0, null-body={L}, null-body={L + 1}", HEAD),  # duplicate body
        ("RESPMOD", f"res-hdr=0, req-hdr=20, res-body={L + 20}", HEAD + b"x" * 20),  # wrong order
        ("RESPMOD", f"req-hdr=0, req-body={L}", HEAD + chunks(b"x")),  # req-body on RESPMOD
        ("OPTIONS", f"req-hdr=0, null-body={L}", HEAD),  # no HTTP heads on OPTIONS
        ("OPTIONS", "req-body=0", chunks(b"x")),
        ("REQMOD", f"req-hdr=zero, null-body={L}", HEAD),  # non-numeric
        ("REQMOD", f"req-hdr=0x0, null-body={L}", HEAD),
        ("REQMOD", f"req-hdr=-0, null-body={L}", HEAD),
        ("REQMOD", f"req-hdr=+0, null-body={L}", HEAD),
        ("REQMOD", "req-hdr=\u00b9, null-body=1", HEAD),  # "¹".isdigit() is true, int("¹") is not
        ("REQMOD", f"req-hdr=0, null-body={L}.0", HEAD),
        ("REQMOD", "req-hdr=0, null-body=", HEAD),
        ("REQMOD", f"req-hdr 0, null-body={L}", HEAD),
        ("REQMOD", f"req-hdr=0, null-body={L},", HEAD),  # trailing comma
        ("REQMOD", "", HEAD),
        ("REQMOD", "req-hdr=0, null-body=70000", HEAD),  # beyond max_header_bytes
        ("REQMOD", "req-hdr=0, null-body=999999999", HEAD),
        ("REQMOD", "req-hdr=0, null-body=1234567890", HEAD),
        ("REQMOD", f"req-hdr=0, null-body={L - 2}", HEAD),  # the head is longer than announced
        ("REQMOD", f"req-hdr=0, null-body={L + 2}", HEAD),  # ... or shorter: the section swallows bytes
        ("REQMOD", f"req-hdr=0, null-body={L + len(NEXT)}", HEAD),  # ... even a whole next request
        ("REQMOD", f"req-hdr=0, req-body={L - 1}", HEAD + chunks(b"x")),
        ("REQMOD", f"req-hdr=0, req-body={L + 3}", HEAD + chunks(b"x")),  # swallows the chunk-size line
        ("RESPMOD", f"req-hdr=0, res-hdr={L - 2}, res-body={L + 30}", HEAD + http_response_head()),
    ],
)
def test_bad_encapsulated_is_400(method: str, value: str, rest: bytes) -> None:
    head = f"{method} icap://icap.example/x ICAP/1.0\r\nHost: icap.example\r\nEncapsulated: {value}\r\n\r\n"
    assert error_of(head.encode("latin-1") + rest + NEXT)[0] == 400


def test_two_encapsulated_headers_are_400() -> None:
    data = icap(req_hdr=HEAD, headers=[("Encapsulated", f"req-hdr=0, null-body={L}")])
    assert error_of(data)[0] == 400


@pytest.mark.parametrize("method", ["REQMOD", "RESPMOD"])
def test_missing_encapsulated_is_400(method: str) -> None:
    assert error_of(icap(method, encapsulated=False) + HEAD)[0] == 400


def test_encapsulated_at_the_max_header_bytes_limit_is_accepted() -> None:
    head = http_head(extra=[("X-Pad", "p" * (1000 - L - 9))])
    assert len(head) == 1000
    request = single(run_both(icap(req_hdr=head, headers=[("Allow", "204")]), max_header_bytes=1000))
    assert request.encapsulated.body_offset == 1000
    assert error_of(icap(req_hdr=head), max_header_bytes=999)[0] == 400


# ---- null-body with Preview: 0 ----------------------------------------------------------------------------


def test_null_body_with_preview_0_is_complete_at_once() -> None:
    data = squid_get("http://a.example/") + squid_get("http://b.example/", allow_204=False)
    result = run_both(data)
    first, second = result.requests
    assert first.preview is None and second.preview is None  # nothing follows, whatever Preview says
    assert result.events == [first, EndOfMessage(), second, EndOfMessage(), ConnectionClosed(clean=True)]
    assert first.http_request is not None and first.http_request.target == "http://a.example/"
    assert second.http_request is not None and second.http_request.target == "http://b.example/"
    no_content, echo = result.parsed()
    assert no_content.status == 204
    assert (echo.status, echo.encapsulated) == (200, [("req-hdr", 0), ("null-body", len(second.http_request.raw))])
    assert echo.req_hdr == second.http_request.raw and echo.body is None


def test_null_body_request_does_not_wait_for_more_bytes() -> None:
    conn = ICAPConnection()
    conn.receive_data(squid_get())
    assert isinstance(conn.next_event(), ICAPRequest)
    assert conn.next_event() == EndOfMessage()
    assert conn.next_event() is PAUSED
    assert conn.can_send_204


# ---- chunked bodies ---------------------------------------------------------------------------------------


def body_events(body: bytes) -> list[Item]:
    result = run_both(icap(req_hdr=http_head("POST"), body=body, headers=[("Allow", "204")]))
    assert result.error is None, result.error
    return result.events[1:]


@pytest.mark.parametrize(
    ("body", "data"),
    [
        (chunks(b"hello", b" ", b"world"), b"hello world"),
        (chunks(), b""),
        (b"5;name=value\r\nhello\r\n0\r\n\r\n", b"hello"),
        (b'5; name="quoted;value"\r\nhello\r\n0;x=y\r\n\r\n', b"hello"),
        (b"5 ; a ; b=c\r\nhello\r\n0 \r\n\r\n", b"hello"),
        (
            b"1A\r\n" + b"u" * 26 + b"\r\n1a\r\n" + b"l" * 26 + b"\r\n01a\r\n" + b"z" * 26 + b"\r\n0\r\n\r\n",
            b"u" * 26 + b"l" * 26 + b"z" * 26,
        ),
        (b"Ff\r\n" + b"m" * 255 + b"\r\n0000\r\n\r\n", b"m" * 255),
        (chunks(b"x" * 70_000), b"x" * 70_000),
        (
            chunks(*[bytes([65 + i]) * (i + 1) for i in range(20)]),
            b"".join(bytes([65 + i]) * (i + 1) for i in range(20)),
        ),
    ],
)
def test_chunked_body(body: bytes, data: bytes) -> None:
    expected: list[Item] = [BodyData(data)] if data else []
    assert body_events(body) == [*expected, EndOfMessage(), ConnectionClosed()]


def test_trailers_after_the_zero_chunk() -> None:
    events = body_events(b"3\r\nabc\r\n0\r\nX-Checksum: 900150983cd2\r\nX-Other:  two words \r\n\r\n")
    assert events == [
        BodyData(b"abc"),
        EndOfMessage(trailers=Headers([("X-Checksum", "900150983cd2"), ("X-Other", "two words")])),
        ConnectionClosed(),
    ]


@pytest.mark.parametrize(
    "body",
    [
        b"xyz\r\n",
        b"\r\nhello\r\n0\r\n\r\n",  # empty size
        b"-1\r\n",
        b"0x5\r\nhello\r\n0\r\n\r\n",
        b"5 5\r\nhello\r\n0\r\n\r\n",
        b"+5\r\nhello\r\n0\r\n\r\n",
        b"\xd9\xa5\r\nhello\r\n0\r\n\r\n",  # a non-ASCII digit
        b"1" * 17 + b"\r\n",
        b"5;" + b"e" * 2000 + b"\r\n",  # chunk-size line too long
        b"5" + b" " * 1100,  # ... even when its end has not arrived yet
        b"5\r\nhelloXY0\r\n\r\n",  # no CRLF after the data
        b"5\r\nhello\n0\r\n\r\n",
        b"5\r\nhello\r\n0\r\nBad Trailer: x\r\n\r\n",
        b"5\r\nhello\r\n0\r\nX: a\x00b\r\n\r\n",
        b"5; ieof\r\nhello\r\n0\r\n\r\n",  # ieof on a non-zero chunk
        b"5\r\nhello\r\n0; ieof\r\n\r\n",  # ieof without a preview
    ],
)
def test_malformed_chunking_is_400(body: bytes) -> None:
    data = icap(req_hdr=http_head("POST"), body=body)
    assert error_of(data + squid_get())[0] == 400


def test_trailers_larger_than_the_limit_are_400_however_they_arrive() -> None:
    body = b"0\r\nX-Big: " + b"b" * 2000 + b"\r\n\r\n"
    assert error_of(icap(req_hdr=http_head("POST"), body=body), max_header_bytes=1024) == (400, "trailers too large")


# ---- previews ---------------------------------------------------------------------------------------------


def preview_request(
    preview: int, preview_part: bytes, rest: bytes | None = None, *, allow_204: bool = False, ieof: bool = False
) -> bytes:
    """A request with a preview; `rest` (chunked here) is what the client sends after 100 Continue."""
    last = b"0; ieof\r\n\r\n" if ieof else b"0\r\n\r\n"
    headers = [("Preview", str(preview))] + ([("Allow", "204")] if allow_204 else [])
    body = chunks(preview_part, last=last) if preview_part else last
    return icap(req_hdr=http_head("POST"), body=body, headers=headers) + (chunks(rest) if rest is not None else b"")


def test_preview_then_100_continue_then_the_rest() -> None:
    result = run_both(preview_request(4, b"abcd", b"efghij"))
    request = single(result)
    assert request.preview == 4
    assert result.events[1:] == [
        BodyData(b"abcd"),
        EndOfPreview(),
        BodyData(b"efghij"),
        EndOfMessage(),
        ConnectionClosed(),
    ]
    assert result.outputs[0][1] == CONTINUE  # exactly, byte for byte
    cont, echo = result.parsed()
    assert cont.status == 100
    assert (echo.status, echo.body, echo.req_hdr) == (200, b"abcdefghij", http_head("POST"))


def test_preview_0_with_body() -> None:
    result = run_both(preview_request(0, b"", b"the whole body"))
    assert result.events[1:] == [EndOfPreview(), BodyData(b"the whole body"), EndOfMessage(), ConnectionClosed()]
    assert [parsed.status for parsed in result.parsed()] == [100, 200]


@pytest.mark.parametrize("last", [b"0; ieof\r\n\r\n", b"0;ieof\r\n\r\n", b"0 ; IEOF\r\n\r\n"])
@pytest.mark.parametrize("allow_204", [False, True])
def test_preview_ending_with_ieof_is_the_whole_message(last: bytes, allow_204: bool) -> None:
    continue_refused: list[bool] = []

    def no_continue(
        conn: ICAPConnection, request: ICAPRequest, body: bytes, event: EndOfPreview | EndOfMessage
    ) -> bytes:
        if request.preview is not None:
            assert event == EndOfMessage(ieof=True)
            with pytest.raises(LocalProtocolError):
                conn.send_continue()  # never 100 after ieof
            continue_refused.append(True)
        return respond(conn, request, body, event)

    headers = [("Preview", "10")] + ([("Allow", "204")] if allow_204 else [])
    data = icap(req_hdr=http_head("POST"), body=chunks(b"short", last=last), headers=headers) + squid_get()
    result = run_both(data, no_continue)
    assert result.events[1:3] == [BodyData(b"short"), EndOfMessage(ieof=True)]
    assert isinstance(result.events[3], ICAPRequest) and result.events[4:] == [EndOfMessage(), ConnectionClosed()]
    assert continue_refused == [True, True]
    first = result.parsed()[0]
    assert (first.status, first.body) == ((204, None) if allow_204 else (200, b"short"))


def test_preview_carrying_exactly_n_bytes_in_several_chunks() -> None:
    body = chunks(b"ab", b"c") + chunks(b"defg")
    data = icap(req_hdr=http_head("POST"), body=body, headers=[("Preview", "3"), ("Allow", "204")])
    result = run_both(data)
    assert result.events[1:] == [
        BodyData(b"abc"),
        EndOfPreview(),
        BodyData(b"defg"),
        EndOfMessage(),
        ConnectionClosed(),
    ]


@pytest.mark.parametrize(
    ("preview", "body"),
    [
        (3, chunks(b"abcd")),
        (3, chunks(b"ab", b"cd")),
        (0, chunks(b"a")),
        (5, chunks(b"abcde", b"f", last=b"0; ieof\r\n\r\n")),
    ],
)
def test_preview_carrying_more_than_announced_is_400(preview: int, body: bytes) -> None:
    data = icap(req_hdr=http_head("POST"), body=body, headers=[("Preview", str(preview))])
    assert error_of(data)[0] == 400


@pytest.mark.parametrize("value", ["abc", "-1", "1.5", "", "\u00b2", "1234567890", "4, 4"])
def test_malformed_preview_is_400(value: str) -> None:
    data = icap(req_hdr=http_head("POST"), body=chunks(b"abcd"), headers=[("Preview", value)])
    assert error_of(data)[0] == 400


def test_ieof_after_100_continue_is_400() -> None:
    data = preview_request(2, b"ab") + chunks(b"cd", last=b"0; ieof\r\n\r\n")
    assert error_of(data)[0] == 400


def test_answering_within_the_preview_then_the_next_request() -> None:
    """A 204 at EndOfPreview (allowed without Allow: 204); the client sends no more of that body."""
    data = preview_request(4, b"abcd") + squid_get() + preview_request(2, b"xy")
    result = run_both(data, respond_in_preview)
    first, second, third = result.requests
    assert result.events == [
        first,
        BodyData(b"abcd"),
        EndOfPreview(),
        second,
        EndOfMessage(),
        third,
        BodyData(b"xy"),
        EndOfPreview(),
        ConnectionClosed(clean=True),
    ]
    assert [parsed.status for parsed in result.parsed()] == [204, 204, 204]
    assert result.transactions == 3 and result.keep_alive


def test_send_continue_only_when_the_preview_has_ended() -> None:
    conn = ICAPConnection()
    with pytest.raises(LocalProtocolError):
        conn.send_continue()  # no request at all
    conn.receive_data(preview_request(4, b"abcd", b"efgh"))
    assert isinstance(conn.next_event(), ICAPRequest)
    with pytest.raises(LocalProtocolError):
        conn.send_continue()  # the preview has not started
    with pytest.raises(LocalProtocolError):
        conn.send(responses.no_content(TAG))  # nor can anything else be answered yet
    assert conn.next_event() == BodyData(b"abcd")
    with pytest.raises(LocalProtocolError):
        conn.send_continue()  # the preview has not ended
    assert conn.next_event() == EndOfPreview()
    assert conn.next_event() is PAUSED  # nothing more is read until we answer
    assert conn.can_send_204
    assert conn.send_continue() == CONTINUE
    with pytest.raises(LocalProtocolError):
        conn.send_continue()  # only once
    assert not conn.can_send_204  # after 100 Continue, only Allow: 204 would allow it
    assert conn.next_event() == BodyData(b"efgh")
    assert conn.next_event() == EndOfMessage()
    with pytest.raises(LocalProtocolError):
        conn.send_continue()
    with pytest.raises(LocalProtocolError):
        conn.send(responses.no_content(TAG))
    request = conn.request
    assert request is not None
    parse_one(conn.send(responses.unmodified(TAG, request, b"abcdefgh")))


# ---- the 204 rule -----------------------------------------------------------------------------------------


def test_can_send_204_only_with_allow_204_or_at_end_of_preview() -> None:
    conn = ICAPConnection()
    assert not conn.can_send_204
    conn.receive_data(icap(req_hdr=http_head("POST"), body=chunks(b"data")))
    assert isinstance(conn.next_event(), ICAPRequest)
    assert not conn.can_send_204
    assert conn.next_event() == BodyData(b"data")
    assert conn.next_event() == EndOfMessage()
    assert not conn.can_send_204
    with pytest.raises(LocalProtocolError):
        conn.send(responses.no_content(TAG))
    assert conn.phase is Phase.DONE  # the refused 204 changed nothing: a proper answer still goes out
    request = conn.request
    assert request is not None
    assert parse_one(conn.send(responses.unmodified(TAG, request, b"data"))).status == 200


def test_chunked_post_without_allow_204_is_echoed_in_full() -> None:
    head = http_head("POST", "http://upload.example/form", [("Content-Type", "application/octet-stream")])
    body = bytes(range(256)) * 300  # > 64 KiB, every byte value
    data = icap(req_hdr=head, body=chunks(body[:1000], body[1000:50_000], body[50_000:]))
    result = run_both(data)
    (echo,) = result.parsed()
    assert echo.status == 200
    assert echo.encapsulated == [("req-hdr", 0), ("req-body", len(head))]
    assert echo.req_hdr == head and echo.body == body
    # the echoed head re-parses to the same HTTP request
    again = single(run_both(icap(req_hdr=echo.req_hdr, body=chunks(echo.body), headers=[("Allow", "204")])))
    assert again.http_request == single(result).http_request


# ---- block pages and OPTIONS answers ----------------------------------------------------------------------


def test_block_is_icap_200_carrying_http_403() -> None:
    html = "<html><body>已封鎖 blocked</body></html>".encode()
    conn = ICAPConnection()
    conn.receive_data(squid_get("https://mail.example/"))
    assert isinstance(conn.next_event(), ICAPRequest) and conn.next_event() == EndOfMessage()
    response = responses.http_forbidden(TAG, html, "text/html; charset=utf-8", "ab12cd34ef56")
    out = conn.send(response)
    parsed = parse_one(out, "REQMOD")
    assert parsed.status == 200
    assert parsed.res_hdr is not None
    icap_head_end = out.index(b"\r\n\r\n") + 4  # the HTTP head runs from there to its own empty line
    head_length = out.index(b"\r\n\r\n", icap_head_end) + 4 - icap_head_end
    assert parsed.encapsulated == [("res-hdr", 0), ("res-body", head_length)]
    assert len(parsed.res_hdr) == head_length
    assert parsed.res_hdr.startswith(b"HTTP/1.1 403 Forbidden\r\n")
    http_fields = dict(line.split(": ", 1) for line in parsed.res_hdr[:-4].decode().split("\r\n")[1:])
    assert http_fields["Content-Length"] == str(len(html)) and len(html) != len(html.decode())
    assert http_fields["Content-Type"] == "text/html; charset=utf-8"
    assert http_fields["X-Clearance-Reference"] == "ab12cd34ef56"
    assert parsed.body == html
    assert conn.keep_alive


def test_options_answer() -> None:
    conn = ICAPConnection()
    conn.receive_data(options_request())
    assert isinstance(conn.next_event(), ICAPRequest) and conn.next_event() == EndOfMessage()
    out = conn.send(responses.options(TAG, "REQMOD", 25, 600))
    parsed = parse_one(out, "OPTIONS")
    assert parsed.status == 200
    assert parsed.get("Methods") == "REQMOD"
    assert parsed.get("Service")
    assert parsed.get("ISTag") == TAG and TAG.startswith('"') and TAG.endswith('"')
    assert parsed.get("Encapsulated") == "null-body=0"
    assert parsed.get("Max-Connections") == "25"
    assert parsed.get("Options-TTL") == "600"
    assert "204" in parsed.tokens("Allow")
    assert parsed.get("Preview") == "0"
    assert parsed.get("Transfer-Preview") == "*"
    assert parsed.get("Date")
    assert parsed.get("Transfer-Ignore") is None
    assert parsed.body is None and out.endswith(b"\r\n\r\n") and out.count(b"\r\n\r\n") == 1
    assert conn.keep_alive


# ---- persistent connections -------------------------------------------------------------------------------


def test_many_transactions_with_state_reset_between_them() -> None:
    post = http_head("POST")
    data = (
        preview_request(2, b"ab", b"cdef")  # preview, continued
        + squid_get()  # null-body with Preview: 0
        + icap(req_hdr=post, body=chunks(b"0123456789"))  # no preview: 10 bytes must not count against 2
        + preview_request(10, b"tiny", ieof=True, allow_204=True)  # ieof
        + icap(req_hdr=post, body=chunks(b"after ieof"), headers=[("Allow", "204")])  # ieof is not sticky
        + options_request()
        + icap("RESPMOD", req_hdr=http_head(), res_hdr=http_response_head(), body=chunks(b"resp"))
        + b"\r\n\r\n"  # stray empty lines between messages are tolerated
        + squid_get(allow_204=False)
    )
    result = run_both(data)
    methods = [request.method for request in result.requests]
    assert methods == ["REQMOD"] * 5 + ["OPTIONS", "RESPMOD", "REQMOD"]
    assert [request.preview for request in result.requests] == [2, None, None, 10, None, None, None, None]
    ends = [event for event in result.events if isinstance(event, EndOfMessage | EndOfPreview)]
    assert ends == [
        EndOfPreview(),
        EndOfMessage(),
        EndOfMessage(),
        EndOfMessage(),
        EndOfMessage(ieof=True),
        EndOfMessage(),
        EndOfMessage(),
        EndOfMessage(),
        EndOfMessage(),
    ]
    bodies = [event.data for event in result.events if isinstance(event, BodyData)]
    assert bodies == [b"ab", b"cdef", b"0123456789", b"tiny", b"after ieof", b"resp"]
    statuses = [parsed.status for parsed in result.parsed()]
    assert statuses == [100, 200, 204, 200, 204, 204, 200, 200, 200]
    assert result.transactions == 8 and result.keep_alive and result.end == "closed"


def test_state_is_reset_after_each_answer() -> None:
    conn = ICAPConnection()
    conn.receive_data(preview_request(2, b"ab", b"cd", allow_204=True))
    events = [conn.next_event() for _ in range(3)]
    assert events[1:] == [BodyData(b"ab"), EndOfPreview()]
    assert parse_one(conn.send(responses.no_content(TAG))).status == 204
    assert conn.phase is Phase.HEAD and conn.request is None and not conn.can_send_204
    assert conn.transactions == 1


@pytest.mark.parametrize("value", ["close", "Close", "keep-alive, close", "CLOSE , te"])
def test_connection_close_is_honoured(value: str) -> None:
    data = icap(req_hdr=http_head(), headers=[("Connection", value), ("Allow", "204")]) + squid_get()
    result = run_both(data)
    assert len(result.requests) == 1  # the next request is never read
    assert result.end == "paused" and not result.keep_alive
    (parsed,) = result.parsed()
    assert parsed.status == 204 and parsed.tokens("Connection") == {"close"}


def test_keep_alive_answer_has_no_connection_close() -> None:
    result = run_both(icap(req_hdr=http_head(), headers=[("Connection", "closed")]))
    (parsed,) = result.parsed()
    assert parsed.get("Connection") is None and result.keep_alive


def test_client_closing_before_the_answer_gets_connection_close() -> None:
    conn = ICAPConnection()
    conn.receive_data(squid_get())
    conn.receive_data(b"")
    assert isinstance(conn.next_event(), ICAPRequest) and conn.next_event() == EndOfMessage()
    assert conn.next_event() is PAUSED
    parsed = parse_one(conn.send(responses.no_content(TAG)))
    assert parsed.tokens("Connection") == {"close"} and not conn.keep_alive
    assert conn.next_event() is PAUSED
    with pytest.raises(LocalProtocolError):
        conn.send(responses.no_content(TAG))
    with pytest.raises(LocalProtocolError):
        conn.send_error(responses.error(TAG, 500))
    with pytest.raises(LocalProtocolError):
        conn.receive_data(b"more")


# ---- errors -----------------------------------------------------------------------------------------------


def raw_request(request_line: bytes, *header_lines: bytes) -> bytes:
    lines = [request_line, *header_lines, b"Encapsulated: req-hdr=0, null-body=%d" % L]
    return b"\r\n".join(lines) + b"\r\n\r\n" + HEAD


HOST = b"Host: icap.example"


@pytest.mark.parametrize(
    ("data", "status"),
    [
        (raw_request(b"REQMOD icap://icap.example/reqmod", HOST), 400),
        (raw_request(b"REQMOD  icap://icap.example/reqmod ICAP/1.0", HOST), 400),
        (raw_request(b"REQMOD icap://icap.example/reqmod ICAP/1.0 ", HOST), 400),
        (raw_request(b"REQ(MOD icap://icap.example/reqmod ICAP/1.0", HOST), 400),
        (raw_request(b"REQMOD icap://icap.example/req\tmod ICAP/1.0", HOST), 400),  # urlsplit would drop \t
        (raw_request(b"REQMOD icap://icap.example/req\nmod ICAP/1.0", HOST), 400),  # ... and \n
        (raw_request(b"REQMOD icap://icap.example/reqmod ICAP/1.0\n", HOST), 400),
        (raw_request(b"REQMOD\n icap://icap.example/reqmod ICAP/1.0", HOST), 400),
        (raw_request(b"REQMOD http://icap.example/reqmod ICAP/1.0", HOST), 400),  # bad scheme
        (raw_request(b"REQMOD /reqmod ICAP/1.0", HOST), 400),
        (raw_request(b"REQMOD icap:///reqmod ICAP/1.0", HOST), 400),  # no host
        (raw_request(b"REQMOD icap://icap.example:99999/reqmod ICAP/1.0", HOST), 400),
        (raw_request(b"REQMOD icap://icap.example:port/reqmod ICAP/1.0", HOST), 400),
        (raw_request(b"REQMOD icap://icap.example/reqmod HTTP/1.0", HOST), 400),
        (raw_request(b"REQMOD icap://icap.example/reqmod icap/1.0", HOST), 400),
        (raw_request(b"REQMOD icap://icap.example/reqmod ICAP/2.0", HOST), 505),
        (raw_request(b"REQMOD icap://icap.example/reqmod ICAP/1.1", HOST), 505),
        (raw_request(b"FOO icap://icap.example/reqmod ICAP/1.0", HOST), 501),
        (raw_request(b"GET icap://icap.example/reqmod ICAP/1.0", HOST), 501),
        (raw_request(b"reqmod icap://icap.example/reqmod ICAP/1.0", HOST), 501),  # methods are case-sensitive
        (raw_request(b"REQMOD icap://icap.example/reqmod ICAP/1.0"), 400),  # missing Host
        (raw_request(b"REQMOD icap://icap.example/reqmod ICAP/1.0", HOST, b"NoColon"), 400),
        (raw_request(b"REQMOD icap://icap.example/reqmod ICAP/1.0", HOST, b"Bad Name: x"), 400),
        (raw_request(b"REQMOD icap://icap.example/reqmod ICAP/1.0", HOST, b"X-A : x"), 400),
        (raw_request(b"REQMOD icap://icap.example/reqmod ICAP/1.0", HOST, b": x"), 400),
        (raw_request(b"REQMOD icap://icap.example/reqmod ICAP/1.0", HOST, b"X-A: a", b" folded"), 400),
        (raw_request(b"REQMOD icap://icap.example/reqmod ICAP/1.0", HOST, b"X-A: a\x00b"), 400),
        (raw_request(b"REQMOD icap://icap.example/reqmod ICAP/1.0", b"Host: a\nX-Injected: b"), 400),
        (raw_request(b"REQMOD icap://icap.example/reqmod ICAP/1.0", b"Host: a\rb"), 400),
        (raw_request(b"REQMOD icap://icap.example/reqmod ICAP/1.0", b"Host\n: icap.example"), 400),
    ],
)
def test_malformed_icap_head(data: bytes, status: int) -> None:
    assert error_of(data + squid_get())[0] == status


@pytest.mark.parametrize(
    "http",
    [
        b"GET /\r\nHost: a\r\n\r\n",
        b"GET / HTTP/1.1 x\r\nHost: a\r\n\r\n",
        b"G(ET / HTTP/1.1\r\nHost: a\r\n\r\n",
        b"GET / HTTP/x.y\r\nHost: a\r\n\r\n",
        b"GET / HTTP/1.1\n\r\nHost: a\r\n\r\n",  # "$" would match before that "\n"
        b"GET /a\nb HTTP/1.1\r\nHost: a\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\n folded\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost\n: a\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\nb\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost a\r\n\r\n",
        b"\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\n\r\n\r\n",
    ],
)
def test_malformed_encapsulated_http_request_head(http: bytes) -> None:
    assert error_of(icap(req_hdr=http) + squid_get())[0] == 400


@pytest.mark.parametrize(
    "http",
    [b"HTTP/1.1 OK\r\n\r\n", b"HTTP/1.1 2000 OK\r\n\r\n", b"HTTX/1.1 200 OK\r\n\r\n", b"HTTP/1.1 200 OK\r\nX\r\n\r\n"],
)
def test_malformed_encapsulated_http_response_head(http: bytes) -> None:
    assert error_of(icap("RESPMOD", req_hdr=http_head(), res_hdr=http, body=chunks(b"x")))[0] == 400


def test_oversized_icap_head_is_400() -> None:
    assert error_of(icap(req_hdr=HEAD, headers=[("X-Pad", "p" * 5000)]), max_header_bytes=4096)[0] == 400
    assert error_of(b"REQMOD icap://h/reqmod ICAP/1.0\r\nX: " + b"p" * 5000, max_header_bytes=4096)[0] == 400


def test_icap_head_at_the_limit_is_accepted() -> None:
    base = icap(req_hdr=HEAD, headers=[("X-Pad", "")])
    head_length = base.index(b"\r\n\r\n") + 4
    padded = icap(req_hdr=HEAD, headers=[("X-Pad", "p" * (1000 - head_length))])
    assert padded.index(b"\r\n\r\n") + 4 == 1000
    assert single(run_both(padded, max_header_bytes=1000)).headers.get("X-Pad") == "p" * (1000 - head_length)
    assert error_of(padded, max_header_bytes=999)[0] == 400


def test_next_event_after_a_remote_error_is_a_local_error() -> None:
    conn = ICAPConnection()
    conn.receive_data(b"BROKEN\r\n\r\n")
    with pytest.raises(RemoteProtocolError) as info:
        conn.next_event()
    assert info.value.status == 400 and "BROKEN" in repr(info.value)
    assert not conn.keep_alive
    for _ in range(2):
        with pytest.raises(LocalProtocolError):
            conn.next_event()
    check_error_response(conn.send_error(responses.error(TAG, info.value.status)), 400)
    with pytest.raises(LocalProtocolError):
        conn.send_error(responses.error(TAG, 400))


@pytest.mark.parametrize("status", [400, 404, 405, 408, 500, 501, 503, 505])
def test_every_error_response_is_well_formed(status: int) -> None:
    conn = ICAPConnection()
    parsed = check_error_response(conn.send_error(responses.error(TAG, status)), status)
    assert parsed.reason and parsed.reason != "Unknown"
    assert not conn.keep_alive and conn.next_event() is PAUSED


def test_error_in_the_middle_of_a_body() -> None:
    conn = ICAPConnection()
    conn.receive_data(icap(req_hdr=http_head("POST"), body=b"5\r\nhel"))
    assert isinstance(conn.next_event(), ICAPRequest)
    assert conn.next_event() == BodyData(b"hel")
    assert conn.their_message_in_progress
    check_error_response(conn.send_error(responses.error(TAG, 408)), 408)
    assert not conn.keep_alive


@pytest.mark.parametrize(
    ("cut", "expected_events"),
    [
        (b"REQMOD icap://icap.example/reqmod ICAP/1.0\r\nHost: x\r\n", 0),  # inside the ICAP head
        (icap(req_hdr=http_head("POST"), body=b"")[:-10], 0),  # inside the encapsulated HTTP head
        (icap(req_hdr=http_head("POST"), body=b""), 1),  # before the chunk-size line
        (icap(req_hdr=http_head("POST"), body=b"a"), 1),  # inside it
        (icap(req_hdr=http_head("POST"), body=b"a\r\nhel"), 2),  # inside chunk data
        (icap(req_hdr=http_head("POST"), body=b"3\r\nabc"), 2),  # before the CRLF after the data
        (icap(req_hdr=http_head("POST"), body=b"3\r\nabc\r"), 2),
        (icap(req_hdr=http_head("POST"), body=b"3\r\nabc\r\n0\r\n"), 2),  # before the final CRLF
        (icap(req_hdr=http_head("POST"), body=b"3\r\nabc\r\n0\r\nX-T: 1\r\n"), 2),  # inside trailers
        (squid_get() + b"\r", 2),  # a stray CR is the start of something
        (squid_get() + b"OPT", 2),
    ],
)
def test_client_closing_mid_message_is_unclean(cut: bytes, expected_events: int) -> None:
    result = run_both(cut)
    assert result.events[-1] == ConnectionClosed(clean=False)
    assert len(result.events) == expected_events + 1
    assert result.error is None


@pytest.mark.parametrize("data", [b"", squid_get(), squid_get() + b"\r\n", squid_get() * 3 + b"\r\n\r\n"])
def test_client_closing_between_messages_is_clean(data: bytes) -> None:
    result = run_both(data)
    assert result.events[-1] == ConnectionClosed(clean=True)
    assert result.transactions == data.count(b"REQMOD")


def test_their_message_in_progress() -> None:
    conn = ICAPConnection()
    assert not conn.their_message_in_progress
    conn.receive_data(b"\r\n")
    assert not conn.their_message_in_progress
    conn.receive_data(b"RE")
    assert conn.their_message_in_progress
    conn.receive_data(preview_request(2, b"ab", b"cd")[2:])
    assert isinstance(conn.next_event(), ICAPRequest) and conn.their_message_in_progress
    assert conn.next_event() == BodyData(b"ab") and conn.next_event() == EndOfPreview()
    assert not conn.their_message_in_progress  # now it is our turn
    conn.send_continue()
    assert conn.their_message_in_progress


def test_local_misuse_is_refused() -> None:
    conn = ICAPConnection()
    with pytest.raises(LocalProtocolError):
        conn.send(responses.no_content(TAG))  # nothing to answer yet
    conn.receive_data(icap(req_hdr=http_head(), headers=[("Allow", "204")]))
    assert isinstance(conn.next_event(), ICAPRequest) and conn.next_event() == EndOfMessage()
    for bad in [
        Response(100, [("ISTag", TAG)]),  # 100 only through send_continue
        Response(200, [("Date", "x")]),  # no ISTag
        Response(200, [("ISTag", TAG), ("Encapsulated", "null-body=0")]),  # computed, not given
        Response(204, [("ISTag", TAG)], body=b"x"),  # 204 carries nothing
        Response(204, [("ISTag", TAG)], http_request_head=http_head()),
    ]:
        with pytest.raises(LocalProtocolError):
            conn.send(bad)
    assert conn.phase is Phase.DONE
    parse_one(conn.send(responses.no_content(TAG)))


def test_events_compare_by_value() -> None:
    assert EndOfMessage() == EndOfMessage()
    assert Headers([("A", "1")]) == Headers([("A", "1")]) != Headers([("a", "1")])
    assert hash(EndOfMessage(trailers=Headers([("A", "1")]))) == hash(EndOfMessage(trailers=Headers([("A", "1")])))
    first, second = (single(drive([squid_get()])) for _ in range(2))
    assert first == second and first is not second


# ---- routing (Application) ---------------------------------------------------------------------------------


NOW = datetime(2026, 1, 1, tzinfo=UTC)


class VersionOnlyPolicy:
    """A policy source whose version is known but whose state must not be needed (routing, OPTIONS)."""

    def __init__(self) -> None:
        self.state_reads = 0

    @property
    def version(self) -> int:
        return 7

    @property
    def state(self) -> PolicyState:
        self.state_reads += 1
        raise AssertionError("routing and OPTIONS must not need the policy state")


@pytest.mark.parametrize(
    ("data", "status"),
    [
        (icap(uri="icap://icap.example/unknown", req_hdr=HEAD, headers=[("Allow", "204")]), 404),
        (icap("OPTIONS", "icap://icap.example/nope", encapsulated=False), 404),
        (icap("RESPMOD", "icap://icap.example/reqmod", res_hdr=http_response_head(), body=chunks(b"x")), 405),
        (icap("REQMOD", "icap://icap.example/respmod", req_hdr=HEAD, headers=[("Allow", "204")]), 405),
    ],
)
def test_routing_404_and_405(data: bytes, status: int) -> None:
    assert set(SERVICES) == {"/reqmod", "/respmod"}
    policy = VersionOnlyPolicy()
    app = Application(Config(), policy)
    statuses: list[int] = []

    def route(conn: ICAPConnection, request: ICAPRequest, body: bytes, event: EndOfPreview | EndOfMessage) -> bytes:
        verdict = app.evaluate(request, NOW)
        statuses.append(verdict.status)
        return conn.send(app.respond(request, verdict, conn.can_send_204, body, NOW))

    follow_up = icap(uri="icap://icap.example/other", req_hdr=HEAD)  # the connection carries on after a 404/405
    result = run_both(data + follow_up, route)
    assert statuses == [status, 404] * 2  # once per run
    assert policy.state_reads == 0
    first = result.parsed()[0]
    assert first.status == status and first.get("Encapsulated") == "null-body=0" and first.get("ISTag")
    assert result.keep_alive and result.transactions == 2


def test_routing_options() -> None:
    policy = VersionOnlyPolicy()
    app = Application(Config(), policy)
    conn = ICAPConnection()
    conn.receive_data(options_request())
    request = conn.next_event()
    assert isinstance(request, ICAPRequest) and conn.next_event() == EndOfMessage()
    verdict = app.evaluate(request, NOW)
    assert verdict.status == 0 and policy.state_reads == 0
    parsed = parse_one(conn.send(app.respond(request, verdict, conn.can_send_204, None, NOW)), "OPTIONS")
    assert parsed.get("Methods") == "REQMOD" and parsed.get("ISTag") == '"CL-7"'


# ---- 1,000 mixed transactions on one connection ------------------------------------------------------------


@dataclass
class Planned:
    """One client transaction of the mixed run, and what the server must see and answer."""

    index: int
    data: bytes  # every byte the client sends for it (including what follows 100 Continue)
    method: str
    http: bytes | None
    body: bytes | None  # the original body; None for null-body
    plan: str  # "none" (no preview), "continue", "answer" (204 on the preview), "ieof"
    allow_204: bool
    preview_part: bytes = b""

    @property
    def seen(self) -> bytes:
        """The de-chunked bytes the server receives."""
        return self.preview_part if self.plan == "answer" else self.body or b""

    @property
    def statuses(self) -> list[int]:
        if self.plan == "answer":
            return [204]
        final = 204 if self.allow_204 and self.method != "OPTIONS" else 200
        return [100, final] if self.plan == "continue" else [final]


def random_chunks(rng: random.Random, body: bytes, last: bytes = b"0\r\n\r\n") -> bytes:
    out = bytearray()
    pos = 0
    while pos < len(body):
        size = min(len(body) - pos, rng.choice([1, 7, 100, 1000, 8192, 40_000]))
        size_text = b"%x" % size if rng.random() < 0.5 else b"%X" % size
        extension = rng.choice([b"", b"", b"", b";a=b", b" ; x"])
        out += size_text + extension + b"\r\n" + body[pos : pos + size] + b"\r\n"
        pos += size
    return bytes(out) + last


def random_body(rng: random.Random, index: int) -> bytes:
    size = rng.choice([0, 1, rng.randint(2, 100), rng.randint(100, 6000)])
    if index % 97 == 13:
        size = rng.randint(65_537, 90_000)  # > 64 KiB now and then
    return rng.randbytes(size)


def plan_transactions(rng: random.Random, count: int) -> list[Planned]:
    plans = []
    for index in range(count):
        txn = [("X-Txn", str(index))]
        allow_204 = rng.random() < 0.5
        allow = [("Allow", "204")] if allow_204 else []
        kind = rng.choice(["get", "get", "options", "post", "post", "preview", "preview", "preview"])
        if kind == "get":
            http = http_head("GET", f"http://site{index}.example/p?i={index}")
            data = icap(req_hdr=http, headers=[*txn, ("Preview", "0"), *allow])
            plans.append(Planned(index, data, "REQMOD", http, None, "none", allow_204))
        elif kind == "options":
            choices: list[str | bool] = [False, "null-body=0"]
            encapsulated = rng.choice(choices)
            data = icap("OPTIONS", headers=txn, encapsulated=encapsulated)
            plans.append(Planned(index, data, "OPTIONS", None, None, "none", allow_204))
        else:
            http = http_head("POST", f"http://upload{index}.example/", [("Content-Type", "application/x-test")])
            body = random_body(rng, index)
            if kind == "post":
                data = icap(req_hdr=http, body=random_chunks(rng, body), headers=[*txn, *allow])
                plans.append(Planned(index, data, "REQMOD", http, body, "none", allow_204))
                continue
            preview = rng.choice([0, 1, 10, 1024, 4096])
            headers = [*txn, ("Preview", str(preview)), *allow]
            if len(body) <= preview and rng.random() < 0.7:
                data = icap(req_hdr=http, body=random_chunks(rng, body, b"0; ieof\r\n\r\n"), headers=headers)
                plans.append(Planned(index, data, "REQMOD", http, body, "ieof", allow_204, body))
                continue
            part, rest = body[:preview], body[preview:]
            plan = rng.choice(["continue", "answer"])
            data = icap(req_hdr=http, body=random_chunks(rng, part), headers=headers)
            if plan == "continue":
                data += random_chunks(rng, rest)
            plans.append(Planned(index, data, "REQMOD", http, body, plan, allow_204, part))
    return plans


def random_slices(rng: random.Random, data: bytes) -> list[bytes]:
    pieces = []
    pos = 0
    while pos < len(data):
        size = rng.choice([1, 2, 3, 5, 17, 64, 100, 300, 1500]) if rng.random() < 0.98 else rng.randint(1, 100_000)
        pieces.append(data[pos : pos + size])
        pos += size
    return pieces


def test_one_thousand_mixed_transactions_on_one_connection() -> None:
    rng = random.Random(3507)
    plans = plan_transactions(rng, 1000)
    assert {plan.plan for plan in plans} == {"none", "continue", "answer", "ieof"}
    assert any(plan.body is not None and len(plan.body) > 65536 for plan in plans)
    assert any(plan.body == b"" for plan in plans)
    data = b"".join(plan.data for plan in plans)

    def stress(conn: ICAPConnection, request: ICAPRequest, body: bytes, event: EndOfPreview | EndOfMessage) -> bytes:
        plan = plans[int(request.headers.get("X-Txn") or "-1")]
        if isinstance(event, EndOfPreview):
            assert plan.plan in ("continue", "answer") and body == plan.preview_part
            return conn.send_continue() if plan.plan == "continue" else conn.send(responses.no_content(TAG))
        assert event.ieof == (plan.plan == "ieof")
        return conn.send(answer(conn, request, body))

    whole = drive([data], stress)
    for seed in (1, 2):
        sliced = drive(random_slices(random.Random(seed), data), stress)
        assert sliced.comparable() == whole.comparable()
    assert whole.error is None and whole.end == "closed" and whole.keep_alive
    assert whole.transactions == 1000

    # per transaction: the request as parsed, and the de-chunked bytes between it and the next one
    seen: list[tuple[ICAPRequest, bytes]] = []
    for event in whole.events:
        if isinstance(event, ICAPRequest):
            seen.append((event, b""))
        elif isinstance(event, BodyData):
            seen[-1] = (seen[-1][0], seen[-1][1] + event.data)
    assert len(seen) == 1000
    for plan, (request, body) in zip(plans, seen, strict=True):
        assert request.headers.get("X-Txn") == str(plan.index)
        assert request.method == plan.method
        if plan.http is not None:
            assert request.encapsulated.sections == (("req-hdr", 0, len(plan.http)),)
            assert request.encapsulated.body_offset == len(plan.http)
            assert request.http_request is not None and request.http_request.raw == plan.http
        else:
            assert request.encapsulated.sections == () and request.encapsulated.body_offset == 0
        assert request.encapsulated.body == ("req-body" if plan.body is not None else "null-body")
        assert body == plan.seen

    parsed = parse_stream(whole.output)
    assert [response.status for response in parsed] == [status for plan in plans for status in plan.statuses]
    finals = [response for response in parsed if response.status != 100]
    for plan, response in zip(plans, finals, strict=True):
        if response.status == 200 and plan.method == "REQMOD":
            assert response.req_hdr == plan.http and response.body == plan.body
        if plan.method == "OPTIONS":
            assert response.get("Methods") == "REQMOD" and response.body is None
