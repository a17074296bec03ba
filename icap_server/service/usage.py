"""Approval usage (how often, and when last), counted in memory and written to Redis in batches.

A review should rest on actual use, but the ICAP answer must never wait for a write: `note` is a dict update
on the request path, and `run` flushes the counts every `interval` seconds off it (`counting.BatchedCounts`).
"""

from __future__ import annotations

from icap_server.service.counting import BatchedCounts
from policy.store import PolicyStore


class UsageRecorder(BatchedCounts[str]):
    what = "usage"

    async def flush(self, store: PolicyStore) -> None:
        await self.flush_to(store.record_usage)

    async def run(self, store: PolicyStore, interval: float) -> None:
        await self.run_to(store.record_usage, interval)
