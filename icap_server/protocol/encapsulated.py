"""The `Encapsulated` header (RFC 3507 section 4.4.1): which HTTP parts follow the ICAP head, and where.

Offsets are the only framing ICAP gives for the encapsulated header sections, so they are checked strictly:
a wrong offset would make us read a body as headers or the next request as this one.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import pairwise

from .errors import RemoteProtocolError

HEADER_SECTIONS = ("req-hdr", "res-hdr")
BODY_SECTIONS = ("req-body", "res-body", "null-body", "opt-body")

# Per method: the header sections allowed (in this order) and the body entities allowed last.
ALLOWED: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "REQMOD": (("req-hdr",), ("req-body", "null-body")),
    "RESPMOD": (("req-hdr", "res-hdr"), ("res-body", "null-body")),
    "OPTIONS": ((), ("opt-body", "null-body")),
}
# Sections a method cannot do without: a REQMOD is about an HTTP request and a RESPMOD about an HTTP response,
# so without that head there is nothing to judge or echo (passing it, or failing with a 500, would both be wrong).
REQUIRED: dict[str, tuple[str, ...]] = {"REQMOD": ("req-hdr",), "RESPMOD": ("res-hdr",)}


@dataclass(frozen=True, slots=True)
class Encapsulated:
    """The parsed header: header sections with their [start, end) byte ranges, and the body entity."""

    sections: tuple[tuple[str, int, int], ...]
    body: str
    body_offset: int

    @property
    def has_body(self) -> bool:
        return self.body != "null-body"

    def __str__(self) -> str:
        items = [f"{name}={start}" for name, start, _ in self.sections]
        items.append(f"{self.body}={self.body_offset}")
        return ", ".join(items)


NULL_BODY = Encapsulated(sections=(), body="null-body", body_offset=0)


_parsed: dict[tuple[str, str], Encapsulated] = {}


def parse_encapsulated(value: str, method: str, max_header_bytes: int) -> Encapsulated:
    """Parse and validate an Encapsulated value for `method`; raise RemoteProtocolError(400) if unusable.

    A proxy repeats the same few values (they differ only in the length of the HTTP head), so valid
    results are remembered; the size limit is checked on every call.
    """
    found = _parsed.get((value, method))
    if found is None:
        found = _parse_encapsulated(value, method)
        if len(_parsed) >= 4096:
            _parsed.clear()
        _parsed[(value, method)] = found
    if found.body_offset > max_header_bytes:
        raise RemoteProtocolError(400, f"encapsulated headers of {found.body_offset} bytes exceed {max_header_bytes}")
    return found


def _parse_encapsulated(value: str, method: str) -> Encapsulated:
    items: list[tuple[str, int]] = []
    for raw in value.split(","):
        name, eq, offset_text = raw.strip().partition("=")
        name = name.strip().lower()
        offset_text = offset_text.strip()
        if not eq or not (offset_text.isascii() and offset_text.isdigit()) or len(offset_text) > 9:
            raise RemoteProtocolError(400, f"malformed Encapsulated item {raw.strip()!r}")
        if name not in HEADER_SECTIONS and name not in BODY_SECTIONS:
            raise RemoteProtocolError(400, f"unknown Encapsulated entity {name!r}")
        items.append((name, int(offset_text)))

    header_allowed, body_allowed = ALLOWED[method]
    *headers, (body_name, body_offset) = items
    if body_name not in body_allowed:
        raise RemoteProtocolError(
            400, f"Encapsulated must end with one of {', '.join(body_allowed)} for {method}, not {body_name}"
        )
    names = [name for name, _ in headers]
    if any(name not in header_allowed for name in names) or names != sorted(set(names), key=header_allowed.index):
        raise RemoteProtocolError(400, f"Encapsulated header sections {names} are not valid for {method}")
    missing = [name for name in REQUIRED.get(method, ()) if name not in names]
    if missing:
        raise RemoteProtocolError(400, f"{method} without an encapsulated {' and '.join(missing)} section")
    offsets = [offset for _, offset in items]
    if offsets[0] != 0:
        raise RemoteProtocolError(400, "the first Encapsulated offset must be 0")
    if any(later <= earlier for earlier, later in pairwise(offsets)):
        raise RemoteProtocolError(400, "Encapsulated offsets must increase strictly")
    sections = tuple((name, start, end) for (name, start), end in zip(headers, offsets[1:], strict=True))
    return Encapsulated(sections=sections, body=body_name, body_offset=body_offset)
