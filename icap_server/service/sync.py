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

Never fail open on a store problem: the policy carries the store's epoch (`policy.state.StoreEpoch`). When
the epoch vanishes (Redis flushed, or replaced by an empty one), changes, or the version goes back, the
process logs `store_reset` (error) and reloads, re-initialising an uninitialised store first (one atomic,
audited step that re-seeds the default lists; of several processes one wins). A reload that finds no
category lists while the process holds some is not swapped in: the process keeps its last-known-good policy
("holding") and looks again every `check_interval`, until the store has lists again or an admin's deliberate
`clearance store reset` (announced as `StoreReset`) says the empty store is meant.

Reconnecting: capped exponential back-off with jitter (0.1 s doubling to 1 s), so a change reaches the
process within about a second of Redis returning, and a fleet of workers does not reconnect in lock-step.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import structlog

from icap_server.config import Config
from icap_server.service.catalogue import add_catalogue
from policy.categories import PROTECTED, protected_entries
from policy.modes import Mode, ModeTable
from policy.rules import RuleIndex
from policy.services import Service
from policy.state import ApprovalIndex, Exemption, PolicyState, StoreEpoch
from policy.store import (
    ApprovalsReloaded,
    ApprovalsSaved,
    CategoriesSwitched,
    Change,
    ChangeError,
    ChangeFeed,
    DirectoryChanged,
    ExemptionsChanged,
    GraceGranted,
    HostsAdded,
    ModesChanged,
    PolicyStore,
    RulesChanged,
    ServicesChanged,
    StoreError,
    StoreInitialised,
    StoreReset,
    StoreUnavailable,
)

log = structlog.get_logger("clearance.sync")

Applier = Callable[[PolicyState, Any], Awaitable[None]]

RETRY_FIRST_S = 0.1  # the first reconnect delay; it doubles up to RETRY_CAP_S while Redis stays away
RETRY_CAP_S = 1.0
HOLD_REMINDER_S = 60.0  # while holding the last-known-good policy, `store_reset` is logged again this often


def protected(config: Config) -> tuple[str, ...]:
    """The protected hosts a process adds to every policy it loads: the shipped list and the config's."""
    return protected_entries(config.policy.protected_hosts)


class PolicyUnavailable(Exception):
    """No policy has been loaded yet (Redis not reachable since start)."""


