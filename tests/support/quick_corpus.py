"""Messages for the quick scan's differential tests: Squid's common shapes and their near misses, and a seeded
mutator that keeps most mutations close enough to the common shape for the scan to have to decide.

`reference_values` is what the reference parser (`ICAPConnection`) makes of a message, in the quick scan's
terms: the `QuickRequest` the scan must return whenever it accepts the message.
"""

from __future__ import annotations

import os
import random
import re
from collections.abc import Iterator

import pytest

from icap_server.protocol import ICAPConnection, ICAPRequest, QuickRequest, QuickScan, RemoteProtocolError, quick_scan
from icap_server.protocol._quick import NO_SPEEDUPS
from icap_server.protocol.events import EndOfMessage
from tests.support.icap_driver import chunks, http_head, icap
from tests.support.requirements import in_ci

USER_HEADER = "X-Client-Username"
INTERESTING = b"\x00\t\r\n :;,=/.-_%\x7f\x80\xe9\xff0159AZaz"

TARGETS = [
    ("GET", "http://mail.google.com/mail/u/0/#inbox", "mail.google.com"),
    ("GET", "http://www.example.com/", "www.example.com"),
    ("GET", "http://drive.example.gov.hk/files?id=1", None),
    ("GET", "https://outlook.live.com/owa/", "outlook.live.com"),
    ("GET", "http://MAIL.Google.COM./x", "MAIL.Google.COM."),
    ("GET", "http://xn--fiqs8s.example/", "xn--fiqs8s.example"),
    ("GET", "http://10.1.2.3:8080/a", "10.1.2.3:8080"),
    ("GET", "http://[2001:db8::1]/", "[2001:db8::1]"),
    ("GET", "/relative/path", "mail.proton.me"),
    ("GET", "/no-host-header", None),
    ("HEAD", "http://web.whatsapp.com/", "web.whatsapp.com"),
    ("CONNECT", "web.wechat.com:443", "web.wechat.com:443"),
    ("CONNECT", "mail.google.com:443", None),
    ("GET", "http://docs.google.com/document/d/1", "docs.google.com"),
    ("GET", "http://www.google.com/search?q=x", "www.google.com"),
    ("GET", "http://banned.example/", "banned.example"),
    ("GET", "http://a\xe9.example/", "a\xe9.example"),
    ("POST", "http://mail.google.com/upload", "mail.google.com"),
]
IDENTITIES: list[list[tuple[str, str]]] = [
    [("X-Client-IP", "10.0.0.1"), (USER_HEADER, "alice")],
    [("X-Client-IP", "10.9.1.1"), (USER_HEADER, "bob")],
    [("X-Client-IP", "10.0.0.2"), ("X-Authenticated-User", "V2luTlQ6Ly9DT1JQL2JvYg==")],
    [("X-Client-IP", "2001:db8::7")],
    [(USER_HEADER, "Carol@CORP.EXAMPLE")],
    [],
]
EXTRAS: list[list[tuple[str, str]]] = [
    [("Allow", "204"), ("Preview", "0")],
    [("Allow", "204, trailers")],
    [("Allow", "trailers")],
    [],
    [("Preview", "0"), ("Allow", "204"), ("X-Note", "  spaced\tvalue  ")],
    [("Allow", "204"), ("Date", "Wed, 02 Dec 2026 05:00:00 GMT"), ("X-Empty", "")],
]
HTTP_EXTRAS: list[list[str]] = [
    ["User-Agent: Mozilla/5.0 (X11; Linux x86_64)", "Accept: */*"],
    ["Accept: application/json", "Accept-Language: zh-TW,zh;q=0.9"],
    ["Accept: text/plain", "Accept-Language: en-GB", "Cookie: a=b; c=d"],
    ["Accept-Language: zh-HK", "X-Odd: caf\xe9"],
    [],
]


