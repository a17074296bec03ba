"""The quick scan: Squid's common messages recognised in one pass, only what the decision reads extracted.

Almost every message a Squid sends is the same shape: a REQMOD for a GET, HEAD or CONNECT with
`Encapsulated: req-hdr=0, null-body=N`, all in one read, and now and then an OPTIONS. Parsing those into
general `Headers` objects costs more than judging them, and nearly every header is never read. `scan`
recognises exactly that shape (a strict subset of what the reference parser in `connection.py` accepts) and
returns a `QuickRequest` with the few values the service reads; anything else — a body, odd framing, a
repeated field it reads, any doubt at all — is `None`, and the reference parser reads the message instead,
which alone produces error answers. Whenever `scan` accepts a message, the reference parser accepts it too,
with identical values: `tests/test_quick_scan.py` holds both parsers (and the C twin, `_speedups.c`) to
that over the protocol corpus and a seeded fuzz of mutations.

This module is the pure-Python scan; `scanner()` hands out the C one when it is built and allowed.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

from ._abnf import TCHAR


class QuickRequest(NamedTuple):
    """What the service reads of a message `scan` accepted; header values exactly as `Headers.get` gives them."""

    method: str  # "REQMOD" or "OPTIONS"
    service: str  # the URI's path, "/reqmod"
    allow: str | None  # the Allow header as sent (tokens are read by `Headers`' own rule)
    raw_user: str | None  # the configured username header
    authenticated: str | None  # X-Authenticated-User
    client_ip: str | None  # X-Client-IP
    http_method: str | None  # the encapsulated request's (None for OPTIONS)
    target: str | None
    host: str | None  # the one Host header of the HTTP request, if any
    accept: str | None
    accept_language: str | None
    http_start: int  # where the HTTP request head begins in the message (its end is the message's end)


Scanner = Callable[[bytes, bytes, int, int], "QuickRequest | None"]

_REQUEST_LINE = re.compile(
    rb"(REQMOD|OPTIONS) icaps?://[A-Za-z0-9.\-]+(?::([0-9]{1,5}))?(/[A-Za-z0-9._~/\-]*) ICAP/1\.0"
)
# A whole header block, each line CRLF-ended: `field-name ":" OWS field-value`, no control character but HTAB.
_BLOCK = re.compile(rb"(?:[" + TCHAR.encode() + rb"]+:[^\x00-\x08\x0a-\x1f\x7f]*\r\n)*")
_HTTP_LINE = re.compile(rb"(GET|HEAD|CONNECT) ([\x21-\x7e\x80-\xff]+) HTTP/[0-9]\.[0-9]")
_NULL_BODY = re.compile(rb"req-hdr=0, null-body=([0-9]{1,9})")
_PREVIEW = re.compile(rb"[0-9]{1,9}")

# The ICAP fields read (the configured username header is added to these), and the HTTP ones.
_ICAP_FIELDS = (b"host", b"encapsulated", b"allow", b"preview", b"connection", b"x-authenticated-user", b"x-client-ip")
_HTTP_FIELDS = (b"host", b"accept", b"accept-language")
_patterns: dict[tuple[bytes, ...], re.Pattern[bytes]] = {}


def _fields(block: bytes, wanted: tuple[bytes, ...], max_fields: int) -> dict[bytes, bytes] | None:
    """The wanted fields of a header block (its lines CRLF-ended), by lower-case name; None for a bad line or
    a wanted field twice. One match checks every line; one more finds the wanted ones."""
    if block.count(b"\n") > max_fields or _BLOCK.fullmatch(block) is None:
        return None
    pattern = _patterns.get(wanted)
    if pattern is None:
        names = b"|".join(re.escape(name) for name in wanted)
        pattern = re.compile(rb"^(" + names + rb"):[ \t]*([^\r]*)\r\n", re.MULTILINE | re.IGNORECASE)
        _patterns[wanted] = pattern
    found: dict[bytes, bytes] = {}
    for name, value in pattern.findall(block):
        name = name.lower()
        if name in found:
            return None
        found[name] = value.rstrip(b" \t")
    return found


def _text(value: bytes | None) -> str | None:
    return None if value is None else value.decode("latin-1")


def scan(data: bytes, user_header: bytes, max_header_bytes: int, max_fields: int) -> QuickRequest | None:
    """`data` as one whole common message, or None (see the module). `user_header` is lower-case."""
    end = data.find(b"\r\n\r\n")
    if end < 0 or end + 4 > max_header_bytes:
        return None
    first = data.find(b"\r\n", 0, end)
    line = _REQUEST_LINE.fullmatch(data, 0, first) if first > 0 else None
    if line is None or (line[2] is not None and int(line[2]) > 65535):
        return None
    icap = _fields(data[first + 2 : end + 2], (*_ICAP_FIELDS, user_header), max_fields)
    if icap is None or b"host" not in icap or b"connection" in icap:
        return None
    preview = icap.get(b"preview")
    if preview is not None and _PREVIEW.fullmatch(preview) is None:
        return None
    method = line[1].decode("ascii")
    identity = (_text(icap.get(user_header)), _text(icap.get(b"x-authenticated-user")), _text(icap.get(b"x-client-ip")))
    start = end + 4
    encapsulated = icap.get(b"encapsulated")
    common = (method, line[3].decode("ascii"), _text(icap.get(b"allow")), *identity)
    if method == "OPTIONS":
        if start != len(data) or encapsulated not in (None, b"null-body=0"):
            return None
        return QuickRequest(*common, None, None, None, None, None, start)
    null_body = _NULL_BODY.fullmatch(encapsulated) if encapsulated is not None else None
    if null_body is None:
        return None
    size = int(null_body[1])
    if size > max_header_bytes or len(data) - start != size or data.find(b"\r\n\r\n", start) != len(data) - 4:
        return None
    first = data.find(b"\r\n", start)
    request_line = _HTTP_LINE.fullmatch(data, start, first)
    if request_line is None:
        return None
    http = _fields(data[first + 2 : -2], _HTTP_FIELDS, max_fields)
    if http is None:
        return None
    return QuickRequest(
        *common,
        request_line[1].decode("ascii"),
        request_line[2].decode("latin-1"),
        _text(http.get(b"host")),
        _text(http.get(b"accept")),
        _text(http.get(b"accept-language")),
        start,
    )


# Set to hide the C scan (tests, and `make test`'s second pass): the pure-Python scan answers instead.
NO_SPEEDUPS = "CLEARANCE_NO_SPEEDUPS"


@dataclass(frozen=True, slots=True)
class QuickScan:
    """The scan a connection uses, with the username header it extracts (lower-case) and its name for logs."""

    scan: Scanner
    user_header: bytes
    name: str  # "c" or "python"


def quick_scan(user_header: str) -> QuickScan:
    """The C scan when it is built and not hidden (`CLEARANCE_NO_SPEEDUPS`), else the pure-Python one."""
    header = user_header.lower().encode("latin-1")
    if not os.environ.get(NO_SPEEDUPS):
        try:
            from . import _speedups  # type: ignore[attr-defined]
        except ImportError:
            pass
        else:
            _speedups.set_result_type(QuickRequest)
            return QuickScan(_speedups.scan, header, "c")
    return QuickScan(scan, header, "python")
