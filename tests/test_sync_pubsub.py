"""The pub/sub path on its own: every kind of change reaches a PolicySync through its message alone.

A serve process also polls `policy:version` (every 0.5 s) and reloads everything when it moved without a
message, so in tests with 1-2 s deadlines a change written without its PUBLISH still shows up, just later.
Here the poll is an hour away: a change that is not announced is never seen, and the test fails. Each change
is awaited before the next is made, so a lost message cannot be repaired by the gap the next one reveals;
and at the end the sync must not have reloaded at all since its start.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta

from icap_server.service.sync import PolicySync
from policy.approvals import Approval, ApprovalStatus, SubjectKind
from policy.directory import Person
from policy.state import PolicyState
from policy.store import PolicyStore
from tests.support.waiting import wait_until_async

NEVER = 3600.0  # the version poll: out of reach of this test
DEADLINE = 2.0  # a message arrives within milliseconds; the deadline only bounds a failure


@contextlib.asynccontextmanager
async def following(
    redis_url: str, check_interval: float = NEVER, seed: dict[str, tuple[str, ...]] | None = None
) -> AsyncIterator[tuple[PolicyStore, PolicySync]]:
    """A store to write through, and a PolicySync following it from its own connection, running as a task."""
    writer = PolicyStore.from_url(redis_url)
    reader = PolicyStore.from_url(redis_url)
    sync = PolicySync(reader, check_interval=check_interval, seed=seed)
    task = asyncio.create_task(sync.run())
    try:
        await asyncio.wait_for(sync.loaded.wait(), timeout=10)
        yield writer, sync
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await reader.close()
        await writer.close()


async def reflects(sync: PolicySync, check: Callable[[PolicyState], bool], what: str) -> None:
    await wait_until_async(lambda: check(sync.state), timeout=DEADLINE, what=what)


async def _changes(writer: PolicyStore, sync: PolicySync) -> None:
    await writer.add_hosts("webmail", ["mail.example"])
    await reflects(sync, lambda s: s.categories.match("x.mail.example").entry == "mail.example", "hosts added")

    approval = _approval(await writer.next_approval_id())
    await writer.save_approvals([(approval, None)], actor="test", action="grant")
    await reflects(sync, lambda s: bool(s.candidates("alice", None)), "approval granted")

    revoked = approval.revoked("head", datetime.now(UTC), "test")
    await writer.save_approvals([(revoked, approval)], actor="test", action="revoke")
    await reflects(
        sync,
        lambda s: all(a.status is ApprovalStatus.REVOKED for a in s.candidates("alice", None)),
        "approval revoked",
    )

    rule = await writer.add_rule("allow", "mail.example", "/public")
    await reflects(sync, lambda s: s.rules.match("mail.example", "/public/x") == rule, "rule added")
    await writer.remove_rule(rule.id)
    await reflects(sync, lambda s: s.rules.match("mail.example", "/public/x") is None, "rule removed")

    exemption = await writer.add_exemption("10.9.0.0/16", frozenset({"webmail"}), "lab", actor="test")
    await reflects(sync, lambda s: any(e.id == exemption.id for e in s.exemptions), "exemption added")
    await writer.remove_exemption(exemption.id, actor="test")
    await reflects(sync, lambda s: not any(e.id == exemption.id for e in s.exemptions), "exemption removed")

    people = [Person(user="alice", department="Finance", heads=frozenset({"head"}))]
    await writer.write_directory(people, actor="test", merge=False)
    await reflects(sync, lambda s: s.directory.person("alice") is not None, "directory loaded")


def _approval(approval_id: str) -> Approval:
    return Approval(
        id=approval_id, subject_kind=SubjectKind.USER, subject="alice", category="webmail", host=None,
        department="Finance", approver="head", justification="pub/sub test", created_by="admin",
        created_at=datetime.now(UTC), valid_from=datetime.now(UTC) - timedelta(minutes=1),
        valid_until=datetime.now(UTC) + timedelta(days=1), review_due=datetime.now(UTC) + timedelta(days=1),
    )


async def _follow_every_change(redis_url: str) -> None:
    async with following(redis_url) as (writer, sync):
        await _changes(writer, sync)
        assert sync.resyncs == 1, "a reload stood in for a message"
        assert sync.version == await writer.version()


def test_every_change_arrives_by_its_message(redis_url: str) -> None:
    asyncio.run(_follow_every_change(redis_url))