def built_c_scan() -> QuickScan | None:
    """The C quick scan, or None: hidden on purpose by CLEARANCE_NO_SPEEDUPS (`make test`'s second pass), or not
    built on a machine without a compiler. With CI=true, where `make venv` builds it, not built is a failure."""
    chosen = quick_scan(USER_HEADER)
    if chosen.name == "c":
        return chosen
    if in_ci() and not os.environ.get(NO_SPEEDUPS):
        pytest.fail("the C quick scan (icap_server/protocol/_speedups.c) is not built")
    return None


def common_message(rng: random.Random) -> bytes:
    """One message of the common shape (or nearly: a POST, an origin-form target without Host)."""
    method, target, host = rng.choice(TARGETS)
    extra = rng.choice(HTTP_EXTRAS)
    lines = ([f"Host: {host}"] if host is not None else []) + extra
    head = "\r\n".join([f"{method} {target} HTTP/1.1", *lines]) + "\r\n\r\n"
    headers = rng.choice(IDENTITIES) + rng.choice(EXTRAS)
    rng.shuffle(headers)
    return icap(req_hdr=head.encode("latin-1"), headers=headers)


def seed_messages() -> list[bytes]:
    """The fixed corpus: every combination above that matters, the OPTIONS forms, and messages the scan must
    leave to the reference parser (bodies, previews, RESPMOD, `Connection: close`, repeated fields)."""
    messages = []
    for method, target, host in TARGETS:
        lines = [f"Host: {host}"] if host is not None else []
        for number, identity in enumerate(IDENTITIES):
            extra = EXTRAS[number % len(EXTRAS)]
            http = "\r\n".join([f"{method} {target} HTTP/1.1", *lines, *HTTP_EXTRAS[number % len(HTTP_EXTRAS)]])
            messages.append(icap(req_hdr=(http + "\r\n\r\n").encode("latin-1"), headers=identity + extra))
    get = http_head("GET", "http://mail.google.com/")
    messages += [
        icap("OPTIONS", encapsulated=False),
        icap("OPTIONS", encapsulated="null-body=0"),
        icap("OPTIONS", "icap://127.0.0.1:1344/respmod", encapsulated=False),
        icap("OPTIONS", "icaps://127.0.0.1:11344/reqmod", encapsulated=False),
        icap(req_hdr=http_head("GET", "http://mail.google.com/"), uri="icaps://127.0.0.1:11344/reqmod"),
        icap(req_hdr=get, uri="icap://127.0.0.1:1344/nosuch"),  # read; the service answers 404
        icap("REQMOD", "icap://127.0.0.1:1344/respmod", req_hdr=get),  # read; 405
    ]
    return messages + near_misses()


def near_misses() -> list[bytes]:
    """Messages the reference parser reads (or refuses) that the quick scan must leave to it."""
    get = http_head("GET", "http://mail.google.com/")
    return [
        icap(req_hdr=get, headers=[("Connection", "close"), ("Allow", "204")]),
        icap(req_hdr=get, headers=[("X-Client-IP", "10.0.0.1"), ("X-Client-IP", "10.0.0.2")]),
        icap(req_hdr=get, body=chunks(b"hello"), headers=[("Allow", "204")]),
        icap(req_hdr=get, body=chunks(b"hi", last=b"0; ieof\r\n\r\n"), headers=[("Preview", "2")]),
        icap("RESPMOD", "icap://127.0.0.1:1344/respmod", req_hdr=get, res_hdr=b"HTTP/1.1 200 OK\r\n\r\n"),
        icap(req_hdr=get, uri="icap://127.0.0.1:99999/reqmod"),
        icap(req_hdr=get, uri="icap://127.0.0.1/reqmod?x=1"),
        icap(req_hdr=get, host=None),
        icap(req_hdr=get, encapsulated=f"req-hdr=0,null-body={len(get)}"),
        icap(req_hdr=get, encapsulated=f"REQ-HDR=0, NULL-BODY={len(get)}"),
        icap(req_hdr=get, headers=[("Preview", "x")]),
        icap(req_hdr=http_head("GET", "http://a.example/", [("Host", "b.example")])),
        icap(req_hdr=b"GET http://a.example/ HTTP/1.1\r\nHost: a.example\r\n\r\n\r\n"),
        icap(req_hdr=http_head("POST", "http://mail.google.com/")),
        icap(req_hdr=get) + icap(req_hdr=get),  # two at once (pipelined)
        b"\r\n" + icap(req_hdr=get),
    ]


