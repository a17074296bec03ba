"""The store's identity (`meta:epoch`), written in the one transaction that initialises a store.

Why: a worker that sees an empty store cannot tell "the admin emptied the lists" from "Redis was flushed or
replaced" by looking at the lists. The epoch tells them apart. It is written, with the default lists and a
version bump, in one MULTI that WATCHes the keys it depends on, so of several processes that find the same
uninitialised store one wins and the others see its epoch. A store whose epoch vanished is not the store a
worker's policy came from; a worker then re-initialises it through `initialise` (audited) and reloads.

A deliberate wipe is `reset`: everything under the prefix but the audit trail, the counters (ids are never
handed out twice, the version only moves forward) and the portal secret, with a new epoch whose origin is
"reset", announced as `StoreReset`; workers adopt that store even when it holds no lists.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from redis.exceptions import WatchError

from policy.approvals import utc_now
from policy.state import StoreEpoch
from policy.store.audit import audit_log
from policy.store.categories import CategoriesPart
from policy.store.changes import StoreInitialised, StoreReset
from policy.store.errors import StoreError

# Kept by a reset: the history, the counters (no id is reused, the version never goes back) and the secret.
KEEP_ON_RESET = (
    "audit",
    "policy:version",
    "gen:seq",
    "approval:seq",
    "exemption:seq",
    "rule:seq",
    "request:seq",
    "portal:secret",
)
ATTEMPTS = 20  # WATCH conflicts tolerated before giving up (each means another write landed meanwhile)

Seed = Mapping[str, Sequence[str]]  # category -> the hosts to load into it


@dataclass(frozen=True, slots=True)
class Initialised:
    """What one initialisation (or reset) wrote: the new epoch, the version it announced, the lists seeded."""

    epoch: StoreEpoch
    version: int
    seeded: dict[str, int] = field(default_factory=dict)  # category -> entries


@dataclass(frozen=True, slots=True)
class StoreStatus:
    epoch: StoreEpoch | None
    version: int
    entries: dict[str, int]  # category -> entries in its live generation
    approvals: int
    people: int


def _glob_escape(text: str) -> str:
    return "".join("\\" + char if char in "*?[]\\" else char for char in text)


def read_epoch(marker: str | None) -> StoreEpoch | None:
    """The stored marker as an epoch; a marker that is not ours still identifies the store (by its text)."""
    if not marker:
        return None
    try:
        return StoreEpoch.from_json(marker)
    except ValueError:
        return StoreEpoch(id=marker[:64], at="", origin="unknown")


class IdentityPart(CategoriesPart):
    async def identity(self) -> tuple[StoreEpoch | None, int]:
        """The epoch and the version, in one MGET: both describe the same moment, in one command (a worker's
        check every `check_interval` is the only Redis call of its steady state)."""
        marker, version = await self.client.mget(self.key("meta", "epoch"), self.key("policy", "version"))
        return read_epoch(str(marker) if marker else None), int(version or 0)

    async def initialise(self, seed: Seed, actor: str) -> Initialised | None:
        """Give a store without an epoch its identity and the `seed` lists; None if it has one (another won).

        A store from before epochs that already has lists (or loaded the defaults once) gets its epoch only:
        an admin who emptied a list keeps it empty.
        """
        return await self._retrying(self._try_initialise, seed, actor)

    async def reset(self, seed: Seed, actor: str) -> Initialised:
        """The deliberate wipe: empty the policy data, write a new epoch and `seed`, announce `StoreReset`."""
        result = await self._retrying(self._try_reset, seed, actor)
        assert result is not None
        return result

    async def _retrying(self, attempt: Any, seed: Seed, actor: str) -> Initialised | None:
        await self._load_scripts()  # the version bump runs as EVALSHA inside the MULTI
        for _ in range(ATTEMPTS):
            try:
                result: Initialised | None = await attempt(seed, actor)
                return result
            except WatchError:
                continue  # something was written meanwhile: look again
        raise StoreError("the store kept changing during its initialisation; nothing was changed, run it again")

    def _watched(self) -> list[str]:
        names = ("meta:epoch", "categories", "meta:defaults-loaded", "gen:seq", "lists")
        return [self.key(*name.split(":")) for name in names]

    async def _try_initialise(self, seed: Seed, actor: str) -> Initialised | None:
        epoch_key, categories, legacy, _, lists = self._watched()
        async with self.client.pipeline(transaction=True) as pipe:
            await pipe.watch(*self._watched())
            if await pipe.exists(epoch_key):
                return None
            seeding = {} if await pipe.exists(categories, legacy, lists) else seed
            epoch = StoreEpoch(id=secrets.token_hex(8), at=utc_now().isoformat(), origin="initialised", by=actor)
            generation = int(await pipe.get(self.key("gen", "seq")) or 0)
            pipe.multi()  # type: ignore[no-untyped-call]
            seeded = self._queue_epoch(pipe, epoch, seeding, generation)
            self._publish(pipe, StoreInitialised(epoch=epoch.id))
            after = {"epoch": epoch.id, "seeded": seeded}
            self._audit(pipe, actor, "store-initialise", epoch.id, None, None, after, log=False)
            results = await pipe.execute()
        audit_log.info("audit", actor=actor, action="store-initialise", target=epoch.id, seeded=seeded)
        return Initialised(epoch=epoch, version=int(results[-2]), seeded=seeded)

    async def _try_reset(self, seed: Seed, actor: str) -> Initialised:
        keep = {self.key(*name.split(":")) for name in KEEP_ON_RESET}
        async with self.client.pipeline(transaction=True) as pipe:
            await pipe.watch(*self._watched(), self.key("policy", "version"))
            before = await self.store_status()
            doomed = [
                str(name)
                async for name in self.client.scan_iter(match=_glob_escape(self.prefix) + "*", count=1000)
                if str(name) not in keep
            ]
            epoch = StoreEpoch(id=secrets.token_hex(8), at=utc_now().isoformat(), origin="reset", by=actor)
            generation = int(await pipe.get(self.key("gen", "seq")) or 0)
            pipe.multi()  # type: ignore[no-untyped-call]
            for start in range(0, len(doomed), 1000):
                pipe.unlink(*doomed[start : start + 1000])
            seeded = self._queue_epoch(pipe, epoch, seed, generation)
            self._publish(pipe, StoreReset(epoch=epoch.id))
            previous = {
                "epoch": before.epoch.id if before.epoch else None,
                "entries": before.entries,
                "approvals": before.approvals,
                "people": before.people,
            }
            self._audit(pipe, actor, "store-reset", epoch.id, None, previous, {"epoch": epoch.id, "seeded": seeded})
            results = await pipe.execute()
        return Initialised(epoch=epoch, version=int(results[-2]), seeded=seeded)

    def _queue_epoch(self, pipe: Any, epoch: StoreEpoch, lists: Seed, generation: int) -> dict[str, int]:
        """Queue the marker and the seeded lists (the `curated` source); the entries seeded, per category."""
        pipe.set(self.key("meta", "epoch"), epoch.to_json())
        return self._queue_seed(pipe, lists, generation)

    async def store_status(self) -> StoreStatus:
        """What `clearance store status` shows: the identity, the version and how much policy there is."""
        epoch, version = await self.identity()
        async with self.client.pipeline(transaction=False) as pipe:
            pipe.hlen(self.key("approvals"))
            pipe.hlen(self.key("directory"))
            approvals, people = await pipe.execute()
        return StoreStatus(epoch, version, await self.category_sizes(), int(approvals), int(people))
