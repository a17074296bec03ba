"""`clearance report` against a real Redis: every person with access, once per approval, in CSV, JSON and tables.

The approvals are granted, reviewed and revoked through the CLI; usage is written through the store, as the
filter's usage recorder writes it; old records (a revocation 60 and 120 days ago) are saved through the store.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from policy.access_report import COLUMNS
from policy.approvals import Approval, SubjectKind
from policy.store import PolicyStore
from tests.conftest import CLI
from tests.conftest import as_actor as admin

PREFIX = "clearance:"
DIRECTORY = """user,name,department,groups,heads,delegates
alice,Alice Chan,Finance,finance-staff,,
bob,Bob Lee,Finance,finance-staff,,
hfin,Henry Fung,Finance,,Finance,
carol,Carol Wong,IT,it-staff,,
dave,Dave Ho,IT,,,
hit,Ivy Tam,IT,,IT,
"""
REASON = "Liaison with the overseas partner office"


def grant(run: CLI, approver: str, *args: str) -> str:
    approval_id: str = run("approvals", "grant", *args, "--approver", approver, "--days", "100").stdout.strip()
    return approval_id


def seed(cli: CLI, redis_url: str, tmp_path: Path) -> dict[str, str]:
    """Finance: a user, a group of two (one of them the user again), a network; IT: a user and a department."""
    run = admin(cli)
    path = tmp_path / "directory.csv"
    path.write_text(DIRECTORY, encoding="utf-8")
    run("directory", "load", str(path))
    ids = {
        "user": grant(run, "hfin", "--user", "alice", "--category", "webmail", "--reason", REASON, "--ticket", "SD-1"),
        "group": grant(run, "hfin", "--group", "finance-staff", "--host", "web.whatsapp.com", "--owner-department",
                       "Finance", "--reason", "Customers write to the team on WhatsApp", "--ticket", "SD-2"),
        "network": grant(run, "hfin", "--network", "10.20.30.0/24", "--category", "cloud-storage",
                         "--owner-department", "Finance", "--reason", "The scanning room uploads to the auditor"),
        "revoked": grant(run, "hfin", "--user", "bob", "--category", "webmail", "--reason", REASON),
        "it_user": grant(run, "hit", "--user", "carol", "--category", "web-im", "--reason", REASON),
        "it_department": grant(run, "hit", "--department", "IT", "--category", "webmail", "--reason", REASON),
    }  # fmt: skip
    run("approvals", "review", ids["group"], "--by", "hfin", "--keep", "--note", "still answering customers")
    run("approvals", "revoke", ids["revoked"], "--by", "hfin", "--reason", "moved to the audit team")
    now = datetime.now(UTC)
    old = Approval(
        id="A20", subject_kind=SubjectKind.USER, subject="bob", category="web-im", host=None, department="Finance",
        approver="hfin", justification=REASON, created_by="alice.admin", created_at=now - timedelta(days=200),
        valid_from=now - timedelta(days=200), valid_until=now + timedelta(days=100), review_due=now,
    )  # fmt: skip
    recent = old.revoked("hfin", now - timedelta(days=60), "project closed")  # in the default 90 days
    ancient = replace(old, id="A21").revoked("hfin", now - timedelta(days=120), "long ago")  # before them

    async def write() -> None:
        store = PolicyStore.from_url(redis_url, PREFIX)
        try:
            await store.save_approval(recent, "alice.admin", "grant", None)
            await store.save_approval(ancient, "alice.admin", "grant", None)
            await store.record_usage(
                {ids["user"]: (5, now - timedelta(hours=3)), ids["group"]: (7, now - timedelta(days=2))}
            )
        finally:
            await store.close()

    asyncio.run(write())
    return ids | {"recent": recent.id, "ancient": ancient.id}


def cell(value: Any) -> str:
    """A JSON value as the CSV writes it (written out here, not taken from the code under test)."""
    if value is None:
        return ""
    return ";".join(value) if isinstance(value, list) else str(value)


def test_the_report_lists_each_covered_person_once_per_approval(cli: CLI, redis_url: str, tmp_path: Path) -> None:
    ids = seed(cli, redis_url, tmp_path)
    text = cli("report", "--department", "Finance", "--format", "csv").stdout
    assert text.splitlines()[0] == ",".join(COLUMNS)  # one header, the documented columns
    rows = list(csv.DictReader(io.StringIO(text)))
    assert [(row["section"], row["person"], row["approval"]) for row in rows] == [
        ("access", "alice", ids["user"]),
        ("access", "alice", ids["group"]),  # alice again: a second approval covers her
        ("access", "bob", ids["group"]),
        ("access", "", ids["network"]),
        ("revoked", "bob", ids["revoked"]),
        ("revoked", "bob", ids["recent"]),
    ]
    assert {row["department"] for row in rows} == {"Finance"}  # IT's carol, dave and hit are not here
    by_key = {(row["person"], row["approval"]): row for row in rows}

    user = by_key["alice", ids["user"]]
    assert (user["subject_kind"], user["subject"], user["scope_kind"], user["scope"]) == (
        "user", "alice", "category", "webmail"
    )  # fmt: skip
    assert (user["person_name"], user["person_department"], user["approver"]) == ("Alice Chan", "Finance", "hfin")
    assert (user["justification"], user["ticket"], user["uses"], user["state"]) == (REASON, "SD-1", "5", "active")
    assert user["last_used"].endswith("+08:00") and user["last_review_by"] == "" and user["flags"] == ""

    for person in ("alice", "bob"):
        member = by_key[person, ids["group"]]
        assert (member["subject_kind"], member["subject"], member["scope_kind"], member["scope"]) == (
            "group", "finance-staff", "host", "web.whatsapp.com"
        )  # fmt: skip
        assert member["justification"] == "Customers write to the team on WhatsApp" and member["ticket"] == "SD-2"
        assert (member["last_review_by"], member["last_review_decision"]) == ("hfin", "keep")
        assert member["last_review_note"] == "still answering customers" and member["last_review_at"]
        assert member["uses"] == "7" and member["last_used"]  # the approval's use, the whole group's

    network = by_key["", ids["network"]]
    assert (network["subject_kind"], network["subject"], network["person_name"]) == ("network", "10.20.30.0/24", "")
    assert "no named person" in network["note"] and network["uses"] == "0" and network["last_used"] == ""

    revoked = by_key["bob", ids["revoked"]]
    assert (revoked["state"], revoked["revoked_by"], revoked["revoke_reason"]) == (
        "revoked", "hfin", "moved to the audit team"
    )  # fmt: skip
    assert revoked["revoked_at"] and by_key["bob", ids["recent"]]["revoke_reason"] == "project closed"
    assert ids["ancient"] not in {row["approval"] for row in rows}  # revoked 120 days ago: before the period

    report = json.loads(cli("report", "--department", "Finance", "--format", "json").stdout)
    assert report["columns"] == list(COLUMNS) and report["since"].endswith("+08:00")
    (finance,) = report["departments"]
    assert finance["department"] == "Finance" and finance["people_with_access"] == 2
    assert len(finance["rows"]) == len(rows)
    for record, row in zip(finance["rows"], rows, strict=True):
        assert list(record) == list(COLUMNS)
        assert {name: cell(value) for name, value in record.items()} == row  # field by field
    assert isinstance(finance["rows"][0]["uses"], int) and finance["rows"][0]["flags"] == []
    assert [(item["service_category"], item["count"], item["ids"]) for item in finance["active_by_service"]] == [
        ("cloud-storage", 1, [ids["network"]]),
        ("webmail", 1, [ids["user"]]),
        (None, 1, [ids["group"]]),  # a host of no catalogue service
    ]


def test_every_department_and_the_table(cli: CLI, redis_url: str, tmp_path: Path) -> None:
    ids = seed(cli, redis_url, tmp_path)
    rows = list(csv.DictReader(io.StringIO(cli("report", "--format", "csv").stdout)))
    it = [(row["person"], row["approval"], row["subject_kind"]) for row in rows if row["department"] == "IT"]
    assert it == [
        ("carol", ids["it_user"], "user"),
        ("carol", ids["it_department"], "department"),  # the department approval, expanded to all of IT
        ("dave", ids["it_department"], "department"),
        ("hit", ids["it_department"], "department"),
    ]
    pairs = [(row["person"], row["approval"]) for row in rows]
    assert len(pairs) == len(set(pairs))  # no repeats, across sections and departments
    assert [department["department"] for department in json.loads(cli("report", "--format", "json").stdout)[
        "departments"]] == ["Finance", "IT"]  # fmt: skip
    later = json.loads(cli("report", "--since", "2099-01-01", "--format", "json").stdout)
    assert "revoked" not in {row["section"] for department in later["departments"] for row in department["rows"]}

    table = cli("report").stdout  # not a terminal: plain aligned text
    finance = table[table.index("== Department Finance: 2 people with access ==") : table.index("== Department IT")]
    for title in (
        "Access now (one line per person and approval):",
        "Active approvals by service:",
        "Revoked in the period:",
        "Justifications and tickets:",
    ):
        assert title in finance  # fmt: skip
    assert "On hold: suspended or not valid yet: none" in finance
    assert "moved to the audit team" in finance and "keep by hfin" in finance and "SD-2" in finance
    assert "group finance-staff" in finance and "Bob Lee" in finance
    assert "== Department IT: 3 people with access ==" in table

    bad = cli("report", "--since", "yesterday", check=False)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "--since" in bad.stderr
    unknown = cli("report", "--department", "Nowhere", check=False)
    assert unknown.returncode == 2 and unknown.stderr.count("\n") == 1 and "Nowhere" in unknown.stderr