_NULL_BODY = re.compile(rb"null-body=([0-9]+)")


def _lines(message: bytes) -> list[bytes]:
    return message.split(b"\r\n")


def mutate(rng: random.Random, message: bytes) -> bytes:
    """One small change: a byte set, inserted or deleted, a letter's case, a line repeated or dropped, the
    null-body offset moved, whitespace added, a cut, or bytes after the end."""
    kind = rng.randrange(10)
    position = rng.randrange(len(message)) if message else 0
    byte = bytes([rng.choice(INTERESTING)])
    if kind == 0:
        return message[:position] + byte + message[position + 1 :]
    if kind == 1:
        return message[:position] + byte + message[position:]
    if kind == 2:
        return message[:position] + message[position + 1 :]
    if kind == 3:
        return message[:position] + message[position : position + 1].swapcase() + message[position + 1 :]
    if kind in (4, 5):
        lines = _lines(message)
        if len(lines) < 3:
            return message
        index = rng.randrange(1, len(lines) - 1)
        if kind == 4:
            lines.insert(index, lines[index])
        else:
            del lines[index]
        return b"\r\n".join(lines)
    if kind == 6:
        delta = rng.choice((-2, -1, 1, 2))
        return _NULL_BODY.sub(lambda m: b"null-body=%d" % max(0, int(m[1]) + delta), message, count=1)
    if kind == 7:
        colon = message.find(b":", position)
        return message if colon < 0 else message[: colon + 1] + rng.choice((b" ", b"\t", b"  ")) + message[colon + 1 :]
    if kind == 8:
        return message[:position]
    return message + rng.choice((b"\r\n", b"x", message))


def mutations(seed: int, count: int) -> Iterator[bytes]:
    """`count` mutated messages (one or two mutations each) from the seeds and fresh common messages."""
    rng = random.Random(seed)
    seeds = seed_messages()
    for _ in range(count):
        message = rng.choice(seeds) if rng.random() < 0.3 else common_message(rng)
        for _ in range(rng.choice((1, 1, 1, 2))):
            message = mutate(rng, message)
        yield message


def reference_values(data: bytes, max_header_bytes: int = 65536, max_fields: int = 100) -> QuickRequest | None:
    """What the reference parser reads from `data` as one whole message, in the quick scan's terms; None when
    it refuses it, or `data` is not exactly one message with nothing after it."""
    conn = ICAPConnection(max_header_bytes=max_header_bytes, max_header_fields=max_fields)
    conn.receive_data(data)
    try:
        request = conn.next_event()
        end = conn.next_event()
    except RemoteProtocolError:
        return None
    if not isinstance(request, ICAPRequest) or not isinstance(end, EndOfMessage) or len(conn._buffer):
        return None
    icap_headers, http = request.headers, request.http_request
    http_headers = http.headers if http is not None else None
    return QuickRequest(
        request.method,
        request.service,
        icap_headers.get("Allow"),
        icap_headers.get(USER_HEADER),
        icap_headers.get("X-Authenticated-User"),
        icap_headers.get("X-Client-IP"),
        http.method if http is not None else None,
        http.target if http is not None else None,
        http_headers.get("Host") if http_headers is not None else None,
        http_headers.get("Accept") if http_headers is not None else None,
        http_headers.get("Accept-Language") if http_headers is not None else None,
        len(data) - (len(http.raw) if http is not None else 0),
    )
