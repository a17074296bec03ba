"""What the portal trusts: its security headers, a verified token from the browser it names, a bounded form.

The portal believes nothing about identity but a block-page token it has verified (policy.tokens), and only
from the computer the token names. These checks answer with the kind of refusal (a key of
`texts.MESSAGES`); the routes turn it into the page, so the reasons and their wording stay in one place each.
"""

from __future__ import annotations

from urllib.parse import parse_qs

import structlog
from starlette.datastructures import MutableHeaders
from starlette.requests import Request as HTTPRequest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from icap_server.runtime.metrics import count_portal_request
from policy.requests import client_address, same_address
from policy.tokens import RequestClaim, TokenError, verify

log = structlog.get_logger("clearance.portal")

MAX_FORM_BYTES = 16 * 1024
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",  # the status page's address carries its key
    "Cache-Control": "no-store",
}


class SecurityHeaders:
    """Add the security headers to every response, the framework's own error answers included."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in SECURITY_HEADERS.items():
                    headers.setdefault(name, value)
                count_portal_request(scope.get("path", ""), int(message.get("status", 0)))
            await send(message)

        await self.app(scope, receive, send_with_headers)


def peer(request: HTTPRequest) -> str | None:
    """The address the connection came from (a proxy's, when one forwards it)."""
    return request.client.host if request.client else None


def check_claim(
    request: HTTPRequest, token: str, secret: str, trusted_proxies: tuple[str, ...], restricted: frozenset[str]
) -> RequestClaim | str:
    """The verified claim, or why it is refused: bad-token, expired, other-computer or not-restricted."""
    try:
        claim = verify(token, secret)
    except TokenError as error:
        kind = "expired" if "expired" in str(error) else "bad-token"  # TokenError's one distinction
        log.warning("request_refused", reason=kind, detail=str(error), peer=peer(request))
        return kind
    address = client_address(peer(request), request.headers.getlist("x-forwarded-for"), trusted_proxies)
    if claim.client_ip and not same_address(address, claim.client_ip):
        log.warning(
            "request_refused",
            reason="other-computer",
            user=claim.user,
            client_ip=address,
            token_client_ip=claim.client_ip,
        )
        return "other-computer"
    if claim.category not in restricted:
        return "not-restricted"
    return claim


async def read_form(request: HTTPRequest) -> dict[str, str] | str:
    """The url-encoded form's fields (the first value of each), or why not: bad-form or too-large."""
    if request.headers.get("content-type", "").split(";")[0].strip().lower() != "application/x-www-form-urlencoded":
        return "bad-form"
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            return "too-large"
    try:
        fields = parse_qs(body.decode("utf-8"), keep_blank_values=True, strict_parsing=False, max_num_fields=20)
    except (UnicodeDecodeError, ValueError):
        return "bad-form"
    return {name: values[0] for name, values in fields.items()}
