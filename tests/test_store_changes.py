"""Every store write announces a typed change that a PolicySync applies to the same state a fresh load gives.

Against a real redis-server: the store publishes, its change feed delivers, `PolicySync.apply` applies. A grant
or a revoke travels in the message, so the worker applies it without reading anything from Redis.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import redis

from icap_server.service.sync import PolicySync
from policy.directory import Person
from policy.state import PolicyState
from policy.store import (
    ApprovalsReloaded,
    ApprovalsSaved,
    CategoriesSwitched,
    Change,
    DirectoryChanged,
    ExemptionsChanged,
    HostsAdded,
    PolicyStore,
    RulesChanged,
    StoreError,
)
from tests.test_changes import NOW, approval

Write = Callable[[PolicyStore], Awaitable[object]]


def snapshot(state: PolicyState) -> dict[str, Any]:
    """What a decision can see of a state, in comparable form."""
    approvals = state.approvals
    return {
        "version": state.version,
        "categories": dict(state.categories.entries),
        "approvals": dict(approvals.by_id),
        "subjects": {
            name: {key: sorted(item.id for item in items) for key, items in table.items()}
            for name, table in (
                ("user", approvals.by_user), ("group", approvals.by_group), ("department", approvals.by_department)
            )
        },
        "networks": sorted(item.id for item in approvals.networks),
        "rules": (state.rules.rules, state.rules.by_host),
        "directory": state.directory.people,
        "exemptions": state.exemptions,
    }


async def seed(store: PolicyStore) -> None:
    """Something of every kind, so each change is applied on top of a non-empty state."""
    await store.add_hosts("webmail", ["mail.example", "webmail.example"])
    await store.save_approval(approval("A1"), "admin", "grant", None)
    await store.add_rule("allow", "intranet.example")
    await store.add_exemption("10.1.0.0/16", frozenset({"webmail"}), "devices", "admin")
    await store.write_directory([Person("alice", "Finance", groups=frozenset({"g1"}))], "admin", merge=False)


async def revoke_a1(store: PolicyStore) -> None:
    before = await store.get_approval("A1")
    await store.save_approval(before.revoked("hfin", NOW, "left"), "admin", "revoke", before)


async def import_many(store: PolicyStore) -> None:
    await store.save_approvals([(approval(f"A{n}", f"user{n}"), None) for n in range(10, 150)], "admin", "import")


async def remove_first_rule(store: PolicyStore) -> None:
    await store.remove_rule((await store.list_rules())[0].id)


async def remove_first_exemption(store: PolicyStore) -> None:
    await store.remove_exemption((await store.exemptions())[0].id, "admin")


WRITES: list[tuple[str, Write, type]] = [
    ("add hosts", lambda store: store.add_hosts("webmail", ["new.example", "mail.example"]), HostsAdded),
    ("import categories", lambda store: store.import_categories({"cloud": [["box.example"]]}, replace=True),
     CategoriesSwitched),
    ("grant", lambda store: store.save_approval(approval("A2", "bob"), "admin", "grant", None), ApprovalsSaved),
    ("revoke", revoke_a1, ApprovalsSaved),
    ("import a few", lambda store: store.save_approvals(
        [(approval(f"A{n}", f"user{n}"), None) for n in range(10, 15)], "admin", "import"), ApprovalsSaved),
    ("import many", import_many, ApprovalsReloaded),
    ("load directory", lambda store: store.write_directory(
        [Person("bob", "Legal", heads=frozenset({"Legal"}))], "admin", merge=False), DirectoryChanged),
    ("merge directory", lambda store: store.write_directory(
        [Person("carol", "Finance")], "admin", merge=True), DirectoryChanged),
    ("add exemption", lambda store: store.add_exemption("192.0.2.0/24", frozenset(), "", "admin"), ExemptionsChanged),
    ("remove exemption", remove_first_exemption, ExemptionsChanged),
    ("add rule", lambda store: store.add_rule("category", "x.example", "/mail", "webmail"), RulesChanged),
    ("remove rule", remove_first_rule, RulesChanged),
]


async def next_change(feed: Any) -> Change:
    for _ in range(100):
        change = await feed.get(0.1)
        if change is not None:
            return change  # type: ignore[no-any-return]
    raise AssertionError("no change announced")


@pytest.mark.parametrize(("write", "expected"), [(w, e) for _, w, e in WRITES], ids=[name for name, _, _ in WRITES])
def test_a_change_applied_gives_the_state_a_fresh_load_gives(redis_url: str, write: Write, expected: type) -> None:
    async def scenario() -> tuple[Change, dict[str, Any], dict[str, Any], int]:
        store = PolicyStore.from_url(redis_url)
        try:
            await seed(store)
            sync = PolicySync(store, check_interval=3600)
            await sync.resync("test")
            async with store.changes() as feed:
                await write(store)
                change = await next_change(feed)
                await sync.apply(change)
            return change, snapshot(sync.state), snapshot(await store.load_state()), sync.resyncs
        finally:
            await store.close()

    change, applied, fresh, resyncs = asyncio.run(scenario())
    assert type(change) is expected
    assert applied == fresh
    assert resyncs == (2 if expected is CategoriesSwitched else 1)  # only a category switch reloads it all


class NoRedis:
    """A client that fails on any use: the sync's store after its first load."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"the sync used Redis ({name}) to apply a change")


