"""The streamed echo of the sans-I/O core: `send_head`, `send_body`, `send_end`, byte by byte, and every misuse.

A pass without `Allow: 204` and without a preview must be echoed; streaming it keeps memory bounded by what
one read delivers, whatever the body's size.
"""

from __future__ import annotations

import pytest

from icap_server.protocol import (
    PAUSED,
    BodyData,
    EndOfMessage,
    ICAPConnection,
    ICAPRequest,
    LocalProtocolError,
    Phase,
    RemoteProtocolError,
    Response,
)
from icap_server.service import responses
from tests.support.icap_driver import TAG, chunks, http_head, icap, preview_request
from tests.support.icap_grammar import parse_one

POST = http_head("POST", "http://upload.example/form", [("Content-Length", "11")])


def streamed(pieces: list[bytes]) -> tuple[bytes, list[object], ICAPConnection]:
    """Feed `pieces`, streaming the echo as the body arrives; the bytes written, the events, the connection."""
    conn = ICAPConnection()
    out: list[bytes] = []
    events: list[object] = []
    feed = iter(pieces)
    while True:
        event = conn.next_event()
        if event is PAUSED:
            break
        if isinstance(event, ICAPRequest):
            out.append(conn.send_head(responses.echo_head(TAG, event)))
        elif isinstance(event, BodyData):
            out.append(conn.send_body(event.data))
        elif isinstance(event, EndOfMessage):
            out.append(conn.send_end())
        else:
            piece = next(feed, None)
            if piece is None:
                events.append(event)
                break
            conn.receive_data(piece)
            continue
        events.append(event)
    return b"".join(out), events, conn


def test_streamed_echo_exact_bytes() -> None:
    message = icap(req_hdr=POST, body=chunks(b"hello", b" world"))
    head_end = message.index(POST)
    output, events, conn = streamed([message[: head_end + len(POST)], message[head_end + len(POST) :]])
    head, _, rest = output.partition(b"\r\n\r\n")
    assert head.startswith(b"ICAP/1.0 200 OK\r\n")
    assert f"Encapsulated: req-hdr=0, req-body={len(POST)}".encode() in head
    assert rest == POST + b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
    parsed = parse_one(output)
    assert parsed.req_hdr == POST and parsed.body == b"hello world"
    assert conn.phase is Phase.HEAD and conn.transactions == 1 and conn.keep_alive
    assert events[1:4] == [BodyData(b"hello"), BodyData(b" world"), EndOfMessage()]


def test_streamed_echo_byte_by_byte_carries_the_same_body() -> None:
    body = bytes(range(256)) * 3
    message = icap(req_hdr=POST, body=chunks(body[:300], body[300:]))
    whole, _, _ = streamed([message])
    bytewise, _, conn = streamed([message[i : i + 1] for i in range(len(message))])
    assert parse_one(whole).body == parse_one(bytewise).body == body
    assert parse_one(bytewise).req_hdr == POST and conn.transactions == 1


def test_streamed_echo_then_the_next_request_and_connection_close() -> None:
    first = icap(req_hdr=POST, body=chunks(b"abc"))
    second = icap(req_hdr=POST, body=chunks(b"xyz"), headers=[("Connection", "close")])
    output, _, conn = streamed([first + second])
    answers = output.split(b"0\r\n\r\n")
    assert parse_one(answers[0] + b"0\r\n\r\n").body == b"abc"
    last = parse_one(answers[1] + b"0\r\n\r\n")
    assert last.body == b"xyz" and last.tokens("Connection") == {"close"}
    assert conn.transactions == 2 and conn.phase is Phase.CLOSING and not conn.keep_alive


def test_streamed_misuse_is_refused() -> None:
    conn = ICAPConnection()
    echo = Response(200, (("ISTag", TAG),), http_request_head=POST)
    with pytest.raises(LocalProtocolError):
        conn.send_head(echo)  # nothing to answer yet
    with pytest.raises(LocalProtocolError):
        conn.send_body(b"x")  # no head sent
    conn.receive_data(icap(req_hdr=POST, body=chunks(b"abc")))
    request = conn.next_event()
    assert isinstance(request, ICAPRequest)
    for bad in [
        Response(204, (("ISTag", TAG),)),  # a 204 has no body to stream
        Response(200, (("ISTag", TAG),)),  # no HTTP head
        Response(200, (("ISTag", TAG),), http_request_head=POST, body=b"abc"),  # the body is streamed, not given
        Response(403, (("ISTag", TAG),), http_request_head=POST),
    ]:
        with pytest.raises(LocalProtocolError):
            conn.send_head(bad)
    assert not conn.streaming
    conn.send_head(echo)
    with pytest.raises(LocalProtocolError):
        conn.send_head(echo)  # only once
    with pytest.raises(LocalProtocolError):
        conn.send_end()  # the client's message is not complete
    assert conn.send_body(b"") == b""  # an empty piece is not the end of the body
    assert conn.next_event() == BodyData(b"abc") and conn.next_event() == EndOfMessage()
    with pytest.raises(LocalProtocolError):
        conn.send(responses.unmodified(TAG, request, b"abc"))  # the answer has begun
    assert conn.send_end() == b"0\r\n\r\n"
    with pytest.raises(LocalProtocolError):
        conn.send_end()


@pytest.mark.parametrize(
    "message",
    [
        icap(req_hdr=http_head(), headers=[("Allow", "204")]),  # null-body: nothing to stream
        preview_request(4, b"abcd", b"efgh"),  # a preview is answered whole, or with 100 Continue
    ],
)
def test_streaming_needs_a_body_and_no_preview(message: bytes) -> None:
    conn = ICAPConnection()
    conn.receive_data(message)
    request = conn.next_event()
    assert isinstance(request, ICAPRequest)
    with pytest.raises(LocalProtocolError):
        conn.send_head(responses.echo_head(TAG, request))


def test_a_broken_body_after_the_head_went_out_means_close_not_an_error_answer() -> None:
    conn = ICAPConnection()
    conn.receive_data(icap(req_hdr=POST, body=b"5\r\nhello\r\nZZ\r\n"))
    request = conn.next_event()
    assert isinstance(request, ICAPRequest)
    conn.send_head(responses.echo_head(TAG, request))
    assert conn.next_event() == BodyData(b"hello")
    with pytest.raises(RemoteProtocolError):
        conn.next_event()
    with pytest.raises(LocalProtocolError):
        conn.send_error(responses.error(TAG, 400))  # an ICAP error cannot follow a 200 head
    assert conn.phase is Phase.CLOSING and not conn.keep_alive
