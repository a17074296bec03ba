"""The ICAP answers Clearance gives, as protocol Response values (the connection turns them into bytes)."""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from email.utils import formatdate

from icap_server import __version__
from icap_server.protocol import ICAPRequest, Response, build_http_response_head
from policy.decision import Decision
from policy.tenants import Injection

Fields = tuple[tuple[str, str], ...]

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


_decision_fields: dict[tuple[object, ...], Fields] = {}


def decision_fields(decision: Decision | None, reference: str | None) -> Fields:
    """What Clearance decided, as ICAP response headers Squid can log (`%{X-Clearance-Decision}adapt::<last_h`):
    the action, the reason, the category, the catalogue service, the tenant vendor and the roll-out mode when there
    is one, and a
    block's reference (the one on the page and in Clearance's own access log)."""
    if decision is None:
        return ()
    key = (decision.action, decision.reason, decision.category, decision.service, decision.tenant, decision.mode)
    found = _decision_fields.get(key)
    if found is None:
        named = zip(("Decision", "Reason", "Category", "Service", "Tenant", "Mode"), key, strict=True)
        found = tuple((f"X-Clearance-{name}", str(value)) for name, value in named if value is not None)
        if len(_decision_fields) >= 4096:
            _decision_fields.clear()
        _decision_fields[key] = found
    return found if reference is None else (*found, ("X-Clearance-Reference", reference))


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


_no_content: dict[tuple[str, str, Fields], Response] = {}


def no_content(tag: str, fields: Fields = ()) -> Response:
    """The most common answer by far: the same value for every request with the same decision in the same second."""
    key = (tag, _dates.now(), fields)
    found = _no_content.get(key)
    if found is None:
        if len(_no_content) >= 256 or (_no_content and next(iter(_no_content))[1] != key[1]):
            _no_content.clear()
        found = _no_content[key] = Response(204, (*base_headers(tag), *fields))
    return found


def unmodified(tag: str, request: ICAPRequest, body: bytes | None, fields: Fields = ()) -> Response:
    """Pass a message on unchanged when 204 is not allowed: a 200 echoing it in full."""
    if request.http_response is not None:
        headers = (*base_headers(tag), *fields)
        return Response(200, headers, http_response_head=request.http_response.raw, body=body)
    assert request.http_request is not None
    return unmodified_request(tag, request.http_request.raw, body, fields)


def unmodified_request(tag: str, http_head: bytes, body: bytes | None, fields: Fields = ()) -> Response:
    """A REQMOD passed unchanged without 204: its HTTP request head (and body) echoed."""
    return Response(200, (*base_headers(tag), *fields), http_request_head=http_head, body=body)


def echo_head(tag: str, request: ICAPRequest, fields: Fields = ()) -> Response:
    """The head of an echo whose body is streamed as it arrives (`ICAPConnection.send_head`): a body of any
    size passes through in bounded memory."""
    return unmodified(tag, request, None, fields)


def error(tag: str, status: int) -> Response:
    return Response(status, base_headers(tag))


def http_forbidden(
    tag: str,
    body: bytes,
    content_type: str,
    reference: str,
    headers: Sequence[tuple[str, str]] = (),
    fields: Fields = (),
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
    return Response(200, (*base_headers(tag), *fields), http_response_head=http_head, body=body)


def modified_request(
    tag: str, http_head: bytes, injection: Injection, body: bytes | None, fields: Fields = ()
) -> Response:
    """A tenant-restricted pass: ICAP 200 carrying the request with the vendor's headers (RFC 3507 4.8.2).

    Every copy the client sent of any of the vendor's headers goes, whatever its case, then the vendor's
    headers (serialised once per policy, `Injection.lines`) go last. `body` is echoed as it came (None: a
    null body, or one streamed after this head, see `echo_head`).
    """
    head = restricted_head(http_head, injection)
    return Response(200, (*base_headers(tag), *fields), http_request_head=head, body=body)


_strippers: dict[frozenset[str], re.Pattern[bytes]] = {}


def restricted_head(raw: bytes, injection: Injection) -> bytes:
    """The HTTP request head without the client's copies of the vendor's headers, with the vendor's at the end.

    The head was parsed strictly (`name: value` lines, no obs-fold), so each field is one CRLF-led line and a
    case-insensitive search for `CRLF name:` finds every copy; a head with none is one slice and one join.
    """
    stripper = _strippers.get(injection.strip)
    if stripper is None:
        names = b"|".join(re.escape(name.encode("ascii")) for name in sorted(injection.strip))
        stripper = _strippers[injection.strip] = re.compile(rb"\r\n(?:" + names + rb"):[^\r\n]*", re.IGNORECASE)
    head = raw[:-2]  # keeps the CRLF ending the last field line
    if stripper.search(head) is not None:
        head = stripper.sub(b"", head)
    return b"".join((head, injection.lines, b"\r\n"))
