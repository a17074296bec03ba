"""A strict, independent reader of ICAP/1.0 responses (RFC 3507), for checking what the server writes.

It shares no code with `icap_server.protocol`: it is written from the grammar, so a mistake in the server's
serializer cannot hide behind the same mistake in the checker.

    ICAP-Response  = Status-Line *( header-field CRLF ) CRLF [ Encapsulated-entities ]
    Status-Line    = "ICAP/1.0" SP 3DIGIT SP Reason-Phrase CRLF
    header-field   = field-name ":" OWS field-value OWS          ; field-name is a token (RFC 9110)
    ISTag          = quoted-string, at most 32 characters between the quotes (section 4.7)
    Encapsulated   = entity "=" offset *( "," OWS entity "=" offset )    ; section 4.4.1

Every response except `100 Continue` must carry ISTag and Encapsulated. The Encapsulated offsets are checked
against the bytes that follow: each header section ends exactly where the next entity starts (and is a complete
HTTP head ending in its only empty line), and a body is chunked and properly terminated. `100` and `204` carry
nothing encapsulated, and (Clearance's rule, stricter than the RFC) neither does any status other than 200.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from itertools import pairwise

TOKEN = rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
STATUS_LINE_RE = re.compile(rb"ICAP/1\.0 ([0-9]{3}) ([\t\x20-\x7e\x80-\xff]*)\r\n")
FIELD_RE = re.compile(rb"(" + TOKEN + rb"):[ \t]*((?:[\x21-\x7e\x80-\xff](?:[ \t]*[\x21-\x7e\x80-\xff])*)?)[ \t]*\Z")
QUOTED_STRING_RE = re.compile(r'"((?:[\t \x21\x23-\x5b\x5d-\x7e\x80-\xff]|\\[\t \x21-\x7e\x80-\xff])*)"\Z')
ENCAPSULATED_ITEM_RE = re.compile(r"(req-hdr|res-hdr|req-body|res-body|null-body|opt-body)=(0|[1-9][0-9]{0,8})\Z")
HTTP_REQUEST_LINE_RE = re.compile(rb"(" + TOKEN + rb") ([\x21-\x7e\x80-\xff]+) HTTP/[0-9]\.[0-9]\Z")
HTTP_STATUS_LINE_RE = re.compile(rb"HTTP/[0-9]\.[0-9] [0-9]{3} [\t\x20-\x7e\x80-\xff]*\Z")
CHUNK_LINE_RE = re.compile(
    rb"([0-9A-Fa-f]{1,16})((?:[ \t]*;[ \t]*" + TOKEN + rb"(?:[ \t]*=[ \t]*(?:" + TOKEN + rb'|"[^"\r\n]*"))?)*)[ \t]*\Z'
)
IMF_FIXDATE_RE = re.compile(
    r"(Mon|Tue|Wed|Thu|Fri|Sat|Sun), [0-9]{2} (Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) [0-9]{4} "
    r"[0-9]{2}:[0-9]{2}:[0-9]{2} GMT\Z"
)
HEADER_SECTIONS = ("req-hdr", "res-hdr")
BODIES = ("req-body", "res-body", "null-body", "opt-body")
SINGLE_FIELDS = ("istag", "encapsulated", "date", "connection", "preview", "options-ttl", "max-connections")


class GrammarError(AssertionError):
    """The bytes are not a well-formed ICAP response."""


@dataclass(frozen=True)
class ICAPResponse:
    status: int
    reason: str
    headers: list[tuple[str, str]]
    encapsulated: list[tuple[str, int]]
    req_hdr: bytes | None  # the encapsulated HTTP request head, exactly as sent
    res_hdr: bytes | None  # the encapsulated HTTP response head, exactly as sent
    body: bytes | None  # the de-chunked body; None for null-body
    raw: bytes

    def get(self, name: str) -> str | None:
        values = [value for field, value in self.headers if field.lower() == name.lower()]
        return ", ".join(values) if values else None

    def tokens(self, name: str) -> set[str]:
        value = self.get(name) or ""
        return {item.strip().lower() for item in value.split(",") if item.strip()}


def _fail(message: str) -> GrammarError:
    return GrammarError(message)


def _field_lines(lines: list[bytes], what: str) -> list[tuple[str, str]]:
    fields = []
    for line in lines:
        match = FIELD_RE.match(line)
        if match is None:
            raise _fail(f"malformed {what} header line {line[:80]!r}")
        fields.append((match.group(1).decode("ascii"), match.group(2).decode("latin-1")))
    return fields


def _http_head(raw: bytes, kind: str) -> None:
    """A complete HTTP head: start line, fields, and exactly one empty line, at the very end."""
    if not raw.endswith(b"\r\n\r\n") or raw.find(b"\r\n\r\n") != len(raw) - 4:
        raise _fail(f"{kind} section does not end exactly at the next Encapsulated offset: {raw[-40:]!r}")
    start, *lines = raw[:-4].split(b"\r\n")
    pattern = HTTP_REQUEST_LINE_RE if kind == "req-hdr" else HTTP_STATUS_LINE_RE
    if not pattern.match(start):
        raise _fail(f"malformed {kind} start line {start[:80]!r}")
    _field_lines(lines, f"encapsulated {kind}")


def _dechunk(data: bytes, start: int) -> tuple[bytes, int]:
    """Read a chunked body from data[start:]; returns (body, offset just past the final CRLF)."""
    body = bytearray()
    pos = start
    while True:
        end = data.find(b"\r\n", pos)
        if end < 0:
            raise _fail("chunked body: chunk-size line not terminated")
        match = CHUNK_LINE_RE.match(data[pos:end])
        if match is None:
            raise _fail(f"chunked body: malformed chunk-size line {data[pos:end][:40]!r}")
        if b"ieof" in match.group(2).lower():
            raise _fail("chunked body: ieof belongs to client previews, never to a response")
        size = int(match.group(1), 16)
        pos = end + 2
        if size == 0:
            break
        if len(data) < pos + size + 2:
            raise _fail("chunked body: truncated chunk data")
        body += data[pos : pos + size]
        pos += size
        if data[pos : pos + 2] != b"\r\n":
            raise _fail("chunked body: chunk data not followed by CRLF")
        pos += 2
    while True:  # trailer fields, then the empty line
        end = data.find(b"\r\n", pos)
        if end < 0:
            raise _fail("chunked body: trailer section not terminated")
        line = data[pos:end]
        pos = end + 2
        if not line:
            return bytes(body), pos
        _field_lines([line], "trailer")


def _encapsulated(value: str, method: str | None) -> list[tuple[str, int]]:
    items: list[tuple[str, int]] = []
    for index, part in enumerate(value.split(",")):
        text = part.lstrip(" \t") if index else part
        match = ENCAPSULATED_ITEM_RE.match(text)
        if match is None:
            raise _fail(f"malformed Encapsulated item {part!r} in {value!r}")
        items.append((match.group(1), int(match.group(2))))
    names = [name for name, _ in items]
    offsets = [offset for _, offset in items]
    if offsets[0] != 0:
        raise _fail(f"Encapsulated must start at offset 0: {value!r}")
    if any(b <= a for a, b in pairwise(offsets)):
        raise _fail(f"Encapsulated offsets must increase strictly: {value!r}")
    *heads, body = names
    if body not in BODIES or any(name not in HEADER_SECTIONS for name in heads):
        raise _fail(f"Encapsulated must be header sections followed by one body entity: {value!r}")
    if len(heads) > 1:
        raise _fail(f"a response encapsulates at most one HTTP head: {value!r}")
    if heads == ["req-hdr"] and body not in ("req-body", "null-body"):
        raise _fail(f"req-hdr must be followed by req-body or null-body: {value!r}")
    if heads == ["res-hdr"] and body not in ("res-body", "null-body"):
        raise _fail(f"res-hdr must be followed by res-body or null-body: {value!r}")
    allowed = {
        "REQMOD": {"req-hdr", "res-hdr", "req-body", "res-body", "null-body"},
        "RESPMOD": {"res-hdr", "res-body", "null-body"},
        "OPTIONS": {"opt-body", "null-body"},
    }
    if method is not None and not set(names) <= allowed[method]:
        raise _fail(f"Encapsulated {value!r} is not a valid {method} response")
    return items


def _check_required_fields(status: int, values: dict[str, str]) -> None:
    """ISTag (a quoted-string of 1 to 32 characters) and Encapsulated on every final response; Date well-formed."""
    istag = values.get("istag")
    if istag is None:
        raise _fail(f"ICAP {status} without ISTag")
    tag = QUOTED_STRING_RE.match(istag)
    if tag is None:
        raise _fail(f"ISTag is not a quoted-string: {istag!r}")
    if not 1 <= len(tag.group(1)) <= 32:
        raise _fail(f"ISTag must hold 1 to 32 characters inside its quotes: {istag!r}")
    if "date" in values and not IMF_FIXDATE_RE.match(values["date"]):
        raise _fail(f"Date is not an IMF-fixdate: {values['date']!r}")
    if "encapsulated" not in values:
        raise _fail(f"ICAP {status} without Encapsulated")


def parse_response(data: bytes, start: int = 0, method: str | None = None) -> tuple[ICAPResponse, int]:
    """Read one response from data[start:]; returns it and the offset just past it. Raises GrammarError."""
    status_match = STATUS_LINE_RE.match(data, start)
    if status_match is None:
        raise _fail(f"malformed ICAP status line {data[start : start + 80]!r}")
    status = int(status_match.group(1))
    if not 100 <= status <= 599:
        raise _fail(f"status {status} out of range")
    head_end = data.find(b"\r\n\r\n", status_match.end() - 2)
    if head_end < 0:
        raise _fail("ICAP header section not terminated by an empty line")
    field_bytes = data[status_match.end() : head_end + 2]
    lines = field_bytes.split(b"\r\n")[:-1] if field_bytes else []
    headers = _field_lines(lines, "ICAP")
    pos = head_end + 4
    counts: dict[str, int] = {}
    for name, _ in headers:
        counts[name.lower()] = counts.get(name.lower(), 0) + 1
    for name in SINGLE_FIELDS:
        if counts.get(name, 0) > 1:
            raise _fail(f"{name} appears {counts[name]} times")
    values = {name.lower(): value for name, value in headers}
    reason = status_match.group(2).decode("latin-1")
    if status == 100:
        if "encapsulated" in values and values["encapsulated"] != "null-body=0":
            raise _fail("100 Continue encapsulates nothing")
        empty = ICAPResponse(status, reason, headers, [("null-body", 0)], None, None, None, data[start:pos])
        return empty, pos
    _check_required_fields(status, values)
    items = _encapsulated(values["encapsulated"], method)
    if status != 200 and items != [("null-body", 0)]:
        raise _fail(f"ICAP {status} must carry Encapsulated: null-body=0, not {values['encapsulated']!r}")
    sections: dict[str, bytes] = {}
    for (name, offset), (_, following) in pairwise(items):
        if len(data) < pos + following:
            raise _fail(f"{name} section truncated")
        sections[name] = data[pos + offset : pos + following]
        _http_head(sections[name], name)
    body_name, body_offset = items[-1]
    body: bytes | None = None
    end = pos + body_offset
    if body_name != "null-body":
        body, end = _dechunk(data, pos + body_offset)
    response = ICAPResponse(
        status=status,
        reason=reason,
        headers=headers,
        encapsulated=items,
        req_hdr=sections.get("req-hdr"),
        res_hdr=sections.get("res-hdr"),
        body=body,
        raw=data[start:end],
    )
    return response, end


def parse_one(data: bytes, method: str | None = None) -> ICAPResponse:
    """Exactly one response, with nothing after it."""
    response, end = parse_response(data, 0, method)
    if end != len(data):
        raise _fail(f"{len(data) - end} bytes after the response: {data[end : end + 40]!r}")
    return response


def parse_stream(data: bytes) -> list[ICAPResponse]:
    """Every response in a connection's output, which must end exactly after the last one."""
    responses = []
    pos = 0
    while pos < len(data):
        response, pos = parse_response(data, pos)
        responses.append(response)
    return responses
