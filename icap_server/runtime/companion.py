"""A service `serve` runs beside the ICAP workers, without the runtime knowing what it is.

The access-request portal is one: the admin `serve` command hands it in, so the runtime (a lower room) never
imports the portal (a higher one), and the request path cannot come to depend on a web framework.
"""

from __future__ import annotations

import asyncio
from typing import Protocol

from icap_server.service.application import Application
from policy.store import PolicyStore


class Companion(Protocol):
    """What `serve` does with a companion, at each point of a server's life.

    `bind` runs once in the first process, before any worker forks, so an address in use stops the start and
    forked processes inherit the socket. `attach` runs in every ICAP worker (block pages learn where requests
    go). With one worker the companion shares its loop (`run`, until `stop` is set); with several it is a
    process of its own that the supervisor keeps running like a worker (`run_process`, until SIGTERM).
    """

    @property
    def name(self) -> str: ...

    @property
    def address(self) -> str: ...

    def bind(self) -> None: ...

    async def attach(self, app: Application, store: PolicyStore) -> None: ...

    async def run(self, store: PolicyStore, stop: asyncio.Event) -> None: ...

    def run_process(self) -> int: ...
