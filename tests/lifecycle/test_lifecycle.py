"""The approval lifecycle through the real CLI against a real Redis, under the real approval rules.

The default test config switches the department-head rule off; these tests write their own config with the
rules as shipped (require_department_head, 20-character justifications, 180 days at most, review every 90).
Reviews of overdue approvals are in test_lifecycle_review.py; fixtures and helpers in conftest.py.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path

import pytest
import redis

from tests.conftest import CLI
from tests.lifecycle.conftest import (
    DIRECTORY,
    PREFIX,
    WHY,
    assert_refused,
    explain,
    grant,
    local_today,
    show,
    snapshot,
    stored,
)

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
