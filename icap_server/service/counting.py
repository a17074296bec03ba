"""Counts kept in memory on the request path and written to the store in batches, off it.

A request must never wait for a write: `note` is one dict update, and `run` flushes every `interval` seconds.
A flush that fails keeps its counts for the next one, so a Redis outage loses nothing that was noted.
Approval usage (`usage.py`) and discovery (`discovery.py`) are both one of these.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Hashable, Mapping
from datetime import datetime
from typing import Generic, TypeVar

import structlog

from policy.store import StoreUnavailable

log = structlog.get_logger("clearance.counting")

Key = TypeVar("Key", bound=Hashable)
Write = Callable[[Mapping[Key, tuple[int, datetime]]], Awaitable[None]]


class BatchedCounts(Generic[Key]):
    """How often each key was noted, and when last, since the last flush."""

    what = "counts"  # the log's word for them

    def __init__(self) -> None:
        self._pending: dict[Key, tuple[int, datetime]] = {}

    def note(self, key: Key, now: datetime) -> None:
        count, _ = self._pending.get(key, (0, now))
        self._pending[key] = (count + 1, now)

    def take(self) -> dict[Key, tuple[int, datetime]]:
        pending, self._pending = self._pending, {}
        return pending

    async def flush_to(self, write: Write[Key]) -> None:
        pending = self.take()
        if not pending:
            return
        try:
            await write(pending)
        except (StoreUnavailable, OSError) as error:
            log.warning(f"{self.what}_not_recorded", error=str(error), keys=len(pending))
            for key, (count, last) in pending.items():  # keep them for the next try
                old_count, old_last = self._pending.get(key, (0, last))
                self._pending[key] = (old_count + count, max(old_last, last))

    async def run_to(self, write: Write[Key], interval: float) -> None:
        try:
            while True:
                await asyncio.sleep(interval)
                await self.flush_to(write)
        finally:
            with contextlib.suppress(Exception):
                await asyncio.shield(self.flush_to(write))
