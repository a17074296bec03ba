"""Reviews of the approval lifecycle: an overdue review suspends (or, in warn mode, flags) an approval, and
only a head or delegate of its department may keep or revoke it on review. Real CLI, Redis and server.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import redis

from policy.approvals import Approval, SubjectKind
from policy.store import PolicyStore
from tests.conftest import CLI, StartServer
from tests.lifecycle.conftest import (
    RULES,
    WHY,
    ZONE,
    assert_refused,
    explain,
    grant,
    local_today,
    show,
    snapshot,
    stored,
)
from tests.support.icap_client import exchange, reqmod, wait_until_synced


def overdue_grant(admin: CLI, user: str = "alice", category: str = "webmail") -> str:
    """Valid from 100 days ago for 120 days: the 90-day review fell due 10 days ago."""
    return grant(
        admin, "--user", user, "--category", category, days="120",
        **{"from": (local_today() - timedelta(days=100)).isoformat()},
    )


def overdue_approval(redis_url: str, user: str = "alice", category: str = "webmail") -> str:
    """Written as a store would hold it: granted a day ago for 170 days, its review due an hour ago."""
    now = datetime.now(UTC)

    async def save() -> str:
        store = PolicyStore.from_url(redis_url)
        try:
            approval = Approval(
                id=await store.next_approval_id(),
                subject_kind=SubjectKind.USER,
                subject=user,
                category=category,
                host=None,
                department="Finance",
                approver="hfin",
                justification=WHY,
                created_by="test",
                created_at=now - timedelta(days=1),
                valid_from=now - timedelta(days=1),
                valid_until=now + timedelta(days=169),
                review_due=now - timedelta(hours=1),
            )
            await store.save_approval(approval, "test", "grant", None)
            return approval.id
        finally:
            await store.close()

    return asyncio.run(save())


def test_review_overdue_suspends_and_a_heads_review_keeps_or_revokes(
    org: CLI, sync_redis: redis.Redis, redis_url: str, warn_config: Path
) -> None:
    kept = overdue_approval(redis_url)
    revoked = overdue_grant(org, "bob")  # through the CLI: --from 100 days back, the review was due 10 days ago
    now = datetime.now(UTC)
    assert datetime.fromisoformat(stored(sync_redis, revoked)["review_due"]) < now - timedelta(days=9)

    # on_review_overdue: suspend (the default) — no traffic until someone reviews it
    for user, approval_id in (("alice", kept), ("bob", revoked)):
        found = explain(org, "http://mail.google.com/", user=user)
        assert (found["decision"], found["reason"]) == ("block", "approval-suspended"), found
        assert found["approval"] == approval_id
        assert show(org, approval_id)["state"] == "suspended"
    listed = org("approvals", "list", "--state", "suspended").stdout
    assert kept in listed and revoked in listed

    # on_review_overdue: warn — it passes, and is flagged as overdue
    passing = org("explain", "http://mail.google.com/", "--user", "alice", config=warn_config).stdout
    assert "decision:  pass" in passing and f"approval:  {kept} (user alice, category webmail)" in passing
    overdue = org("approvals", "list", "--state", "review-overdue", config=warn_config).stdout
    assert kept in overdue and revoked in overdue
    assert show(org, kept, warn_config)["state"] == "review-overdue"

    # someone who is neither head nor delegate of Finance may not review
    before = snapshot(sync_redis)
    for reviewer in ("bob", "hit"):
        result = org("approvals", "review", kept, "--by", reviewer, "--keep", check=False)
        assert_refused(result, f"'{reviewer}' may not review approvals for Finance")
        assert snapshot(sync_redis) == before
    assert show(org, kept)["state"] == "suspended"

    # the head keeps it: it passes again and the next review is 90 days on
    assert org("approvals", "review", kept, "--by", "hfin", "--keep", "--note", "still needed").stdout.strip() == (
        f"{kept} active"
    )
    found = explain(org, "http://mail.google.com/", user="alice")
    assert (found["decision"], found["reason"], found["approval"].split()[0]) == ("pass", "approved", kept)
    record = stored(sync_redis, kept)
    due = datetime.fromisoformat(record["review_due"])
    assert abs(due - (datetime.now(UTC) + timedelta(days=90))) < timedelta(minutes=5)
    assert [(r["by"], r["decision"], r["note"]) for r in record["reviews"]] == [("hfin", "keep", "still needed")]
    shown = show(org, kept)
    assert shown["state"] == "active"
    assert shown["review due"] == due.astimezone(ZONE).strftime("%Y-%m-%d %H:%M")
    assert shown["review"].endswith("keep by hfin: still needed")

    # the delegate revokes the other one on review
    assert org("approvals", "review", revoked, "--by", "dfin", "--revoke").stdout.strip() == f"{revoked} revoked"
    found = explain(org, "http://mail.google.com/", user="bob")
    assert (found["decision"], found["reason"], found["approval"]) == ("block", "approval-revoked", revoked)
    record = stored(sync_redis, revoked)
    assert (record["status"], record["revoked_by"]) == ("revoked", "dfin")
    result = org("approvals", "review", revoked, "--by", "hfin", "--keep", check=False)
    assert_refused(result, "was revoked by dfin")


def test_overdue_approval_in_warn_mode_passes_the_server_and_is_logged_as_overdue(
    org: CLI, start_icap_server: StartServer, redis_url: str
) -> None:
    approval_id = overdue_grant(org)
    server = start_icap_server(RULES.format(overdue="warn"))
    wait_until_synced(server.port, redis_url)
    (answer,) = exchange(server.port, reqmod("http://mail.google.com/inbox", user="alice"))
    assert answer.startswith(b"ICAP/1.0 204"), answer[:200]
    record = next_icap_record(server, "mail.google.com")
    assert (record["decision"], record["reason"], record["approval_id"]) == ("pass", "approved", approval_id)
    assert record["review_overdue"] is True


def next_icap_record(server: Any, host: str, timeout: float = 5.0) -> dict[str, Any]:
    import time

    deadline = time.monotonic() + timeout
    while True:
        records = [r for r in server.log_lines() if r.get("event") == "icap" and r.get("host") == host]
        if records:
            record: dict[str, Any] = records[-1]
            return record
        assert time.monotonic() < deadline, server.log_path.read_text()[-2000:]
        time.sleep(0.05)
