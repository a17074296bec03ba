"""SIGHUP: the configuration file read and checked again, applied where it can be, the rest named for a restart.

A reload never stops the service. A file that cannot be used (bad YAML, a wrong value, a broken block-page
template) is one `reload_failed` line, and the running configuration stays. Settings that are bound into
running processes (the addresses listened on, how many workers, which Redis, the log set-up) are not changed
by a reload: they are named in one `reload_needs_restart` line and keep their running values. Everything else
takes effect for the next request: a worker builds a new `Application` from the new file (connections take
the one current when they were opened), loads the policy again from the store, and restarts the portal on
its loop if it has one there.
"""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec
import structlog

from icap_server.config import Config, ConfigError, load_config
from icap_server.runtime.companion import Companion, InlineCompanion
from icap_server.service.application import Application
from icap_server.service.exemptions import static_exemptions
from icap_server.service.pages import check_templates
from icap_server.service.sync import PolicySync, protected
from policy.store import PolicyStore, StoreUnavailable

log = structlog.get_logger("clearance")
# Keys a running process cannot change under itself; a whole section where all of it is like that.
RESTART_ONLY = ("server.listen", "server.workers", "redis", "portal.listen", "logging", "metrics")


def _setting(config: Config, key: str) -> Any:
    value: Any = config
    for part in key.split("."):
        value = getattr(value, part)
    return value


def needs_restart(running: Config, fresh: Config) -> list[str]:
    """The restart-only keys whose value in the file differs from the running one."""
    return [key for key in RESTART_ONLY if _setting(running, key) != _setting(fresh, key)]


def keep_running_values(fresh: Config, running: Config) -> Config:
    """The fresh configuration with every restart-only key as it is running."""
    replace = msgspec.structs.replace
    return replace(
        fresh,
        server=replace(fresh.server, listen=running.server.listen, workers=running.server.workers),
        redis=running.redis,
        portal=replace(fresh.portal, listen=running.portal.listen),
        logging=running.logging,
    )


def reread_config(running: Config, announce: bool = True) -> Config | None:
    """The file the running configuration came from, read and checked again; None (logged) if unusable.

    `announce`: log the restart-only keys that changed (a supervisor's worker leaves that to the supervisor).
    """
    path = None if running.source == Config().source else running.source
    try:
        fresh = load_config(path)
        check_templates(fresh)  # a broken block-page template is refused here, not at the first block
    except ConfigError as error:
        log.error("reload_failed", error=str(error), kept=running.source)
        return None
    changed = needs_restart(running, fresh)
    if changed and announce:
        log.warning("reload_needs_restart", keys=changed, hint="restart clearance serve to apply these")
    return keep_running_values(fresh, running)


class WorkerReload:
    """A worker's part of SIGHUP: the Application `serve` hands new connections is replaced by a fresh one."""

    def __init__(
        self,
        sync: PolicySync,
        store: PolicyStore,
        companion: Companion | None,
        inline: InlineCompanion | None,
        supervised: bool,
    ) -> None:
        self.sync = sync
        self.supervised = supervised  # the supervisor has checked the file and said what needs a restart
        self.store = store
        self.companion = companion
        self.inline = inline
        self._linking: asyncio.Task[None] | None = None

    async def __call__(self, app: Application) -> Application | None:
        config = reread_config(app.config, announce=not self.supervised)
        if config is None:
            return None
        try:
            fresh = Application(config, self.sync)
        except ConfigError as error:  # the file changed again since it was checked
            log.error("reload_failed", error=str(error), kept=app.config.source)
            return None
        fresh.usage = app.usage  # one recorder, flushed by the task the worker started with the first
        fresh.discovery = app.discovery  # the same: the task flushing it is the first Application's
        fresh.portal = app.portal  # the link stays valid; the fresh one (new public_url, TTL) follows
        self.sync.static_exemptions = static_exemptions(config)
        self.sync.static_protected = protected(config)
        if self.companion is not None:
            self.companion.reconfigure(config)
            self._linking = asyncio.create_task(self.companion.attach(fresh, self.store))
        if self.inline is not None:
            await self.inline.restart()
        try:
            await self.sync.resync("reload")
        except (StoreUnavailable, OSError) as error:  # the last policy stays; the follower reloads when it can
            log.warning("reload_policy_unavailable", error=str(error))
        log.info("reloaded", config=config.source, policy_version=self.sync.version)
        return fresh
