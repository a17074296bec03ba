"""The ICAP answers Clearance gives, as protocol Response values (the connection turns them into bytes)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from email.utils import formatdate

from icap_server import __version__
from icap_server.protocol import ICAPRequest, Response, build_http_response_head

SERVER = f"Clearance/{__version__}"


def istag(version: int) -> str:
    """ISTag for a policy version: quoted, at most 32 characters (RFC 3507 4.7), new whenever policy changes."""
    return f'"CL-{version}"'


class _DateCache:
    """`Date` changes once a second; formatting it for every response would be wasted work."""

    def __init__(self) -> None:
        self._second = -1
        self._text = ""

    def now(self) -> str:
        second = int(time.time())
        if second != self._second:
            self._second = second
            self._text = formatdate(second, usegmt=True)
        return self._text


_dates = _DateCache()


def base_headers(tag: str) -> tuple[tuple[str, str], ...]:
    return (("ISTag", tag), ("Date", _dates.now()), ("Server", SERVER))


def options(tag: str, methods: str, max_connections: int, options_ttl: int) -> Response:
    headers = [
        ("Methods", methods),
        ("Service", f"Clearance {__version__} web-content filter"),
        *base_headers(tag),
        ("Max-Connections", str(max_connections)),
        ("Options-TTL", str(options_ttl)),
        ("Allow", "204"),
        ("Preview", "0"),
        ("Transfer-Preview", "*"),
    ]
    return Response(200, tuple(headers))


_no_content: dict[tuple[str, str], Response] = {}


def no_content(tag: str) -> Response:
    """The most common answer by far: the same value for every request in the same second."""
    key = (tag, _dates.now())
    found = _no_content.get(key)
    if found is None:
        _no_content.clear()
        found = _no_content[key] = Response(204, base_headers(tag))
    return found


def unmodified(tag: str, request: ICAPRequest, body: bytes | None) -> Response:
    """Pass a message on unchanged when 204 is not allowed: a 200 echoing it in full."""
    if request.http_response is not None:
        return Response(200, base_headers(tag), http_response_head=request.http_response.raw, body=body)
    assert request.http_request is not None
    return Response(200, base_headers(tag), http_request_head=request.http_request.raw, body=body)


def echo_head(tag: str, request: ICAPRequest) -> Response:
    """The head of an echo whose body is streamed as it arrives (`ICAPConnection.send_head`): a body of any
    size passes through in bounded memory."""
    return unmodified(tag, request, None)


def error(tag: str, status: int) -> Response:
    return Response(status, base_headers(tag))


def http_forbidden(
    tag: str, body: bytes, content_type: str, reference: str, headers: Sequence[tuple[str, str]] = ()
) -> Response:
    """A block: ICAP 200 carrying an HTTP 403 (an ICAP 4xx would make Squid treat the service as failed).

    `headers` adds to the fixed ones, e.g. the page's Content-Security-Policy and Content-Language.
    """
    http_head = build_http_response_head(
        403,
        "Forbidden",
        [
            ("Content-Type", content_type),
            ("Content-Length", str(len(body))),
            ("Cache-Control", "no-store"),
            ("X-Content-Type-Options", "nosniff"),
            ("Referrer-Policy", "no-referrer"),
            *headers,
            ("X-Clearance-Reference", reference),
        ],
    )
    return Response(200, base_headers(tag), http_response_head=http_head, body=body)
