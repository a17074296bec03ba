"""Usage counts in the store: workers flush in any order, so counts add up and `last used` never goes back."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from policy.store import PolicyStore

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)


def test_counts_add_up_and_last_used_only_moves_forward(redis_url: str) -> None:
    async def scenario() -> dict[str, tuple[int, datetime | None]]:
        store = PolicyStore.from_url(redis_url)
        try:
            await store.record_usage({"A1": (3, NOW), "A2": (1, NOW - timedelta(hours=1))})
            await store.record_usage({"A1": (2, NOW - timedelta(minutes=5))})  # a worker that flushed late
            await store.record_usage({"A2": (4, NOW)})
            await store.record_usage({})
            return await store.usage()
        finally:
            await store.close()

    assert asyncio.run(scenario()) == {"A1": (5, NOW), "A2": (5, NOW)}


def test_usage_is_recorded_after_redis_forgot_the_scripts(redis_url: str) -> None:
    async def scenario() -> dict[str, tuple[int, datetime | None]]:
        store = PolicyStore.from_url(redis_url)
        try:
            await store.record_usage({"A1": (1, NOW)})
            await store.client.script_flush()  # a restarted Redis knows no scripts
            await store.record_usage({"A1": (1, NOW + timedelta(seconds=1))})
            return await store.usage()
        finally:
            await store.close()

    assert asyncio.run(scenario()) == {"A1": (2, NOW + timedelta(seconds=1))}
