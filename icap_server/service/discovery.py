"""Discovery sightings (would-block, caution, continued), counted per day in memory, flushed in batches.

What a department would lose on the day it switches to `enforce` is counted while it monitors, and the count
must cost the request nothing: `note` is a dict update; `run` writes every `interval` seconds, off the path.
The day is the policy's time zone's, so `report discovery --since` means the day the organisation lives in.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, datetime
from functools import partial
from zoneinfo import ZoneInfo

from icap_server.service.counting import BatchedCounts
from policy.decision import Action, Decision
from policy.discovery import Sighting
from policy.store import PolicyStore

SIGHTED = frozenset({Action.WOULD_BLOCK, Action.CAUTION, Action.CONTINUED})


class DiscoveryRecorder(BatchedCounts[tuple[date, Sighting]]):
    what = "discovery"

    def __init__(self, zone: ZoneInfo, keep_days: int) -> None:
        super().__init__()
        self.zone = zone
        self.keep_days = keep_days

    def sight(self, decision: Decision, department: str | None, user: str | None, host: str, now: datetime) -> None:
        if decision.action not in SIGHTED:
            return
        sighting = Sighting(
            str(decision.action), department or "", user or "", decision.service or "", decision.category or "", host
        )
        self.note((now.astimezone(self.zone).date(), sighting), now)

    async def _write(self, store: PolicyStore, counts: Mapping[tuple[date, Sighting], tuple[int, datetime]]) -> None:
        await store.record_discovery(counts, self.keep_days)

    async def flush(self, store: PolicyStore) -> None:
        await self.flush_to(partial(self._write, store))

    async def run(self, store: PolicyStore, interval: float) -> None:
        await self.run_to(partial(self._write, store), interval)
