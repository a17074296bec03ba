"""How block pages reach the portal: its public address, and the secret every ICAP worker signs tokens with.

The secret is `portal.secret`, else one generated once and kept in Redis by whichever process came first, so
every worker and the portal's own process agree on it without talking to each other.
"""

from __future__ import annotations

import asyncio

import structlog

from icap_server.config import Config
from icap_server.service.application import Application, PortalLink
from policy.store import PolicyStore, StoreUnavailable
from policy.tokens import new_secret

log = structlog.get_logger("clearance.portal")


def base_url(config: Config) -> str:
    """How browsers reach the portal: `portal.public_url`, else http://LISTEN."""
    return (config.portal.public_url or f"http://{config.portal.listen}").rstrip("/")


def portal_link(config: Config, secret: str) -> PortalLink:
    return PortalLink(
        base_url=base_url(config),
        secret=secret,
        token_ttl_s=config.portal.token_ttl_minutes * 60,
        max_days=config.approvals.max_validity_days,
    )


async def portal_secret(config: Config, store: PolicyStore) -> str:
    """The token secret: from the config, else the one kept in Redis (made by whichever process came first)."""
    return config.portal.secret or await store.portal_secret(new_secret())


async def wait_for_secret(config: Config, store: PolicyStore) -> str:
    """The secret, retrying while Redis is unavailable (until then block pages carry no request form)."""
    delay = 0.5
    while True:
        try:
            return await portal_secret(config, store)
        except (StoreUnavailable, OSError) as error:
            log.error("portal_secret_unavailable", error=str(error), retry_s=delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 10.0)


async def attach_portal(app: Application, config: Config, store: PolicyStore) -> None:
    """Let this ICAP worker's block pages offer the request form, signed with the shared secret."""
    app.portal = portal_link(config, await wait_for_secret(config, store))
