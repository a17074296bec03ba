"""The store's identity and what a PolicySync does with it, against a real Redis (no server process).

One process wins an initialisation; a store from before epochs keeps its lists; a reset keeps the history and
the counters; a sync keeps its last-known-good policy when the lists vanish by accident, adopts a store that
has lists again or was reset on purpose, and reloads when the version goes back.
"""

from __future__ import annotations

import asyncio
from typing import Any

import redis

from icap_server.service.sync import PolicySync
from policy.directory import Person
from policy.store import PolicyStore, StoreInitialised, StoreReset
from tests.support.waiting import wait_until_async
from tests.test_sync_pubsub import following as following_store

SEED = {"webmail": ("mail.example", "webmail.example"), "web-im": ("chat.example",)}


async def next_change(feed: Any) -> Any:
    for _ in range(50):  # the first read may return the subscription's confirmation
        change = await feed.get(0.1)
        if change is not None:
            return change
    raise AssertionError("no change announced")


def audit_actions(client: redis.Redis) -> list[str]:
    found: Any = client.xrange("clearance:audit")
    return [str(fields["action"]) for _, fields in found]


def entries(sync: PolicySync) -> int:
    return len(sync.state.categories)


def following(redis_url: str, seed: dict[str, tuple[str, ...]] | None = None) -> Any:
    """A writer, and a PolicySync checking the store every 0.05 s, following it from its own connection."""
    return following_store(redis_url, check_interval=0.05, seed=seed)


def test_of_many_processes_initialising_one_store_one_wins(redis_url: str, sync_redis: redis.Redis) -> None:
    async def scenario() -> list[Any]:
        stores = [PolicyStore.from_url(redis_url) for _ in range(8)]
        try:
            return list(await asyncio.gather(*(store.initialise(SEED, f"p{n}") for n, store in enumerate(stores))))
        finally:
            await asyncio.gather(*(store.close() for store in stores))

    results = asyncio.run(scenario())
    winners = [result for result in results if result is not None]
    assert len(winners) == 1 and winners[0].seeded == {"webmail": 2, "web-im": 1}
    actions = audit_actions(sync_redis)
    assert actions == ["store-initialise"]
    generation = str(sync_redis.hget("clearance:lists", "webmail:curated"))  # the seed is the curated source
    assert sync_redis.smembers(f"clearance:cat:webmail:{generation}") == {"mail.example", "webmail.example"}


def test_a_store_from_before_epochs_keeps_its_lists(redis_url: str, sync_redis: redis.Redis) -> None:
    """An admin who emptied a list keeps it empty: an existing store gets its epoch, and no lists."""

    async def scenario() -> Any:
        store = PolicyStore.from_url(redis_url)
        try:
            await store.add_hosts("webmail", ["only.example"])
            return await store.initialise(SEED, "serve")
        finally:
            await store.close()

    result = asyncio.run(scenario())
    assert result is not None and result.seeded == {}
    assert sync_redis.hkeys("clearance:lists") == ["webmail:admin"]


def test_a_reset_keeps_the_history_the_counters_and_the_secret(redis_url: str, sync_redis: redis.Redis) -> None:
    async def scenario() -> tuple[Any, Any]:
        store = PolicyStore.from_url(redis_url)
        try:
            await store.initialise(SEED, "serve")
            await store.write_directory([Person("alice", "Finance")], "admin", merge=False)
            await store.add_rule("allow", "intranet.example")
            sync_redis.set("clearance:portal:secret", "s3cret")
            sync_redis.set("clearance:approval:seq", "41")
            version = await store.version()
            async with store.changes() as feed:
                reset = await store.reset({}, "admin")
                change = await next_change(feed)
            assert reset.version == version + 1  # the version only moves forward
            return change, await store.store_status()
        finally:
            await store.close()

    change, status = asyncio.run(scenario())
    assert isinstance(change, StoreReset) and status.epoch is not None and change.epoch == status.epoch.id
    assert status.epoch.origin == "reset" and status.entries == {} and status.people == 0
    assert not sync_redis.exists("clearance:rules", "clearance:directory", "clearance:categories", "clearance:lists")
    assert sync_redis.get("clearance:portal:secret") == "s3cret" and sync_redis.get("clearance:approval:seq") == "41"
    actions = audit_actions(sync_redis)
    assert actions[0] == "store-initialise" and actions[-1] == "store-reset" and "directory-load" in str(actions)


