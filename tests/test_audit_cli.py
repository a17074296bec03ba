"""`clearance audit` against a real Redis: every change is in the trail, with its actor (report: test_report_cli)."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import redis

from policy.approvals import Approval, SubjectKind
from tests.conftest import CLI
from tests.conftest import as_actor as admin

PREFIX = "clearance:"
DIRECTORY = """user,name,department,groups,heads,delegates
alice,Alice Chan,Finance,,,
bob,Bob Lee,Finance,,,
hfin,Henry Fung,Finance,,Finance,
carol,Carol Wong,IT,,,
hit,Ivy Tam,IT,,IT,
"""
REASON = "Liaison with the overseas partner office"


def audit_json(cli: CLI, *args: str) -> list[dict[str, Any]]:
    records: list[dict[str, Any]] = json.loads(cli("audit", "--format", "json", *args).stdout)
    return records


def load_directory(cli: CLI, tmp_path: Path) -> None:
    path = tmp_path / "directory.csv"
    path.write_text(DIRECTORY, encoding="utf-8")
    cli("directory", "load", str(path))


def grant(cli: CLI, *args: str) -> str:
    approval_id: str = cli("approvals", "grant", *args, "--approver", "hfin", "--reason", REASON).stdout.strip()
    return approval_id


def test_every_change_is_audited_with_actor_before_and_after(cli: CLI, tmp_path: Path) -> None:
    run = admin(cli)
    load_directory(run, tmp_path)
    run("categories", "add", "webmail", "mail.example", "webmail.example")
    listing = tmp_path / "cloud.txt"
    listing.write_text("drive.example\nfiles.example\n", encoding="utf-8")
    run("categories", "load", "cloud-storage", str(listing))
    imported = tmp_path / "im.txt"
    imported.write_text("chat.example\nim.example\nmessenger.example\n", encoding="utf-8")
    run("categories", "import", str(imported), "--category", "web-im")
    run("rules", "allow", "mail.example", "--path", "/corp/", "--note", "department mail")
    rule_id = run("rules", "category", "portal.example", "--path", "/personal/", "--category", "cloud-storage").stdout
    run("rules", "remove", rule_id.strip())
    approval_id = grant(run, "--user", "alice", "--category", "webmail", "--days", "90")
    run("approvals", "review", approval_id, "--by", "hfin", "--keep", "--note", "still needed")
    run("approvals", "revoke", approval_id, "--by", "hfin", "--reason", "project finished")

    records = audit_json(cli)
    assert [record["action"] for record in records] == [
        "directory-load",
        "categories-add",
        "categories-load",
        "categories-import",
        "rule-add",
        "rule-add",
        "rule-remove",
        "grant",
        "review-keep",
        "revoke",
    ]
    assert {record["actor"] for record in records} == {"alice.admin"}
    by_action = {record["action"]: record for record in records}

    directory = by_action["directory-load"]
    assert directory["before"] is None and directory["after"] == {"rows": 5}

    added = by_action["categories-add"]
    assert added["target"] == "webmail" and added["department"] is None
    assert added["before"] == {"entries": 0}
    assert added["after"] == {"entries": 2, "added": 2, "submitted": 2, "hosts": ["mail.example", "webmail.example"]}
    assert added["change"] == "entries 0→2, 2 new of 2: mail.example webmail.example"
    loaded = by_action["categories-load"]
    assert loaded["target"] == "cloud-storage" and loaded["after"]["entries"] == 2

    imports = by_action["categories-import"]
    assert imports["target"] == "web-im"
    assert imports["before"] == {"entries": {"web-im": 0}}
    assert imports["after"]["entries"] == {"web-im": 3} and imports["after"]["mode"] == "replace"
    assert imports["change"] == "replace: web-im 0→3"

    allow, path_rule, removed = (record for record in records if record["action"].startswith("rule-"))
    assert allow["before"] is None and allow["after"]["kind"] == "allow" and allow["after"]["host"] == "mail.example"
    assert allow["change"] == "added rule allow mail.example/corp/"
    assert removed["target"] == path_rule["target"] == rule_id.strip()
    assert removed["before"] == path_rule["after"] and removed["after"] is None
    assert removed["change"] == "removed rule portal.example/personal/ -> cloud-storage"

    granted = by_action["grant"]
    assert granted["target"] == approval_id and granted["department"] == "Finance"
    assert granted["before"] is None and granted["after"]["subject"] == "alice"
    assert granted["after"]["created_by"] == "alice.admin"
    assert granted["change"].startswith("granted user alice category webmail until ")

    reviewed = by_action["review-keep"]
    assert reviewed["before"]["reviews"] == [] and reviewed["after"]["reviews"][0]["by"] == "hfin"
    assert reviewed["change"].endswith("review keep by hfin: still needed")

    revoked = by_action["revoke"]
    assert revoked["before"]["status"] == "active" and revoked["after"]["status"] == "revoked"
    assert revoked["change"] == "status active→revoked, reason: project finished"
    assert all(record["time"].endswith("+08:00") for record in records)  # local time: Asia/Hong_Kong

    table = cli("audit").stdout.splitlines()  # not a terminal: plain aligned text
    assert table[0].split() == ["TIME", "ACTOR", "ACTION", "TARGET", "DEPARTMENT", "CHANGE"]
    assert len(table) == 11 and "status active→revoked" in table[-1] and "alice.admin" in table[-1]
    rows = list(csv.DictReader(io.StringIO(cli("audit", "--format", "csv").stdout)))
    assert list(rows[0]) == ["time", "actor", "action", "target", "department", "change"]
    assert [row["action"] for row in rows] == [record["action"] for record in records]
    assert rows[-1]["department"] == "Finance" and rows[0]["department"] == ""


def test_audit_filters(cli: CLI, sync_redis: redis.Redis, tmp_path: Path) -> None:
    old = {"at": "2020-01-02T00:00:00+00:00", "actor": "ghost", "action": "grant", "target": "A0",
           "department": "Finance", "before": "", "after": ""}
    sync_redis.xadd(f"{PREFIX}audit", old, id="1577923200000-0")  # type: ignore[arg-type]
    run = admin(cli)
    load_directory(run, tmp_path)
    finance = grant(run, "--user", "alice", "--category", "webmail", "--days", "30")
    it = grant(run, "--user", "carol", "--host", "web.whatsapp.com", "--days", "30")
    run("approvals", "review", it, "--by", "hit", "--keep")
    run("categories", "add", "webmail", "mail.example")

    everything = audit_json(cli)
    assert len(everything) == 6 and everything[0]["actor"] == "ghost"
    assert everything[0]["time"] == "2020-01-02T08:00:00+08:00"
    recent = (datetime.now(UTC) - timedelta(days=2)).date().isoformat()
    assert [record["actor"] for record in audit_json(cli, "--since", recent)] == ["alice.admin"] * 5
    assert audit_json(cli, "--since", "2099-01-01") == []
    assert [record["target"] for record in audit_json(cli, "--department", "Finance")] == ["A0", finance]
    assert [record["target"] for record in audit_json(cli, "--department", "Finance", "--since", recent)] == [
        finance
    ]
    assert [record["target"] for record in audit_json(cli, "--department", "IT")] == [it, it]
    assert [record["action"] for record in audit_json(cli, "--department", "-")] == [
        "directory-load",
        "categories-add",
    ]
    assert [record["target"] for record in audit_json(cli, "--action", "grant")] == ["A0", finance, it]
    assert [record["action"] for record in audit_json(cli, "--action", "review")] == ["review-keep"]
    assert [record["action"] for record in audit_json(cli, "--action", "categories")] == ["categories-add"]
    bad = cli("audit", "--since", "last week", check=False)
    assert bad.returncode == 2 and bad.stderr.startswith("clearance: --since") and bad.stderr.count("\n") == 1


def test_rich_tables_on_a_terminal() -> None:
    from zoneinfo import ZoneInfo

    from rich.console import Console

    from icap_server.admin.audit import render_audit

    zone = ZoneInfo("Asia/Hong_Kong")
    now = datetime.now(UTC)
    approval = Approval(
        id="A1", subject_kind=SubjectKind.USER, subject="alice", category="webmail", host=None,
        department="Finance", approver="hfin", justification="[bold]not markup[/bold]", created_by="admin",
        created_at=now - timedelta(days=40), valid_from=now - timedelta(days=40),
        valid_until=now + timedelta(days=5), review_due=now + timedelta(days=1),
    )
    revoked = approval.revoked("hfin", now, "[red]left[/red]")
    output = io.StringIO()
    console = Console(file=output, width=200, force_terminal=False)
    entry = {"id": "1-0", "at": now.isoformat(), "actor": "alice.admin", "action": "revoke", "target": "A1",
             "department": "Finance", "before": approval.to_json(), "after": revoked.to_json()}
    render_audit([entry], zone, "table", console)
    text = output.getvalue()
    assert "status active→revoked, reason: [red]left[/red]" in text  # cells are text, not rich markup
