"""The approval lifecycle through the real CLI against a real Redis, under the real approval rules.

The default test config switches the department-head rule off; these tests write their own config with the
rules as shipped (require_department_head, 20-character justifications, 180 days at most, review every 90).
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import redis

from policy.approvals import Approval, SubjectKind
from policy.store import PolicyStore
from tests.conftest import CLI, StartServer
from tests.support.icap_client import exchange, reqmod, wait_until_synced

ZONE = ZoneInfo("Asia/Hong_Kong")  # policy.timezone's default: --from/--until dates are local days
PREFIX = "clearance:"
WHY = "Exchanging documents with an overseas partner agency"

RULES = (
    "policy:\n  load_default_lists: false\n"
    "approvals:\n"
    "  require_department_head: true\n"
    "  min_justification_chars: 20\n"
    "  max_validity_days: 180\n"
    "  review_interval_days: 90\n"
    "  on_review_overdue: {overdue}\n"
    "logging:\n  format: json\n"
)

DIRECTORY = """user,name,department,groups,heads,delegates
alice,Alice Chan,Finance,finance-staff;travel,,
bob,Bob Lee,Finance,finance-staff,,
hfin,Henry Fung,Finance,finance-staff,Finance,
dfin,Dora Fok,Finance,,,Finance
carol,Carol Wong,IT,travel,,
hit,Ivy Tam,IT,,IT,
"""


@pytest.fixture
def rules_config(tmp_path: Path) -> Path:
    path = tmp_path / "rules.yaml"
    path.write_text(RULES.format(overdue="suspend"), encoding="utf-8")
    return path


@pytest.fixture
def warn_config(tmp_path: Path) -> Path:
    path = tmp_path / "rules-warn.yaml"
    path.write_text(RULES.format(overdue="warn"), encoding="utf-8")
    return path


@pytest.fixture
def admin(cli: CLI, rules_config: Path) -> CLI:
    """`clearance --config rules.yaml ARGS…`."""

    def run(*args: str, check: bool = True, config: Path | None = None) -> Any:
        return cli("--config", str(config or rules_config), *args, check=check)

    return run


@pytest.fixture
def org(admin: CLI, tmp_path: Path) -> CLI:
    """The directory above loaded, and one host in each restricted category."""
    directory = tmp_path / "directory.csv"
    directory.write_text(DIRECTORY, encoding="utf-8")
    admin("directory", "load", str(directory))
    admin("categories", "add", "webmail", "mail.google.com")
    admin("categories", "add", "web-im", "web.whatsapp.com", "web.telegram.org")
    admin("categories", "add", "cloud-storage", "drive.google.com")
    return admin


def grant(admin: CLI, *args: str, approver: str = "hfin", days: str = "30", **options: str) -> str:
    extra = [item for name, value in options.items() for item in (f"--{name.replace('_', '-')}", value)]
    result = admin(
        "approvals", "grant", *args, *extra, "--days", days, "--approver", approver, "--justification", WHY
    )
    approval_id: str = result.stdout.strip()
    assert approval_id.startswith("A") and "\n" not in approval_id, result.stdout
    return approval_id


def explain(admin: CLI, url: str, user: str | None = None, client_ip: str | None = None) -> dict[str, str]:
    args = ["explain", url]
    if user:
        args += ["--user", user]
    if client_ip:
        args += ["--client-ip", client_ip]
    lines = admin(*args).stdout.splitlines()
    return {label.strip(): value.strip() for label, _, value in (line.partition(":") for line in lines)}


def show(admin: CLI, approval_id: str, config: Path | None = None) -> dict[str, str]:
    fields: dict[str, str] = {}
    for line in admin("approvals", "show", approval_id, config=config).stdout.splitlines():
        label, _, value = line.partition(":")
        fields.setdefault(label.strip(), value.strip())
    return fields


def stored(client: redis.Redis, approval_id: str) -> dict[str, Any]:
    text = client.hget(PREFIX + "approvals", approval_id)
    assert text, f"{approval_id} is not in Redis"
    record: dict[str, Any] = json.loads(text)
    return record


def snapshot(client: redis.Redis) -> dict[str, Any]:
    """Everything a refused command must leave as it was."""
    return {
        "approvals": client.hgetall(PREFIX + "approvals"),
        "directory": client.hgetall(PREFIX + "directory"),
        "seq": client.get(PREFIX + "approval:seq"),
        "version": client.get(PREFIX + "policy:version"),
    }


def assert_refused(result: Any, *fragments: str) -> None:
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    assert result.stderr.startswith("clearance: ") and result.stderr.count("\n") == 1, result.stderr
    for fragment in fragments:
        assert fragment in result.stderr, (fragment, result.stderr)
    assert not result.stdout.strip(), result.stdout


# ---- 1. the directory -----------------------------------------------------------------------


def test_directory_full_load_replaces_merge_updates_and_show_prints_roles(
    admin: CLI, tmp_path: Path, sync_redis: redis.Redis
) -> None:
    first = tmp_path / "first.csv"
    first.write_text(DIRECTORY, encoding="utf-8")
    assert admin("directory", "load", str(first)).stdout.strip() == (
        "6 people loaded (replacing the directory); the directory has 6"
    )

    shown = admin("directory", "show", "CORP\\Alice").stdout  # names are normalised like the proxy's
    assert "user:       alice" in shown
    assert "name:       Alice Chan" in shown
    assert "department: Finance (heads: hfin; delegates: dfin)" in shown
    assert "groups:     finance-staff, travel" in shown
    assert "heads:      -" in shown
    head = admin("directory", "show", "hfin").stdout
    assert "heads:      Finance" in head and "delegate:   -" in head
    delegate = admin("directory", "show", "dfin").stdout
    assert "delegate:   Finance" in delegate and "groups:     -" in delegate

    # A full load is the whole directory: bob is not in it any more, alice moved.
    second = tmp_path / "second.csv"
    second.write_text(
        "user,name,department,groups,heads,delegates\n"
        "alice,Alice Chan,IT,,,\n"
        "hfin,Henry Fung,Finance,,Finance,\n"
        "hit,Ivy Tam,IT,,IT,\n",
        encoding="utf-8",
    )
    assert "the directory has 3" in admin("directory", "load", str(second)).stdout
    assert sorted(sync_redis.hkeys(PREFIX + "directory")) == ["alice", "hfin", "hit"]
    gone = admin("directory", "show", "bob", check=False)
    assert gone.returncode == 2 and "'bob' is not in the directory" in gone.stderr
    assert "department: IT (heads: hit; delegates: -)" in admin("directory", "show", "alice").stdout

    # --merge updates its rows and keeps everyone else.
    merge = tmp_path / "merge.csv"
    merge.write_text(
        "user,department,groups\nalice,Finance,travel\ndave,Finance,finance-staff\n", encoding="utf-8"
    )
    assert admin("directory", "load", "--merge", str(merge)).stdout.strip() == (
        "2 people merged; the directory has 4"
    )
    assert sorted(sync_redis.hkeys(PREFIX + "directory")) == ["alice", "dave", "hfin", "hit"]
    alice = admin("directory", "show", "alice").stdout
    assert "department: Finance (heads: hfin; delegates: -)" in alice
    assert "groups:     travel" in alice
    assert "department: IT (heads: hit; delegates: -)" in admin("directory", "show", "hit").stdout


@pytest.mark.parametrize(
    ("content", "line", "reason"),
    [
        ("user,name,department,office\nalice,Alice,Finance,7F\n", 1, "unknown column(s) office"),
        ("user,name,department\nalice,Alice,Finance\nbob,Bob,IT\nAlice,Alice Again,IT\n", 4,
         "user 'alice' already appears on line 2"),
        ("user,name,department\nalice,Alice,Finance\nbob,Bob,\n", 3, "invalid department ''"),
        ("user,name,department,groups\nalice,Alice,Finance,travel\nbob,Bob,Finance\n", 3,
         "3 fields, the header has 4"),
        ("user,name\nalice,Alice\n", 1, "missing column(s) department"),
    ],
    ids=["unknown-column", "duplicate-user", "empty-department", "field-count", "missing-column"],
)
def test_bad_directory_csv_names_file_and_line_and_changes_nothing(
    admin: CLI, tmp_path: Path, sync_redis: redis.Redis, content: str, line: int, reason: str
) -> None:
    good = tmp_path / "good.csv"
    good.write_text(DIRECTORY, encoding="utf-8")
    admin("directory", "load", str(good))
    before = snapshot(sync_redis)
    bad = tmp_path / "bad.csv"
    bad.write_text(content, encoding="utf-8")
    for mode in ((), ("--merge",)):
        result = admin("directory", "load", *mode, str(bad), check=False)
        assert_refused(result, f"{bad}:{line}: {reason}")
        assert snapshot(sync_redis) == before


# ---- 2. subjects, scopes, and which approval applies -------------------------------------------


def test_user_group_department_and_network_grants_and_the_most_specific_wins(
    org: CLI, sync_redis: redis.Redis
) -> None:
    whatsapp = "http://web.whatsapp.com/"
    nothing = explain(org, whatsapp, user="alice")
    assert (nothing["decision"], nothing["reason"], nothing["approval"]) == ("block", "no-approval", "-")

    department = grant(org, "--department", "Finance", "--category", "web-im")
    for user in ("alice", "bob"):
        found = explain(org, whatsapp, user=user)
        assert (found["decision"], found["reason"]) == ("pass", "approved"), found
        assert found["approval"] == f"{department} (department Finance, category web-im)"
    assert explain(org, whatsapp, user="carol")["decision"] == "block"  # IT is not Finance

    group = grant(org, "--group", "travel", "--host", "web.whatsapp.com", owner_department="Finance")
    assert explain(org, whatsapp, user="alice")["approval"] == f"{group} (group travel, host web.whatsapp.com)"
    assert explain(org, whatsapp, user="carol")["approval"] == f"{group} (group travel, host web.whatsapp.com)"
    assert explain(org, whatsapp, user="bob")["approval"].startswith(f"{department} (department Finance")
    # a host approval covers that service only, not the rest of its category
    telegram = explain(org, "http://web.telegram.org/", user="carol")
    assert (telegram["decision"], telegram["category"]) == ("block", "web-im (list entry web.telegram.org)")

    personal_category = grant(org, "--user", "alice", "--category", "web-im")
    assert explain(org, whatsapp, user="alice")["approval"] == f"{personal_category} (user alice, category web-im)"
    personal_host = grant(org, "--user", "alice", "--host", "web.whatsapp.com")
    assert explain(org, whatsapp, user="alice")["approval"] == f"{personal_host} (user alice, host web.whatsapp.com)"
    # ... and the other services of the category still come from the personal category approval
    assert explain(org, "http://web.telegram.org/", user="alice")["approval"].startswith(personal_category)

    webmail = grant(org, "--user", "alice", "--category", "webmail")
    found = explain(org, "http://mail.google.com/mail/u/0", user="alice")
    assert found["approval"] == f"{webmail} (user alice, category webmail)"
    assert explain(org, "http://mail.google.com/", user="bob")["reason"] == "no-approval"

    network = grant(
        org, "--network", "10.20.30.0/24", "--category", "cloud-storage", approver="hit", owner_department="IT"
    )
    drive = "http://drive.google.com/"
    lab = explain(org, drive, user="visitor", client_ip="10.20.30.7")
    assert (lab["decision"], lab["approval"]) == ("pass", f"{network} (network 10.20.30.0/24, category cloud-storage)")
    assert lab["client ip"] == "10.20.30.7"
    assert explain(org, drive, user="visitor", client_ip="10.20.31.7")["decision"] == "block"
    assert explain(org, drive, client_ip="10.20.30.8")["decision"] == "pass"  # no user needed for a network
    # a personal approval still explains alice's pass when she is in the lab
    lab_alice = explain(org, whatsapp, user="alice", client_ip="10.20.30.7")
    assert lab_alice["approval"].startswith(f"{personal_host} (user alice")

    records = [json.loads(text) for text in sync_redis.hvals(PREFIX + "approvals")]
    assert {(r["subject_kind"], r["subject"], r["department"]) for r in records} == {
        ("department", "Finance", "Finance"),
        ("group", "travel", "Finance"),
        ("user", "alice", "Finance"),
        ("network", "10.20.30.0/24", "IT"),
    }


# ---- 3. who may approve ----------------------------------------------------------------------


def test_only_a_head_or_delegate_of_the_department_may_approve(org: CLI, sync_redis: redis.Redis) -> None:
    before = snapshot(sync_redis)
    base = ("approvals", "grant", "--category", "webmail", "--days", "30", "--justification", WHY)
    refused = [
        (("--user", "alice", "--approver", "bob"), "'bob' may not approve for Finance: only its head or a delegate"),
        (("--user", "alice", "--approver", "hit"), "'hit' may not approve for Finance"),  # a head, of IT
        (("--user", "alice", "--approver", "nobody"), "'nobody' may not approve for Finance"),
        (("--department", "Finance", "--approver", "alice"), "'alice' may not approve for Finance"),
        (("--group", "travel", "--owner-department", "IT", "--approver", "hfin"), "'hfin' may not approve for IT"),
        (("--group", "travel", "--approver", "hfin"), "needs --department"),
        (("--user", "zoe", "--approver", "hfin"), "'zoe' is not in the directory"),
        (("--user", "alice", "--owner-department", "IT", "--approver", "hit"), "alice is in Finance, not IT"),
    ]
    for args, message in refused:
        result = org(*base[:2], *args, *base[2:], check=False)
        assert_refused(result, message)
        assert snapshot(sync_redis) == before, args
    assert sync_redis.hlen(PREFIX + "approvals") == 0
    assert "(dfin, hfin)" in org(*base[:2], "--user", "bob", "--approver", "bob", *base[2:], check=False).stderr

    by_delegate = grant(org, "--user", "alice", "--category", "webmail", approver="dfin")
    record = stored(sync_redis, by_delegate)
    assert (record["approver"], record["department"], record["subject"]) == ("dfin", "Finance", "alice")
    assert explain(org, "http://mail.google.com/", user="alice")["decision"] == "pass"
    shown = show(org, by_delegate)
    assert (shown["approver"], shown["department"], shown["state"]) == ("dfin", "Finance", "active")


def test_justification_must_state_a_genuine_need(org: CLI, sync_redis: redis.Redis) -> None:
    for text, message in (("test", "placeholder"), ("for work", "at least 20 characters")):
        result = org(
            "approvals", "grant", "--user", "alice", "--category", "webmail", "--days", "30",
            "--approver", "hfin", "--justification", text, check=False,
        )
        assert_refused(result, message)
    assert sync_redis.hlen(PREFIX + "approvals") == 0


# ---- 4. validity and review --------------------------------------------------------------------


def local_today() -> date:
    return datetime.now(ZONE).date()


def test_validity_longer_than_the_maximum_is_refused(org: CLI, sync_redis: redis.Redis) -> None:
    before = snapshot(sync_redis)
    too_long = [
        ("--days", "181"),
        ("--days", "365"),
        ("--until", (local_today() + timedelta(days=200)).isoformat()),
        ("--from", (local_today() + timedelta(days=10)).isoformat(), "--days", "200"),
    ]
    for args in too_long:
        result = org(
            "approvals", "grant", "--user", "alice", "--category", "webmail", *args,
            "--approver", "hfin", "--justification", WHY, check=False,
        )
        assert_refused(result, "exceeds the maximum of 180 (approvals.max_validity_days)")
        assert snapshot(sync_redis) == before, args

    longest = grant(org, "--user", "alice", "--category", "webmail", days="180")
    record = stored(sync_redis, longest)
    valid_from = datetime.fromisoformat(record["valid_from"])
    assert datetime.fromisoformat(record["valid_until"]) - valid_from == timedelta(days=180)
    assert datetime.fromisoformat(record["review_due"]) - valid_from == timedelta(days=90)


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
