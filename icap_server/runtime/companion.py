"""A service `serve` runs beside the ICAP workers, without the runtime knowing what it is.

The access-request portal is one: the admin `serve` command hands it in, so the runtime (a lower room) never
imports the portal (a higher one), and the request path cannot come to depend on a web framework.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Protocol

import structlog

from icap_server.config import Config
from icap_server.service.application import Application
from policy.store import PolicyStore

log = structlog.get_logger("clearance")
STOP_WAIT = 10.0  # seconds a companion on the worker's loop may take to drain when stopped or restarted


class Companion(Protocol):
    """What `serve` does with a companion, at each point of a server's life.

    `bind` runs once in the first process, before any worker forks, so an address in use stops the start and
    forked processes inherit the socket. `attach` runs in every ICAP worker (block pages learn where requests
    go). With one worker the companion shares its loop (`run`, until `stop` is set); with several it is a
    process of its own that the supervisor keeps running like a worker (`run_process`, until SIGTERM).
    `reconfigure` hands it the configuration a SIGHUP read; it applies from the next `run` or `run_process`
    on (its bound socket is kept: a new listen address needs a restart).
    """

    @property
    def name(self) -> str: ...

    @property
    def address(self) -> str: ...

    def bind(self) -> None: ...

    def reconfigure(self, config: Config) -> None: ...

    async def attach(self, app: Application, store: PolicyStore) -> None: ...

    async def run(self, store: PolicyStore, stop: asyncio.Event) -> None: ...

    def run_process(self) -> int: ...


class InlineCompanion:
    """A companion on this worker's own loop (one worker): started with it, restarted on reload, stopped last."""

    def __init__(self, companion: Companion, store: PolicyStore) -> None:
        self.companion = companion
        self.store = store
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._stop = asyncio.Event()
        self._task = asyncio.create_task(self.companion.run(self.store, self._stop))
        self._task.add_done_callback(_report_end)

    async def stop(self) -> None:
        """Let it drain what it is doing (up to STOP_WAIT); its socket stays bound, so nothing is refused."""
        self._stop.set()
        if self._task is not None:
            with contextlib.suppress(Exception):  # a failure was logged when it happened
                await asyncio.wait_for(self._task, timeout=STOP_WAIT)

    async def restart(self) -> None:
        await self.stop()
        self.start()


def _report_end(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("portal_failed", error=repr(task.exception()))