def test_lists_vanishing_by_accident_are_held_until_the_store_has_lists_again(
    redis_url: str, sync_redis: redis.Redis
) -> None:
    async def scenario() -> None:
        async with following(redis_url) as (writer, sync):  # no seed: a flushed store comes back empty
            await writer.add_hosts("webmail", ["mail.example"])
            await wait_until_async(lambda: entries(sync) == 1, what="the list")
            sync_redis.flushall()
            await wait_until_async(lambda: sync.holding is not None, what="the sync to hold on")
            assert sync.state.categories.match("mail.example").entry == "mail.example"  # still blocking
            assert sync_redis.exists("clearance:meta:epoch")  # re-initialised meanwhile (with no lists)
            await writer.add_hosts("cloud-storage", ["drive.example"])
            await wait_until_async(lambda: sync.holding is None, what="the sync to adopt the new store")
            assert sync.state.categories.match("mail.example").entry is None  # the store's lists, exactly
            assert sync.state.categories.match("drive.example").entry == "drive.example"

    asyncio.run(scenario())


def test_a_flushed_store_is_re_seeded_once_and_reloaded(redis_url: str, sync_redis: redis.Redis) -> None:
    async def scenario() -> None:
        async with following(redis_url, SEED) as (_, first), following(redis_url, SEED) as (writer, second):
            await writer.add_hosts("webmail", ["extra.example"])
            await wait_until_async(lambda: entries(first) == entries(second) == 4, what="both syncs")
            old = first.state.epoch
            sync_redis.flushall()
            await wait_until_async(
                lambda: first.state.epoch != old and second.state.epoch != old and entries(first) == 3,
                what="both syncs on the re-seeded store",
            )
            assert first.state.epoch == second.state.epoch and entries(second) == 3

    asyncio.run(scenario())
    actions = audit_actions(sync_redis)
    assert actions == ["store-initialise"]  # the flush took the first one; one process won the second


def test_a_deliberate_reset_is_adopted_even_with_no_lists(redis_url: str) -> None:
    async def scenario() -> None:
        async with following(redis_url, SEED) as (writer, sync):
            assert entries(sync) == 3
            await writer.reset({}, "admin")
            await wait_until_async(lambda: entries(sync) == 0, what="the sync to adopt the reset")
            assert sync.holding is None and sync.state.epoch is not None and sync.state.epoch.deliberate

    asyncio.run(scenario())


def test_the_version_going_back_reloads(redis_url: str, sync_redis: redis.Redis) -> None:
    async def scenario() -> None:
        async with following(redis_url, SEED) as (writer, sync):
            await writer.add_rule("allow", "intranet.example")
            await wait_until_async(lambda: len(sync.state.rules) == 1, what="the rule")
            resyncs = sync.resyncs
            sync_redis.delete("clearance:rules")
            sync_redis.set("clearance:policy:version", "1")  # an older copy of the same store
            await wait_until_async(lambda: sync.resyncs > resyncs, what="a reload")
            assert len(sync.state.rules) == 0 and sync.version == 1 and entries(sync) == 3

    asyncio.run(scenario())


def test_a_store_initialised_elsewhere_is_announced(redis_url: str) -> None:
    async def scenario() -> Any:
        store = PolicyStore.from_url(redis_url)
        try:
            async with store.changes() as feed:
                result = await store.initialise(SEED, "serve")
                return result, await next_change(feed)
        finally:
            await store.close()

    result, change = asyncio.run(scenario())
    assert change == StoreInitialised(version=result.version, epoch=result.epoch.id)
