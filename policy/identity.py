"""Who is behind a request, from the headers the proxy adds to the ICAP request.

Squid sends the client address in `X-Client-IP` and the user in `X-Client-Username` (plain, or base64 with
`icap_client_username_encode on`); other proxies send `X-Authenticated-User` as base64 of a URI such as
`WinNT://DOMAIN/user`. Approvals are keyed by the normalised name, so grants and lookups share one spelling.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal, Protocol

UsernameEncoding = Literal["auto", "plain", "base64"]


class HeaderSource(Protocol):
    def get(self, name: str, default: str | None = None) -> str | None: ...


class IdentityRules(Protocol):
    """How the user is read and normalised. The settings (`icap_server.config.IdentityConfig`, with the
    defaults) are the server's; policy names only what it reads. Answers are cached, so rules must be hashable.
    """

    @property
    def username_header(self) -> str: ...
    @property
    def username_encoding(self) -> UsernameEncoding: ...
    @property
    def strip_domain(self) -> bool: ...
    @property
    def lowercase(self) -> bool: ...
    def __hash__(self) -> int: ...


@dataclass(frozen=True, slots=True)
class Identity:
    user: str | None
    client_ip: str | None


def identify(headers: HeaderSource, rules: IdentityRules) -> Identity:
    return identify_values(
        headers.get(rules.username_header), headers.get("X-Authenticated-User"), headers.get("X-Client-IP"), rules
    )


@lru_cache(maxsize=65536)
def identify_values(
    raw_user: str | None, authenticated: str | None, raw_ip: str | None, rules: IdentityRules
) -> Identity:
    """The identity from the three header values it is read from (the quick scan extracts just these).

    The same user at the same address sends many requests: the (immutable) answer is remembered."""
    user: str | None = None
    if raw_user:
        user = decode_username(raw_user, rules.username_encoding)
    if not user and authenticated:
        user = parse_authenticated_user(authenticated)
    return Identity(
        user=normalise_username(user, rules) if user else None,
        client_ip=_client_ip(raw_ip),
    )


def _client_ip(value: str | None) -> str | None:
    if not value:
        return None
    return _parse_ip(value)


@lru_cache(maxsize=65536)
def _parse_ip(value: str) -> str | None:
    try:
        return str(ipaddress.ip_address(value.strip()))
    except ValueError:
        return None


def _b64decode_text(value: str) -> str | None:
    """Strict base64 to printable UTF-8 text, or None when the value is not that."""
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None
    if not decoded or not decoded.isprintable():
        return None
    return decoded


def _utf8(value: str) -> str:
    """Header values arrive decoded as latin-1 (bytes kept 1:1); a name sent as raw UTF-8 becomes text again."""
    try:
        return value.encode("latin-1").decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):
        return value


@lru_cache(maxsize=65536)
def decode_username(value: str, encoding: UsernameEncoding) -> str | None:
    """The username as sent; with `auto`, base64 is taken only when it decodes to printable text."""
    value = _utf8(value.strip())
    if encoding == "plain":
        return value or None
    decoded = _b64decode_text(value)
    if encoding == "base64":
        return decoded
    return decoded if decoded is not None else (value or None)


@lru_cache(maxsize=65536)
def parse_authenticated_user(value: str) -> str | None:
    """`X-Authenticated-User`: base64 of `WinNT://DOMAIN/user`, `LDAP://host/cn=user,...`, `Local://user`."""
    decoded = _b64decode_text(value) or _utf8(value.strip())
    scheme, sep, rest = decoded.partition("://")
    if not sep:
        return decoded or None
    scheme = scheme.lower()
    if scheme == "winnt":
        domain, _, user = rest.rpartition("/")
        return f"{domain}\\{user}" if domain and user else (user or None)
    if scheme == "ldap":
        dn = rest.partition("/")[2] or rest
        first_rdn = dn.split(",", 1)[0]
        _, eq, user = first_rdn.partition("=")
        return user.strip() if eq and user.strip() else None
    return rest.rsplit("/", 1)[-1] or None


@lru_cache(maxsize=65536)
def normalise_username(name: str, rules: IdentityRules) -> str:
    """`DOMAIN\\user` and `user@REALM` reduce to `user` when strip_domain is set; case folds when lowercase."""
    name = name.strip()
    if rules.strip_domain:
        name = name.rpartition("\\")[2]
        name = name.partition("@")[0] if "@" in name else name
    return name.lower() if rules.lowercase else name
