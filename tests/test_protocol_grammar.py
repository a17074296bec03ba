"""The response checker in tests/support/icap_grammar.py must itself reject what RFC 3507 does not allow."""

from __future__ import annotations

import pytest

from tests.support.icap_grammar import GrammarError, parse_one, parse_stream

HTTP_403 = b"HTTP/1.1 403 Forbidden\r\nContent-Length: 5\r\n\r\n"
GOOD_BLOCK = (
    b'ICAP/1.0 200 OK\r\nISTag: "CL-1"\r\nDate: Thu, 01 Jan 2026 00:00:00 GMT\r\n'
    b"Encapsulated: res-hdr=0, res-body=%d\r\n\r\n" % len(HTTP_403) + HTTP_403 + b"5\r\nnope!\r\n0\r\n\r\n"
)
GOOD_204 = b'ICAP/1.0 204 No Content\r\nISTag: "CL-1"\r\nEncapsulated: null-body=0\r\n\r\n'
GET = b"GET http://a.example/ HTTP/1.1\r\nHost: a.example\r\n\r\n"
GOOD_ECHO = b'ICAP/1.0 200 OK\r\nISTag: "x"\r\nEncapsulated: req-hdr=0, null-body=%d\r\n\r\n' % len(GET) + GET


def test_well_formed_responses() -> None:
    block = parse_one(GOOD_BLOCK, "REQMOD")
    assert (block.status, block.res_hdr, block.body) == (200, HTTP_403, b"nope!")
    assert parse_one(GOOD_204).encapsulated == [("null-body", 0)]
    assert parse_one(GOOD_ECHO).req_hdr == GET
    assert parse_one(b"ICAP/1.0 100 Continue\r\n\r\n").status == 100
    chunked = (
        b'ICAP/1.0 200 OK\r\nISTag: "x"\r\nEncapsulated: req-body=0\r\n\r\n3;e=1\r\nabc\r\n2\r\nde\r\n0\r\nT: 1\r\n\r\n'
    )
    assert parse_one(chunked).body == b"abcde"
    stream = parse_stream(b"ICAP/1.0 100 Continue\r\n\r\n" + GOOD_204 + GOOD_BLOCK)
    assert [response.status for response in stream] == [100, 204, 200]


def replace(data: bytes, old: bytes, new: bytes) -> bytes:
    assert old in data
    return data.replace(old, new, 1)


@pytest.mark.parametrize(
    "data",
    [
        replace(GOOD_204, b"ICAP/1.0 204", b"ICAP/1.1 204"),
        replace(GOOD_204, b"ICAP/1.0 204", b"ICAP/1.0  204"),
        replace(GOOD_204, b"204 No Content\r\n", b"204\r\n"),
        replace(GOOD_204, b"204", b"2040"),
        replace(GOOD_204, b"204", b"099"),
        replace(GOOD_204, b'ISTag: "CL-1"\r\n', b""),  # no ISTag
        replace(GOOD_204, b'"CL-1"', b"CL-1"),  # not quoted
        replace(GOOD_204, b'"CL-1"', b'"' + b"t" * 33 + b'"'),  # more than 32 characters
        replace(GOOD_204, b'"CL-1"', b'""'),
        replace(GOOD_204, b'"CL-1"', b'"a"b"'),
        replace(GOOD_204, b'ISTag: "CL-1"\r\n', b'ISTag: "a"\r\nISTag: "b"\r\n'),
        replace(GOOD_204, b"Encapsulated: null-body=0\r\n", b""),  # no Encapsulated
        replace(GOOD_204, b"null-body=0", b"null-body=1"),
        replace(GOOD_204, b"Encapsulated:", b"Encapsulated :"),
        replace(GOOD_204, b"\r\n\r\n", b"\r\n folded\r\n\r\n"),
        replace(GOOD_204, b"\r\n\r\n", b"\r\nX: a\x01b\r\n\r\n"),
        replace(GOOD_204, b"\r\n\r\n", b"\r\nDate: yesterday\r\n\r\n"),
        replace(GOOD_204, b"\r\n\r\n", b"\n\n"),
        GOOD_204 + b"0\r\n\r\n",  # a body after a 204
        GOOD_204[:-2],
        b"ICAP/1.0 100 Continue\r\nEncapsulated: req-body=0\r\n\r\n0\r\n\r\n",
        replace(GOOD_BLOCK, b"res-body=%d" % len(HTTP_403), b"res-body=%d" % (len(HTTP_403) - 2)),  # short
        replace(GOOD_BLOCK, b"res-body=%d" % len(HTTP_403), b"res-body=%d" % (len(HTTP_403) + 3)),  # long
        replace(GOOD_BLOCK, b"res-hdr=0, res-body", b"res-hdr=0, req-body"),
        replace(GOOD_BLOCK, b"res-hdr=0", b"res-hdr=1"),
        replace(GOOD_BLOCK, b"res-hdr=0, ", b"res-hdr=0,, "),
        replace(GOOD_BLOCK, b"5\r\nnope!\r\n0\r\n\r\n", b"5\r\nnope!\r\n0\r\n"),  # unterminated
        replace(GOOD_BLOCK, b"5\r\nnope!", b"6\r\nnope!"),
        replace(GOOD_BLOCK, b"5\r\nnope!", b"x5\r\nnope!"),
        replace(GOOD_BLOCK, b"\r\n0\r\n\r\n", b"\r\n0; ieof\r\n\r\n"),  # ieof is for client previews
        replace(GOOD_BLOCK, b"HTTP/1.1 403", b"HTTP/1.1 4O3"),
        replace(GOOD_BLOCK, b"Content-Length: 5\r\n", b"\r\nContent-Length:5"),  # empty line inside the head
        replace(GOOD_BLOCK, b"ICAP/1.0 200 OK", b"ICAP/1.0 403 Forbidden"),  # only 200 carries HTTP
        replace(GOOD_ECHO, b"GET http", b"GET\thttp"),
        replace(GOOD_ECHO, b"200 OK", b"204 No Content"),  # 204 encapsulates nothing
        replace(GOOD_ECHO, b"req-hdr=0, null-body", b"req-hdr=0, res-body"),
        GOOD_ECHO + b"x",  # trailing bytes
    ],
)
def test_malformed_responses_are_rejected(data: bytes) -> None:
    with pytest.raises(GrammarError):
        parse_one(data)


@pytest.mark.parametrize(
    ("data", "method"),
    [
        (GOOD_BLOCK, "OPTIONS"),
        (GOOD_ECHO, "RESPMOD"),  # RESPMOD answers carry no req-hdr
        (b'ICAP/1.0 200 OK\r\nISTag: "x"\r\nEncapsulated: opt-body=0\r\n\r\n0\r\n\r\n', "REQMOD"),
    ],
)
def test_encapsulated_must_fit_the_method(data: bytes, method: str) -> None:
    parse_one(data)
    with pytest.raises(GrammarError):
        parse_one(data, method)
