"""Who a head is in the portal: the user Squid authenticated, or a single-use link from their e-mail.

Never the browser's word. (a) Squid in front of the portal adds the proxy-authenticated user in a header
(`portal.identity_header`, default `X-Clearance-User`), after deleting any copy the browser sent:

    acl clearance_portal dstdomain portal.example.gov
    request_header_access X-Clearance-User deny all
    request_header_add X-Clearance-User "%ul" clearance_portal

Squid applies `request_header_access` to the headers it forwards first and adds `request_header_add`'s fields
after, so the only copy left is its own. The portal believes the header only when the TCP peer is one of
`portal.trusted_proxies`; from any other peer it is ignored (and logged), and two copies, even from Squid,
are refused. The name is normalised by the same rules as the ICAP identity (`policy.identity`). (b) A link
in a head's e-mail carries a `policy.tokens.LinkClaim` signed with the portal secret: the head, the item,
the actions it allows and a short expiry (`portal.link_ttl_minutes`); the store records it as used the
first time it acts, so a replay changes nothing.
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Iterable
from urllib.parse import quote

import structlog
from starlette.requests import Request as HTTPRequest

from icap_server.config import Config
from icap_server.portal.security import peer
from policy.identity import normalise_username
from policy.tokens import LinkClaim, sign_link

log = structlog.get_logger("clearance.portal")

WORKSPACE_PAGE = "heads"  # the page a workspace form's CSRF token is bound to; a link's is `link:{nonce}`
FORM_TTL_S = 3600  # a form's CSRF token works this long after the page was shown
UNAUTHENTICATED = ("", "-")  # what Squid's %ul gives for a request without a user


def trusted_peer(address: str | None, trusted_proxies: Iterable[str]) -> bool:
    """Whether the TCP peer is one of the configured proxies (an IPv4-mapped IPv6 address counts as IPv4)."""
    try:
        ip = ipaddress.ip_address((address or "").strip("[]"))
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    networks = (ipaddress.ip_network(item, strict=False) for item in trusted_proxies)
    return any(ip.version == network.version and ip in network for network in networks)


def proxy_user(request: HTTPRequest, config: Config) -> str | None:
    """The user Squid authenticated, from the identity header, believed only from a trusted proxy; else None."""
    name = config.portal.identity_header
    values = request.headers.getlist(name)
    if not values:
        return None
    address = peer(request)
    if not trusted_peer(address, config.portal.trusted_proxies):
        log.warning("heads_identity_ignored", reason="untrusted-peer", peer=address, header=name)
        return None
    if len(values) > 1:
        log.warning("heads_identity_ignored", reason="several-copies", peer=address, header=name)
        return None
    raw = values[0].strip()
    if raw in UNAUTHENTICATED:
        return None
    user = normalise_username(raw, config.identity)
    return user or None


def link_page(claim: LinkClaim) -> str:
    """The page a link's forms are bound to: a form token from one link is no good on another."""
    return f"link:{claim.nonce}"


def link_ttl_s(config: Config) -> int:
    return config.portal.link_ttl_minutes * 60


def action_link(base_url: str, secret: str, head: str, item: str, actions: tuple[str, ...], ttl_s: int) -> str:
    """The address of a single-use link for a head's e-mail: `BASE/heads/link?t=TOKEN`."""
    token = sign_link(LinkClaim(head, item, actions, int(time.time()) + ttl_s), secret)
    return f"{base_url.rstrip('/')}/heads/link?t={quote(token)}"
