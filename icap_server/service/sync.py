"""Keeps a serve process's in-memory policy fresh from Redis, so requests never wait for Redis.

Why pub/sub rather than client-side caching: the policy is loaded whole (the category index must be in
memory for a label walk anyway), so what a process needs is a stream of "what changed", not invalidation
of individual keys. Every change is written and announced in one Redis transaction that also bumps
`policy:version`, so messages arrive in version order and a gap is detectable. The changed records travel
in the message (a grant or revoke is applied without reading it back), except where a reload is cheaper
or needed: a category switch (the index is rebuilt beside the live one, then swapped), a bulk approval
import, and the directory.

Freshness: a change reaches every process as soon as Redis delivers the message (milliseconds). If a
message is lost (a gap in versions) or cannot be read, the connection drops, or the version in Redis moves
without a message for longer than `check_interval`, the process reloads everything. Until the first load
succeeds the policy is unavailable and every request gets a block page saying so (reason
policy-unavailable), so a process never filters with an empty policy.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import structlog

from policy.rules import RuleIndex
from policy.state import ApprovalIndex, Exemption, PolicyState
from policy.store import (
    ApprovalsReloaded,
    ApprovalsSaved,
    CategoriesSwitched,
    Change,
    ChangeError,
    ChangeFeed,
    DirectoryChanged,
    ExemptionsChanged,
    HostsAdded,
    PolicyStore,
    RulesChanged,
    StoreUnavailable,
)

log = structlog.get_logger("clearance.sync")

Applier = Callable[[PolicyState, Any], Awaitable[None]]


class PolicyUnavailable(Exception):
    """No policy has been loaded yet (Redis not reachable since start)."""


class PolicySync:
    def __init__(
        self, store: PolicyStore, check_interval: float = 0.5, static_exemptions: tuple[Exemption, ...] = ()
    ) -> None:
        self.store = store
        self.static_exemptions = static_exemptions  # from the config file; Redis holds the rest
        self.check_interval = check_interval
        self._state: PolicyState | None = None
        self.loaded = asyncio.Event()
        self.resyncs = 0
        self._lagging_since: float | None = None
        self._appliers: dict[type, Applier] = {
            HostsAdded: self._add_hosts,
            CategoriesSwitched: self._switch_categories,
            ApprovalsSaved: self._put_approvals,
            ApprovalsReloaded: self._reload_approvals,
            DirectoryChanged: self._reload_directory,
            ExemptionsChanged: self._set_exemptions,
            RulesChanged: self._set_rules,
        }

    @property
    def state(self) -> PolicyState:
        if self._state is None:
            raise PolicyUnavailable("policy not loaded yet: Redis has not been reachable")
        return self._state

    @property
    def version(self) -> int:
        return self._state.version if self._state is not None else 0

    async def run(self) -> None:
        """Follow changes forever; reconnect with back-off and resync after any interruption."""
        delay = 0.1
        while True:
            try:
                async with self.store.changes() as feed:  # subscribed before loading: no change falls between
                    await self.resync("start" if self._state is None else "reconnect")
                    delay = 0.1
                    await self._follow(feed)
            except (StoreUnavailable, OSError) as error:
                log.warning("policy_sync_interrupted", error=str(error), retry_in_s=delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)

    async def resync(self, why: str) -> None:
        started = time.perf_counter()
        state = await self.store.load_state()
        state.exemptions = self.static_exemptions + state.exemptions
        self._state = state
        self._lagging_since = None
        self.resyncs += 1
        self.loaded.set()
        log.info(
            "policy_loaded",
            why=why,
            version=state.version,
            entries=len(state.categories),
            approvals=len(state.approvals),
            people=len(state.directory),
            rules=len(state.rules),
            seconds=round(time.perf_counter() - started, 3),
        )

    async def _follow(self, feed: ChangeFeed) -> None:
        last_check = time.monotonic()
        while True:
            try:
                change = await feed.get(self.check_interval)
            except ChangeError as error:  # we cannot know what changed: reload it all (fail safe)
                await self.resync(f"unreadable change: {error}")
            else:
                if change is not None:
                    await self.apply(change)
            if time.monotonic() - last_check >= self.check_interval:
                last_check = time.monotonic()
                await self._check_version()

    async def apply(self, change: Change) -> None:
        state = self.state
        if change.version <= state.version:
            return  # already reflected in the loaded state
        if change.version > state.version + 1:
            await self.resync(f"missed changes {state.version + 1}..{change.version - 1}")
            return
        await self._appliers[type(change)](state, change)
        if self._state is state:  # else a resync replaced the state, with the version it loaded
            state.version = change.version

    async def _add_hosts(self, state: PolicyState, change: HostsAdded) -> None:
        state.categories.add(change.category, change.hosts)

    async def _switch_categories(self, state: PolicyState, change: CategoriesSwitched) -> None:
        await self.resync(f"{change.kind} changed")  # rebuild the index beside the live one, then swap

    async def _put_approvals(self, state: PolicyState, change: ApprovalsSaved) -> None:
        state.approvals.put_many(change.approvals)

    async def _reload_approvals(self, state: PolicyState, change: ApprovalsReloaded) -> None:
        state.approvals = ApprovalIndex(await self.store.all_approvals())

    async def _reload_directory(self, state: PolicyState, change: DirectoryChanged) -> None:
        state.directory = await self.store.load_directory()

    async def _set_exemptions(self, state: PolicyState, change: ExemptionsChanged) -> None:
        state.exemptions = self.static_exemptions + change.exemptions

    async def _set_rules(self, state: PolicyState, change: RulesChanged) -> None:
        state.rules = RuleIndex(change.rules)

    async def _check_version(self) -> None:
        """The safety net: Redis's version moved but no message explained it for a whole interval."""
        current = await self.store.version()
        if current < self.version:  # Redis was emptied or replaced by an older copy
            await self.resync(f"store version went back from {self.version} to {current}")
            return
        if current == self.version:
            self._lagging_since = None
            return
        now = time.monotonic()
        if self._lagging_since is None:
            self._lagging_since = now
        elif now - self._lagging_since >= self.check_interval:
            await self.resync(f"version {current} seen without its change message")
