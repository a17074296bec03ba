"""Unit tests of the sans-I/O ICAP protocol core: previews, the 204 rule, block pages and OPTIONS answers.

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
    ICAPConnection,
    ICAPRequest,
    LocalProtocolError,
    Phase,
)
from icap_server.service import responses
from tests.support.icap_driver import (
    CONTINUE,
    TAG,
    chunks,
    error_of,
    http_head,
    icap,
    options_request,
    preview_request,
    respond,
    respond_in_preview,
    run_both,
    single,
    squid_get,
)
from tests.support.icap_grammar import parse_one

# ---- previews ---------------------------------------------------------------------------------------------


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
