"""The portal as a `serve` companion: what `clearance serve` hands the runtime when `portal.listen` is set."""

from __future__ import annotations

import asyncio
import socket

from icap_server.config import Config
from icap_server.portal.links import attach_portal
from icap_server.portal.server import bind_portal, run_portal, run_portal_process
from icap_server.service.application import Application
from policy.store import PolicyStore


class PortalCompanion:
    """Binds the portal's socket first, links every worker's block pages to it, and serves it."""

    name = "portal"

    def __init__(self, config: Config, redis_url: str) -> None:
        assert config.portal.listen is not None
        self.config = config
        self.redis_url = redis_url
        self.address = config.portal.listen
        self._socket: socket.socket | None = None

    def bind(self) -> None:
        self._socket = bind_portal(self.config)

    def reconfigure(self, config: Config) -> None:
        """A reload's settings, from the next run on; the socket stays bound where it is (listen needs a restart)."""
        self.config = config

    @property
    def socket(self) -> socket.socket:
        assert self._socket is not None, "bind() first"
        return self._socket

    async def attach(self, app: Application, store: PolicyStore) -> None:
        await attach_portal(app, self.config, store)

    async def run(self, store: PolicyStore, stop: asyncio.Event) -> None:
        await run_portal(self.config, store, self.socket, stop)

    def run_process(self) -> int:
        return run_portal_process(self.config, self.redis_url, self.socket)
