"""Unit tests of the sans-I/O ICAP protocol core: request line, Encapsulated, null-body, chunked bodies.

How each scenario is fed (whole and byte by byte, every answer grammar-checked): tests/support/icap_driver.py.
"""

from __future__ import annotations

import pytest

from icap_server.protocol import (
    PAUSED,
    BodyData,
    ConnectionClosed,
    EndOfMessage,
    EndOfPreview,
    Headers,
    ICAPConnection,
    ICAPRequest,
)
from tests.support.icap_driver import (
    HEAD,
    Item,
    chunks,
    error_of,
    http_head,
    http_response_head,
    icap,
    options_request,
    respond,
    run_both,
    single,
    squid_get,
)

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
