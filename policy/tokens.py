"""Access-request tokens: what the block page hands the browser so the portal knows who was blocked.

The portal must not believe a user name the browser sends. The block page is produced by Clearance from the
proxy's authenticated identity, so it carries a short-lived token signed with a server secret that binds the
user, the client address, the category, the host and the catalogue service (if the host is one's) of the
blocked request. The portal accepts a request for access only with a valid, unexpired token, and takes the
identity from the token, never from a form field.

Format: `base64url(json payload) . base64url(HMAC-SHA256(secret, payload))`.

The heads' workspace signs two more things with the same secret, each under a key of its own derived from it
(so one kind can never pass for another): the single-use links in a head's e-mail (`LinkClaim`: the head, the
item, the actions it allows, an expiry; the portal records its nonce as used) and its forms' CSRF tokens
(`form_token`: the head and the page, an expiry).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass, replace
from datetime import UTC, datetime

import orjson


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


@dataclass(frozen=True, slots=True)
class LinkClaim:
    """A link in a head's e-mail: who may act through it, on which item (Q… or A…), with which actions, until when."""

    head: str
    item: str
    actions: tuple[str, ...]
    expires_at: int  # Unix seconds
    nonce: str = ""  # what the store records once the link has been used


LINK_PURPOSE = b"clearance heads link"
FORM_PURPOSE = b"clearance heads form"
CONTINUE_PURPOSE = b"clearance caution continue"


@dataclass(frozen=True, slots=True)
class ContinueClaim:
    """A caution page's "continue": this person, from this address, going on to this service (or host), once
    the portal has checked that the mode is still caution; `url` is where the browser goes back to."""

    user: str
    client_ip: str | None
    category: str
    service: str  # the catalogue service, "" when the host is none's
    host: str
    url: str
    expires_at: int  # Unix seconds: the page's token, not the grace
    nonce: str = ""


def _purpose_key(secret: str, purpose: bytes) -> bytes:
    """A key of its own for each kind of token, derived from the one secret."""
    return hmac.new(secret.encode(), purpose, hashlib.sha256).digest()


def _split(token: str) -> tuple[bytes, bytes]:
    try:
        payload_text, mac_text = token.strip().split(".")
        return _unb64(payload_text), _unb64(mac_text)
    except (ValueError, UnicodeEncodeError):
        raise TokenError("malformed token") from None


def _payload(claim: RequestClaim | LinkClaim | ContinueClaim) -> bytes:
    """The claim as compact JSON with sorted keys: one object of its fields, made once per block (orjson: ~1 µs,
    where `asdict` and `json.dumps` took ~20)."""
    fields = {name: getattr(claim, name) for name in claim.__dataclass_fields__}
    return orjson.dumps(fields, option=orjson.OPT_SORT_KEYS)


def _signed(claim: RequestClaim | LinkClaim | ContinueClaim, key: bytes) -> str:
    """`payload.mac`: the claim's compact JSON and its HMAC under `key`."""
    payload = _payload(claim)
    return f"{_b64(payload)}.{_b64(hmac.new(key, payload, hashlib.sha256).digest())}"


def _checked_payload(token: str, key: bytes, what: str) -> bytes:
    """The token's payload once its MAC under `key` matches; TokenError (naming `what`) otherwise."""
    payload, mac = _split(token)
    if not hmac.compare_digest(mac, hmac.new(key, payload, hashlib.sha256).digest()):
        raise TokenError(f"{what} signature does not match: forged, altered or from another server")
    return payload


def sign(claim: RequestClaim, secret: str) -> str:
    if not claim.nonce:
        claim = replace(claim, nonce=secrets.token_urlsafe(8))
    return _signed(claim, secret.encode())


def verify(token: str, secret: str, now: datetime | None = None) -> RequestClaim:
    """The claim inside a token, or TokenError: bad shape, bad signature (forged or another secret), expired."""
    payload = _checked_payload(token, secret.encode(), "token")
    try:
        claim = RequestClaim(**json.loads(payload))
    except (ValueError, TypeError):
        raise TokenError("malformed token payload") from None
    moment = now or datetime.now(UTC)
    if moment.timestamp() >= claim.expires_at:
        raise TokenError("token expired: reload the blocked page and request access again")
    return claim


def sign_link(claim: LinkClaim, secret: str) -> str:
    """A link token (a fresh nonce unless the claim has one), under the links' own key."""
    if not claim.nonce:
        claim = LinkClaim(claim.head, claim.item, claim.actions, claim.expires_at, secrets.token_urlsafe(12))
    return _signed(claim, _purpose_key(secret, LINK_PURPOSE))


def verify_link(token: str, secret: str, now: datetime | None = None) -> LinkClaim:
    """The claim of a link, or TokenError: bad shape, bad signature (forged, altered, or not a link), expired."""
    payload = _checked_payload(token, _purpose_key(secret, LINK_PURPOSE), "link")
    try:
        record = json.loads(payload)
        claim = LinkClaim(**{**record, "actions": tuple(record["actions"])})
    except (ValueError, TypeError, KeyError):
        raise TokenError("malformed link payload") from None
    if not claim.nonce or (now or datetime.now(UTC)).timestamp() >= claim.expires_at:
        raise TokenError("link expired")
    return claim


def form_token(secret: str, head: str, page: str, expires_at: int) -> str:
    """A form's CSRF token: `expires.mac`, the MAC over the head, the page and the expiry."""
    message = f"{head}\n{page}\n{expires_at}".encode()
    return f"{expires_at}.{_b64(hmac.new(_purpose_key(secret, FORM_PURPOSE), message, hashlib.sha256).digest())}"


def form_token_problem(token: str, secret: str, head: str, page: str, now: datetime | None = None) -> str | None:
    """None for a form token made for this head and page and not expired; else why not (missing, forged, expired)."""
    expires_text, _, _mac = token.strip().partition(".")
    if not token or not expires_text.isdigit() or len(expires_text) > 12:
        return "missing"
    expires_at = int(expires_text)
    if not hmac.compare_digest(token.strip().encode(), form_token(secret, head, page, expires_at).encode()):
        return "forged"
    if (now or datetime.now(UTC)).timestamp() >= expires_at:
        return "expired"
    return None


def sign_continue(claim: ContinueClaim, secret: str) -> str:
    """A caution page's continue token, under its own key (a request token can never pass for one)."""
    if not claim.nonce:
        claim = replace(claim, nonce=secrets.token_urlsafe(8))
    return _signed(claim, _purpose_key(secret, CONTINUE_PURPOSE))


def verify_continue(token: str, secret: str, now: datetime | None = None) -> ContinueClaim:
    """The claim of a continue token, or TokenError: bad shape, forged or altered (or another kind), expired."""
    payload = _checked_payload(token, _purpose_key(secret, CONTINUE_PURPOSE), "token")
    try:
        claim = ContinueClaim(**json.loads(payload))
    except (ValueError, TypeError):
        raise TokenError("malformed token payload") from None
    if (now or datetime.now(UTC)).timestamp() >= claim.expires_at:
        raise TokenError("token expired: open the site again")
    return claim
