"""Approval usage (how often, and when last), counted in memory and written to Redis in batches.

A review should rest on actual use, but the ICAP answer must never wait for a write: `note` is a dict update
on the request path, and `run` flushes the counts every `interval` seconds off it.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import datetime

import structlog

from policy.store import PolicyStore, StoreUnavailable

log = structlog.get_logger("clearance.usage")


class UsageRecorder:
    def __init__(self) -> None:
        self._pending: dict[str, tuple[int, datetime]] = {}

    def note(self, approval_id: str, now: datetime) -> None:
        count, _ = self._pending.get(approval_id, (0, now))
        self._pending[approval_id] = (count + 1, now)

    def take(self) -> dict[str, tuple[int, datetime]]:
        pending, self._pending = self._pending, {}
        return pending

    async def flush(self, store: PolicyStore) -> None:
        pending = self.take()
        if not pending:
            return
        try:
            await store.record_usage(pending)
        except (StoreUnavailable, OSError) as error:
            log.warning("usage_not_recorded", error=str(error), approvals=len(pending))
            for approval_id, (count, last) in pending.items():  # keep them for the next try
                old_count, old_last = self._pending.get(approval_id, (0, last))
                self._pending[approval_id] = (old_count + count, max(old_last, last))

    async def run(self, store: PolicyStore, interval: float) -> None:
        try:
            while True:
                await asyncio.sleep(interval)
                await self.flush(store)
        finally:
            with contextlib.suppress(Exception):
                await asyncio.shield(self.flush(store))
