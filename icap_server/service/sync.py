"""Keeps a serve process's in-memory policy fresh from Redis, so requests never wait for Redis.

Why pub/sub rather than client-side caching: the policy is loaded whole (the category index must be in
memory for a label walk anyway), so what a process needs is a stream of "what changed", not invalidation
of individual keys. Every change is written and announced in one Redis transaction that also bumps
`policy:version`, so messages arrive in version order and a gap is detectable.

Freshness: a change reaches every process as soon as Redis delivers the message (milliseconds). If a
message is lost (a gap in versions), the connection drops, or the version in Redis moves without a message
for longer than `check_interval`, the process reloads everything. Until the first load succeeds the policy
is unavailable and every request gets a block page saying so (reason policy-unavailable), so a process never
filters with an empty policy.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

import structlog
from redis.asyncio.client import PubSub

from policy.rules import RuleIndex
from policy.state import ApprovalIndex, Exemption, PolicyState
from policy.store import Change, PolicyStore, StoreUnavailable

log = structlog.get_logger("clearance.sync")


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
            pubsub = self.store.client.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self.store.channel)
                await self.resync("start" if self._state is None else "reconnect")
                delay = 0.1
                await self._follow(pubsub)
            except (StoreUnavailable, OSError) as error:
                log.warning("policy_sync_interrupted", error=str(error), retry_in_s=delay)
            finally:
                with contextlib.suppress(StoreUnavailable, OSError):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]
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

    async def _follow(self, pubsub: PubSub) -> None:
        last_check = time.monotonic()
        while True:
            message = await pubsub.get_message(timeout=self.check_interval)
            if message is not None and message.get("type") == "message":
                await self.apply(Change.parse(message["data"]))
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
        if change.kind == "hosts":
            state.categories.add(str(change.data["category"]), [str(host) for host in change.data["hosts"]])
        elif change.kind == "approvals":
            ids = change.data.get("ids")
            if ids is None:
                state.approvals = ApprovalIndex(await self.store.all_approvals())
            else:
                for approval_id in ids:
                    state.approvals.put(await self.store.get_approval(str(approval_id)))
        elif change.kind == "directory":
            state.directory = await self.store.load_directory()
        elif change.kind == "exemptions":
            state.exemptions = self.static_exemptions + tuple(await self.store.exemptions())
        elif change.kind == "rules":
            state.rules = RuleIndex(await self.store.list_rules())
        else:  # a category switched generation: rebuild the index beside the live one, then swap
            await self.resync(f"{change.kind} changed")
            return
        state.version = change.version

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
