"""Unit tests of the sans-I/O ICAP protocol core: persistent connections and errors.

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
    LocalProtocolError,
    Phase,
    RemoteProtocolError,
    Response,
)
from icap_server.service import responses
from tests.support.icap_driver import (
    HEAD,
    TAG,
    check_error_response,
    chunks,
    drive,
    error_of,
    http_head,
    http_response_head,
    icap,
    options_request,
    preview_request,
    run_both,
    single,
    squid_get,
)
from tests.support.icap_grammar import parse_one

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
    lines = [request_line, *header_lines, b"Encapsulated: req-hdr=0, null-body=%d" % len(HEAD)]
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
        Response(100, (("ISTag", TAG),)),  # 100 only through send_continue
        Response(200, (("Date", "x"),)),  # no ISTag
        Response(200, (("ISTag", TAG), ("Encapsulated", "null-body=0"))),  # computed, not given
        Response(204, (("ISTag", TAG),), body=b"x"),  # 204 carries nothing
        Response(204, (("ISTag", TAG),), http_request_head=http_head()),
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
