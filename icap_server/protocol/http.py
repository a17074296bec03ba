"""The HTTP message heads an ICAP message carries: parsed from their section, and built for block pages."""

from __future__ import annotations

from dataclasses import dataclass

from ._abnf import FORBIDDEN_RE, HTTP_VERSION_RE, TARGET_FORBIDDEN_RE, TOKEN_RE
from .errors import RemoteProtocolError
from .headers import MAX_HEADER_FIELDS, Headers, parse_header_block, serialize_headers


@dataclass(frozen=True, slots=True)
class HTTPRequestHead:
    method: str
    target: str
    version: str
    headers: Headers
    raw: bytes


@dataclass(frozen=True, slots=True)
class HTTPResponseHead:
    version: str
    status: int
    reason: str
    headers: Headers
    raw: bytes


def _split_head(raw: bytes, what: str) -> tuple[bytes, bytes]:
    """The start line, and the header lines joined by CRLF."""
    if not raw.endswith(b"\r\n\r\n"):
        raise RemoteProtocolError(400, f"the {what} section does not end where Encapsulated says it does")
    body = raw[:-4]
    line_end = body.find(b"\r\n")
    start_line, block = (body, b"") if line_end < 0 else (body[:line_end], body[line_end + 2 :])
    if FORBIDDEN_RE.search(start_line):
        raise RemoteProtocolError(400, f"control character inside the {what} start line {start_line[:80]!r}")
    return start_line, block


def parse_http_request_head(raw: bytes, max_fields: int = MAX_HEADER_FIELDS) -> HTTPRequestHead:
    start_line, block = _split_head(raw, "req-hdr")
    parts = start_line.split(b" ")
    if len(parts) != 3 or not TOKEN_RE.match(parts[0]) or not parts[1] or TARGET_FORBIDDEN_RE.search(parts[1]):
        raise RemoteProtocolError(400, f"malformed encapsulated HTTP request line {start_line[:80]!r}")
    version = parts[2].decode("latin-1")
    if not HTTP_VERSION_RE.match(version):
        raise RemoteProtocolError(400, f"unsupported encapsulated HTTP version {version!r}")
    return HTTPRequestHead(
        method=parts[0].decode("ascii"),
        target=parts[1].decode("latin-1"),
        version=version,
        headers=parse_header_block(block, "encapsulated HTTP request", max_fields),
        raw=raw,
    )


def parse_http_response_head(raw: bytes, max_fields: int = MAX_HEADER_FIELDS) -> HTTPResponseHead:
    start_line, block = _split_head(raw, "res-hdr")
    version, _, rest = start_line.partition(b" ")
    status_text, _, reason = rest.partition(b" ")
    if not HTTP_VERSION_RE.match(version.decode("latin-1")) or not (len(status_text) == 3 and status_text.isdigit()):
        raise RemoteProtocolError(400, f"malformed encapsulated HTTP status line {start_line[:80]!r}")
    return HTTPResponseHead(
        version=version.decode("latin-1"),
        status=int(status_text),
        reason=reason.decode("latin-1"),
        headers=parse_header_block(block, "encapsulated HTTP response", max_fields),
        raw=raw,
    )


def build_http_response_head(status: int, reason: str, headers: list[tuple[str, str]]) -> bytes:
    return f"HTTP/1.1 {status} {reason}\r\n".encode("ascii") + serialize_headers(headers) + b"\r\n"