class PolicySync:
    def __init__(
        self,
        store: PolicyStore,
        check_interval: float = 0.5,
        static_exemptions: tuple[Exemption, ...] = (),
        seed: Mapping[str, Sequence[str]] | None = None,
        actor: str = "clearance serve",
        static_protected: tuple[str, ...] = (),
        static_services: tuple[Service, ...] = (),
    ) -> None:
        self.store = store
        self.static_exemptions = static_exemptions  # from the config file; Redis holds the rest
        self.static_protected = static_protected  # protected hosts (shipped + config), never in Redis
        self.static_services = static_services  # the shipped service catalogue (`service.catalogue`)
        self.check_interval = check_interval
        self.seed = dict(seed or {})  # the lists an (automatic) initialisation loads: `service.defaults`
        self.actor = actor  # who re-initialised the store, for the audit trail
        self._state: PolicyState | None = None
        self.loaded = asyncio.Event()  # set at the first successful load (serve may wait for it)
        self.resyncs = 0
        self.heard_at: float | None = None  # Unix time of the last word from the store (a load, a check, a change)
        self.holding: str | None = None  # why the last-known-good policy is kept instead of the store's
        self._held_logged = 0.0
        self._lagging_since: float | None = None
        self._appliers: dict[type, Applier] = {
            HostsAdded: self._add_hosts,
            CategoriesSwitched: self._switch_categories,
            ApprovalsSaved: self._put_approvals,
            ApprovalsReloaded: self._reload_approvals,
            DirectoryChanged: self._reload_directory,
            ExemptionsChanged: self._set_exemptions,
            RulesChanged: self._set_rules,
            ServicesChanged: self._switch_services,
            ModesChanged: self._set_modes,
            GraceGranted: self._put_graces,
            StoreInitialised: self._store_changed,
            StoreReset: self._store_changed,
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
        """Follow changes forever; reconnect with capped, jittered back-off and resync after any interruption."""
        delay = RETRY_FIRST_S
        while True:
            try:
                async with self.store.changes() as feed:  # subscribed before loading: no change falls between
                    await self.resync("start" if self._state is None else "reconnect")
                    delay = RETRY_FIRST_S
                    await self._follow(feed)
            except (StoreUnavailable, OSError, StoreError) as error:  # StoreError: an initialisation kept losing
                log.warning("policy_sync_interrupted", error=str(error), retry_in_s=delay)
            await asyncio.sleep(random.uniform(delay / 2, delay))
            delay = min(delay * 2, RETRY_CAP_S)

    async def resync(self, why: str) -> bool:
        """Reload everything and swap it in; False if it was held back (it would drop every list we hold)."""
        started = time.perf_counter()
        state = await self._load()
        if _drops_every_list(self._state, state):
            self._hold(f"{why}; the store holds no category lists", state)
            return False
        state.exemptions = self.static_exemptions + state.exemptions
        add_catalogue(state, self.static_services)  # after the check, like the protected hosts: not the store's
        state.categories.add(PROTECTED, self.static_protected)  # after the check: they are not the store's lists
        self._state = state
        self._lagging_since = None
        self.holding = None
        self.resyncs += 1
        self.heard_at = time.time()
        self.loaded.set()
        log.info(
            "policy_loaded",
            why=why,
            version=state.version,
            epoch=state.epoch.id if state.epoch else None,
            entries=len(state.categories),
            approvals=len(state.approvals),
            people=len(state.directory),
            rules=len(state.rules),
            seconds=round(time.perf_counter() - started, 3),
        )
        return True

    async def _load(self) -> PolicyState:
        """The store's policy; a store with no identity is initialised first (the one audited re-seed)."""
        epoch, _version = await self.store.identity()
        if epoch is None:
            initialised = await self.store.initialise(self.seed, self.actor)
            if initialised is not None:  # else another process won, and its epoch is there now
                log.warning("store_initialised", epoch=initialised.epoch.id, seeded=initialised.seeded)
        return await self.store.load_state()

    def _hold(self, why: str, refused: PolicyState) -> None:
        now = time.monotonic()
        if self.holding is None or now - self._held_logged >= HOLD_REMINDER_S:  # not at every retry
            self._held_logged = now
            log.error(
                "store_reset",
                problem=why,
                action="holding the last-known-good policy",
                held_version=self.version,
                store_version=refused.version,
                store_epoch=refused.epoch.id if refused.epoch else None,
            )
        self.holding = why

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
        if isinstance(change, StoreInitialised | StoreReset):  # a new history: its versions start anywhere
            await self._store_changed(state, change)
            return
        if self.holding is not None:
            return  # a change to the store we are not following; the retry every check_interval reloads it
        if change.version <= state.version:
            return  # already reflected in the loaded state
        if change.version > state.version + 1:
            await self.resync(f"missed changes {state.version + 1}..{change.version - 1}")
            return
        await self._appliers[type(change)](state, change)
        if self._state is state:  # else a resync replaced the state, with the version it loaded
            state.version = change.version

    async def _store_changed(self, state: PolicyState, change: StoreInitialised | StoreReset) -> None:
        if state.epoch is not None and state.epoch.id == change.epoch:
            return  # the epoch this policy was loaded from (this process initialised it)
        deliberate = isinstance(change, StoreReset)
        (log.warning if deliberate else log.error)(
            "store_reset", problem=f"the store announced a new epoch {change.epoch}", deliberate=deliberate
        )
        await self.resync(f"{change.kind} {change.epoch}")

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

    async def _set_modes(self, state: PolicyState, change: ModesChanged) -> None:
        state.modes = ModeTable.build(Mode.ENFORCE, change.modes)

    async def _put_graces(self, state: PolicyState, change: GraceGranted) -> None:
        state.graces.prune(time.time())
        for grace in change.graces:
            state.graces.put(grace)

    async def _switch_services(self, state: PolicyState, change: ServicesChanged) -> None:
        await self.resync(f"{change.kind} changed")  # a service's entries join or leave the index: rebuild it

    async def _check_version(self) -> None:
        """The safety net: the store is not the one the policy came from, or its version moved unannounced."""
        if self.holding is not None:
            await self.resync(f"looking again ({self.holding})")
            return
        epoch, current = await self.store.identity()
        if self._state is not None:
            self.heard_at = time.time()
        problem = _reset_problem(self._state, epoch, current)
        if problem is not None:
            deliberate = epoch is not None and epoch.deliberate
            (log.warning if deliberate else log.error)("store_reset", problem=problem, deliberate=deliberate)
            await self.resync(problem)
            return
        if current == self.version:
            self._lagging_since = None
            return
        now = time.monotonic()
        if self._lagging_since is None:
            self._lagging_since = now
        elif now - self._lagging_since >= self.check_interval:
            await self.resync(f"version {current} seen without its change message")


def _reset_problem(state: PolicyState | None, epoch: StoreEpoch | None, version: int) -> str | None:
    """Why the store is not the one `state` was loaded from, or None if it is."""
    if state is None:
        return None
    if epoch is None:
        return "the store's identity vanished (Redis emptied or replaced)"
    if state.epoch is None or epoch.id != state.epoch.id:
        return f"the store's identity changed to {epoch.id} ({epoch.origin} by {epoch.by or '?'})"
    if version < state.version:
        return f"the store's version went back from {state.version} to {version}"
    return None


def _drops_every_list(held: PolicyState | None, loaded: PolicyState) -> bool:
    """Swapping `loaded` in would stop blocking every listed host, and no admin's `store reset` asked for that."""
    if held is None or len(loaded.categories) or not _holds_lists(held):
        return False
    epoch = loaded.epoch
    deliberate = epoch is not None and epoch.deliberate and (held.epoch is None or epoch.id != held.epoch.id)
    return not deliberate


def _holds_lists(state: PolicyState) -> bool:
    """Whether the policy holds any store list entry (the protected hosts, added at every load, are not one)."""
    protected_only = frozenset((PROTECTED,))
    return any(categories != protected_only for categories in state.categories.entries.values())