def test_a_grant_and_a_revoke_are_applied_without_reading_redis(redis_url: str) -> None:
    async def scenario() -> tuple[dict[str, Any], dict[str, Any]]:
        writer = PolicyStore.from_url(redis_url)
        follower = PolicyStore.from_url(redis_url)
        try:
            await seed(writer)
            sync = PolicySync(follower, check_interval=3600)
            await sync.resync("test")
            follower.client = NoRedis()  # type: ignore[assignment]
            async with writer.changes() as feed:
                await writer.save_approval(approval("A2", "bob"), "admin", "grant", None)
                await sync.apply(await next_change(feed))
                await revoke_a1(writer)
                await sync.apply(await next_change(feed))
            return snapshot(sync.state), snapshot(await writer.load_state())
        finally:
            await writer.close()

    applied, fresh = asyncio.run(scenario())
    assert applied == fresh
    assert applied["approvals"]["A1"].status == "revoked"
    assert applied["approvals"]["A2"].subject == "bob"


def test_an_unreadable_message_makes_the_sync_reload(redis_url: str, sync_redis: redis.Redis) -> None:
    async def scenario() -> tuple[int, int]:
        store = PolicyStore.from_url(redis_url)
        sync = PolicySync(store, check_interval=3600)
        follower = asyncio.create_task(sync.run())
        try:
            await asyncio.wait_for(sync.loaded.wait(), 10)
            await store.add_hosts("webmail", ["mail.example"])  # version 1, applied from its message
            sync_redis.incr("clearance:policy:version")
            sync_redis.publish("clearance:changes", '2 {"kind": "from-the-future"}')
            for _ in range(200):
                if sync.resyncs == 2:
                    break
                await asyncio.sleep(0.05)
            return sync.resyncs, sync.version
        finally:
            follower.cancel()
            await asyncio.gather(follower, return_exceptions=True)
            await store.close()

    assert asyncio.run(scenario()) == (2, 3)  # version 1: the sync's first load initialised the empty store


def test_removing_a_rule_or_exemption_that_is_not_there_is_a_store_error(redis_url: str) -> None:
    async def scenario() -> None:
        store = PolicyStore.from_url(redis_url)
        try:
            with pytest.raises(StoreError, match="no rule with id 'R9'"):
                await store.remove_rule("R9")
            with pytest.raises(StoreError, match="no exemption with id 'E9'"):
                await store.remove_exemption("E9", "admin")
            assert await store.version() == 0
        finally:
            await store.close()

    asyncio.run(scenario())

