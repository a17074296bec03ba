"""Header blocks shared by ICAP and the HTTP messages it encapsulates.

Names compare case-insensitively but keep their original spelling, because an echoed HTTP request must leave
the proxy exactly as it arrived.
"""

from __future__ import annotations

from collections.abc import Iterator

from ._abnf import FIELD_RE, FORBIDDEN_RE, TOKEN_RE
from .errors import RemoteProtocolError

# Fields per header block (ICAP head, each HTTP head, trailers): within the byte limit, tiny fields could
# still be thousands of dict entries and list items for every request.
MAX_HEADER_FIELDS = 100


class Headers:
    """An ordered, case-insensitive multi-map of header fields."""

    __slots__ = ("_fields", "_index")

    def __init__(self, fields: list[tuple[str, str]] | None = None) -> None:
        self._fields: list[tuple[str, str]] = list(fields) if fields else []
        index: dict[str, list[str]] = {}
        for name, value in self._fields:
            key = name.lower()
            if key in index:
                index[key].append(value)
            else:
                index[key] = [value]
        self._index = index

    def get(self, name: str, default: str | None = None) -> str | None:
        """The field's value; repeated fields are joined with ", " as RFC 9110 allows for list fields."""
        values = self._index.get(name.lower())
        if not values:
            return default
        return values[0] if len(values) == 1 else ", ".join(values)

    def get_all(self, name: str) -> list[str]:
        return list(self._index.get(name.lower(), ()))

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._index

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(self._fields)

    def __len__(self) -> int:
        return len(self._fields)

    def __repr__(self) -> str:
        return f"Headers({self._fields!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Headers):
            return NotImplemented
        return self._fields == other._fields

    def __hash__(self) -> int:
        return hash(tuple(self._fields))

    def tokens(self, name: str) -> frozenset[str]:
        """A comma-separated token list (e.g. `Allow: 204, trailers`), lower-cased."""
        return token_list(self.get(name))


_NO_TOKENS: frozenset[str] = frozenset()
_token_cache: dict[str, frozenset[str]] = {}


def token_list(value: str | None) -> frozenset[str]:
    """A comma-separated token list's items, lower-cased (None: the field is absent). A proxy repeats the
    same few values, so each is split once."""
    if not value:
        return _NO_TOKENS
    found = _token_cache.get(value)
    if found is None:
        found = frozenset(item.strip().lower() for item in value.split(",") if item.strip())
        if len(_token_cache) > 1024:
            _token_cache.clear()
        _token_cache[value] = found
    return found


def parse_header_block(block: bytes, what: str, max_fields: int = MAX_HEADER_FIELDS) -> Headers:
    """Parse header lines joined by CRLF (no final CRLF) into Headers; `what` names the block in errors.

    More than `max_fields` lines is RemoteProtocolError(400), counted before any of them is parsed.
    """
    if not block:
        return Headers()
    lines = block.count(b"\n") + 1
    if lines > max_fields:
        raise RemoteProtocolError(400, f"more than {max_fields} {what} header fields")
    text = block.decode("latin-1") + "\r\n"
    fields = FIELD_RE.findall(text)
    lines = text.count("\r\n")
    if len(fields) == lines and text.count("\n") == lines:
        return Headers([(name, value.rstrip(" \t")) for name, value in fields])
    return parse_header_lines(block.split(b"\r\n"), what)


def parse_header_lines(lines: list[bytes], what: str) -> Headers:
    """Parse `Name: value` lines (without their CRLF) into Headers; `what` names the block in errors."""
    fields: list[tuple[str, str]] = []
    for line in lines:
        if line[:1] in (b" ", b"\t"):
            raise RemoteProtocolError(400, f"obsolete line folding in {what} headers")
        name, colon, value = line.partition(b":")
        if not colon or not TOKEN_RE.match(name):
            shown = line[:60].decode("latin-1")
            raise RemoteProtocolError(400, f"malformed {what} header line: {shown!r}")
        if FORBIDDEN_RE.search(value):
            shown = name[:60].decode("ascii")
            raise RemoteProtocolError(400, f"control character in the value of {what} header {shown!r}")
        fields.append((name.decode("ascii"), value.strip(b" \t").decode("latin-1")))
    return Headers(fields)


def serialize_headers(fields: list[tuple[str, str]] | Headers) -> bytes:
    return b"".join(f"{name}: {value}\r\n".encode("latin-1") for name, value in fields)
