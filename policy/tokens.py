"""Access-request tokens: what the block page hands the browser so the portal knows who was blocked.

The portal must not believe a user name the browser sends. The block page is produced by Clearance from the
proxy's authenticated identity, so it carries a short-lived token signed with a server secret that binds the
user, the client address, the category, the host and the catalogue service (if the host is one's) of the
blocked request. The portal accepts a request for access only with a valid, unexpired token, and takes the
identity from the token, never from a form field.

Format: `base64url(json payload) . base64url(HMAC-SHA256(secret, payload))`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
from dataclasses import asdict, dataclass
from datetime import UTC, datetime


class TokenError(ValueError):
    """A token that is malformed, forged or expired."""


@dataclass(frozen=True, slots=True)
class RequestClaim:
    user: str
    client_ip: str | None
    category: str
    host: str
    expires_at: int  # Unix seconds
    nonce: str = ""
    # The catalogue service of the blocked host, and its names as the block page showed them. A token signed
    # before services existed has none: it stays readable, and its request asks for the category.
    service: str = ""
    service_en: str = ""
    service_zh: str = ""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def new_secret() -> str:
    return secrets.token_urlsafe(32)


def sign(claim: RequestClaim, secret: str) -> str:
    if not claim.nonce:
        claim = RequestClaim(**{**asdict(claim), "nonce": secrets.token_urlsafe(8)})
    payload = json.dumps(asdict(claim), separators=(",", ":"), sort_keys=True, ensure_ascii=False).encode()
    mac = hmac.new(secret.encode(), payload, hashlib.sha256).digest()
    return f"{_b64(payload)}.{_b64(mac)}"


def verify(token: str, secret: str, now: datetime | None = None) -> RequestClaim:
    """The claim inside a token, or TokenError: bad shape, bad signature (forged or another secret), expired."""
    try:
        payload_text, mac_text = token.strip().split(".")
        payload = _unb64(payload_text)
        mac = _unb64(mac_text)
    except (ValueError, UnicodeEncodeError):
        raise TokenError("malformed token") from None
    expected = hmac.new(secret.encode(), payload, hashlib.sha256).digest()
    if not hmac.compare_digest(mac, expected):
        raise TokenError("token signature does not match: forged, altered or from another server")
    try:
        claim = RequestClaim(**json.loads(payload))
    except (ValueError, TypeError):
        raise TokenError("malformed token payload") from None
    moment = now or datetime.now(UTC)
    if moment.timestamp() >= claim.expires_at:
        raise TokenError("token expired: reload the blocked page and request access again")
    return claim
