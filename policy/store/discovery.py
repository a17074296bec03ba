"""Discovery counts in the store: per day, a hash of sightings to counts and one of sightings to `last seen`.

- `discovery:{YYYY-MM-DD}` (hash): a `policy.discovery.Sighting` (its JSON field) -> how many
- `discovery:{YYYY-MM-DD}:last` (hash): the same field -> the last time seen (ISO-8601 UTC, only moved forward)
- `discovery:days` (set): the days that have counts

Each day's keys expire `keep_days` after their last write, so discovery forgets on its own. A flush is one
pipeline per batch, never a command per request.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, date, datetime, timedelta

from policy.discovery import DiscoveryCount, Sighting
from policy.store.base import StoreBase


class DiscoveryPart(StoreBase):
    async def record_discovery(
        self, counts: Mapping[tuple[date, Sighting], tuple[int, datetime]], keep_days: int
    ) -> None:
        if not counts:
            return
        await self._load_scripts()
        keep = int(timedelta(days=keep_days).total_seconds())
        days = {day for day, _sighting in counts}
        async with self.client.pipeline(transaction=False) as pipe:
            for (day, sighting), (count, last) in counts.items():
                field = sighting.to_field()
                pipe.hincrby(self.key("discovery", day.isoformat()), field, count)
                last_key = self.key("discovery", day.isoformat(), "last")
                self._eval(pipe, "last_used", [last_key], [field, last.astimezone(UTC).isoformat()])
            for day in days:
                pipe.sadd(self.key("discovery", "days"), day.isoformat())
                pipe.expire(self.key("discovery", day.isoformat()), keep)
                pipe.expire(self.key("discovery", day.isoformat(), "last"), keep)
            await pipe.execute()

    async def read_discovery(self, since: date | None = None) -> list[DiscoveryCount]:
        """Every stored count from `since` on (all when None); days whose keys expired are forgotten."""
        days = sorted(date.fromisoformat(str(day)) for day in await self.client.smembers(self.key("discovery", "days")))
        counts: list[DiscoveryCount] = []
        for day in days:
            if since is not None and day < since:
                continue
            totals = await self.client.hgetall(self.key("discovery", day.isoformat()))
            lasts = await self.client.hgetall(self.key("discovery", day.isoformat(), "last"))
            if not totals:
                await self.client.srem(self.key("discovery", "days"), day.isoformat())
                continue
            for field, count in totals.items():
                last = (
                    datetime.fromisoformat(str(lasts[field]))
                    if field in lasts
                    else datetime.combine(day, datetime.min.time(), UTC)
                )
                counts.append(DiscoveryCount(day, Sighting.from_field(str(field)), int(count), last))
        return counts
