"""Category generations in the store: what a merge import keeps, and what a reader sees around a switch."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import redis

from policy.store import PolicyStore


def test_merge_import_keeps_hosts_added_while_it_was_staging(redis_url: str, sync_redis: redis.Redis) -> None:
    async def scenario() -> set[str]:
        store = PolicyStore.from_url(redis_url)
        try:
            await store.import_categories({"webmail": [["old.example"]]}, replace=False, source="lists")
            generation = (await store.list_generations())[("webmail", "lists")]

            def batches() -> Iterator[list[str]]:
                yield ["new1.example"]
                # Something writes to the source's live list while the import is staging.
                sync_redis.sadd(f"clearance:cat:webmail:{generation}", "late.example")
                yield ["new2.example"]

            await store.import_categories({"webmail": batches()}, replace=False, source="lists")
            state = await store.load_state()
            return {entry for entry, cats in state.categories.entries.items() if "webmail" in cats}
        finally:
            await store.close()

    assert asyncio.run(scenario()) == {"old.example", "new1.example", "new2.example", "late.example"}


def test_a_reader_holding_the_old_generation_still_finds_its_entries(redis_url: str) -> None:
    async def scenario() -> tuple[int, int]:
        store = PolicyStore.from_url(redis_url)
        try:
            await store.import_categories({"webmail": [[f"a{index}.example" for index in range(100)]]}, replace=True)
            old = (await store.list_generations())[("webmail", "import")]
            await store.import_categories({"webmail": [[f"b{index}.example" for index in range(50)]]}, replace=True)
            # A reader that fetched the generation number just before the switch reads the old set now.
            stale = [entry async for batch in store.category_entries("webmail", old) for entry in batch]
            fresh = await store.load_state()
            return len(stale), len(fresh.categories)
        finally:
            await store.close()

    assert asyncio.run(scenario()) == (100, 50)
