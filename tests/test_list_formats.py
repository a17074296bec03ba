"""Issue 11, acceptance 4: every list and show command's `--format json` and `--format csv` hold the table's facts.

Real data is made with the CLI (access requests through the portal of a real `clearance serve`) in a real Redis,
and each command is run three times. The table is read by its columns; each JSON record is written here as
the table writes it (its times, UTC ISO 8601, shown in the configured zone), and must give the table's rows
exactly, in order. The CSV must carry the header README documents for the command, then the same records cell
for cell. A few facts the test itself made (an id, a ticket, a note) anchor the comparison to the data.
"""

from __future__ import annotations

import csv
import io
import re
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import redis

from policy.tokens import RequestClaim, sign
from tests.conftest import CLI, clearance_env, cli_config_text
from tests.support.cli_zygote import ZygoteClient
from tests.support.formats import ZONE, cell, check_list, check_show, columns, csv_cell, documented, local, three_ways
from tests.test_portal import SECRET, Portal, start_portal

__all__ = ["start_portal"]  # the fixture, used by name

WHY = "Exchanging documents with an overseas partner agency"
DIRECTORY = """user,name,department,groups,heads,delegates,email
alice,Alice Chan,Finance,finance-staff;travel,,,alice@example.gov
hfin,Henry Fung,Finance,finance-staff,Finance,,hfin@example.gov
dfin,Dora Fok,Finance,,,Finance,
carol,,IT,,,,
hit,Ivy Tam,IT,,IT,,
"""
ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d")


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    """The tests' CLI config, with an exemption in the file (listed beside those added with the CLI)."""
    path = tmp_path / "clearance.yaml"
    exemption = "exemptions:\n  - network: 172.16.5.0/24\n    note: kiosks in the lobby\n"
    path.write_text(cli_config_text() + exemption, encoding="utf-8")
    return path


# ---- approvals ---------------------------------------------------------------------------------------------


def approval_cells(r: dict[str, Any]) -> dict[str, str]:
    return {
        "ID": r["id"],
        "SUBJECT": f"{r['subject_kind']} {r['subject']}",
        "SCOPE": r["scope"],
        "STATE": r["state"],
        "VALID UNTIL": local(r["valid_until"], last_minute=True),
        "REVIEW DUE": local(r["review_due"]),
        "APPROVER": r["approver"],
        "DEPARTMENT": cell(r["department"]),
        "USES": str(r["uses"]),
    }


def approval_lines(r: dict[str, Any]) -> list[tuple[str, str]]:
    lines = [
        ("id", r["id"]),
        ("state", r["state"]),
        ("subject", f"{r['subject_kind']} {r['subject']}"),
        ("scope", r["scope"]),
        ("department", cell(r["department"])),
        ("approver", r["approver"]),
        ("justification", r["justification"]),
        ("ticket", cell(r["ticket"])),
        ("created", f"{local(r['created_at'])} by {r['created_by']}"),
        ("valid", f"{local(r['valid_from'])} to {local(r['valid_until'])}"),
        ("review due", local(r["review_due"])),
        ("used", f"{r['uses']} times, last {local(r['last_used'])}"),
    ]
    for stop, by, reason in (
        ("revoked", "revoked_by", "revoke_reason"),
        ("suspended", "suspended_by", "suspend_reason"),
    ):
        if r[f"{stop}_at"]:
            lines.append((stop, f"{local(r[f'{stop}_at'])} by {r[by]}: {cell(r[reason])}"))
    lines += [("review", f"{local(i['at'])} {i['decision']} by {i['by']}: {cell(i['note'])}") for i in r["reviews"]]
    return lines


def load_directory(cli: CLI, tmp_path: Path) -> None:
    directory = tmp_path / "directory.csv"
    directory.write_text(DIRECTORY, encoding="utf-8")
    cli("directory", "load", str(directory))


def grant(cli: CLI, *args: str) -> str:
    approval_id: str = cli("approvals", "grant", *args, "--justification", WHY).stdout.strip()
    assert re.fullmatch(r"A\d+", approval_id), approval_id
    return approval_id


def test_approvals_list_and_show_three_ways(cli: CLI, tmp_path: Path) -> None:
    load_directory(cli, tmp_path)
    cli("categories", "add", "webmail", "mail.google.com")
    cli("categories", "add", "web-im", "web.whatsapp.com")
    last_day = (datetime.now(ZONE) + timedelta(days=30)).date().isoformat()  # ends at local midnight after it
    mine = grant(cli, "--user", "alice", "--category", "webmail", "--until", last_day, "--approver", "hfin",
                 "--ticket", "SD-1")  # fmt: skip
    group = grant(cli, "--group", "finance-staff", "--host", "web.whatsapp.com", "--days", "10",
                  "--approver", "hfin", "--owner-department", "Finance")  # fmt: skip
    lab = grant(cli, "--network", "10.20.30.0/24", "--category", "webmail", "--days", "5", "--approver", "hit",
                "--owner-department", "IT")  # fmt: skip
    cli("approvals", "review", mine, "--by", "hfin", "--keep", "--note", "still needed for the project")
    cli("approvals", "suspend", group, "--by", "hfin", "--reason", "under audit")
    cli("approvals", "revoke", lab, "--by", "hit", "--reason", "lab closed")

    answers = three_ways(cli, "approvals", "list")
    listed = check_list(answers, approval_cells, 3)
    by_id = {record["id"]: record for record in listed}
    assert columns(answers.table)[0]["VALID UNTIL"] == f"{last_day} 23:59"  # the table's inclusive last minute
    assert {record["state"] for record in listed} == {"active", "suspended", "revoked"}
    assert by_id[mine]["subject_kind"] == "user" and by_id[mine]["subject"] == "alice"
    assert by_id[group]["scope"] == "host web.whatsapp.com" and by_id[lab]["department"] == "IT"
    only = check_list(three_ways(cli, "approvals", "list", "--state", "revoked"), approval_cells, 1)
    assert only[0]["id"] == lab

    shown = check_show(three_ways(cli, "approvals", "show", mine), approval_lines)
    assert shown["ticket"] == "SD-1" and shown["justification"] == WHY and shown["revoked_at"] is None
    (review,) = shown["reviews"]
    assert review["decision"] == "keep" and review["by"] == "hfin" and review["note"] == "still needed for the project"
    revoked = check_show(three_ways(cli, "approvals", "show", lab), approval_lines)
    assert revoked["revoke_reason"] == "lab closed" and revoked["revoked_by"] == "hit"
    suspended = check_show(three_ways(cli, "approvals", "show", group), approval_lines)
    assert suspended["suspend_reason"] == "under audit" and suspended["ticket"] is None


# ---- the directory, exemptions, rules, category counts, the store ------------------------------------------


def person_lines(r: dict[str, Any]) -> list[tuple[str, str]]:
    approvers = f"heads: {cell(r['department_heads'])}; delegates: {cell(r['department_delegates'])}"
    return [
        ("user", r["user"]),
        ("name", cell(r["name"])),
        ("department", f"{r['department']} ({approvers})"),
        ("groups", cell(r["groups"])),
        ("heads", cell(r["heads"])),
        ("delegate", cell(r["delegates"])),
        ("email", cell(r["email"])),
    ]


def exemption_cells(r: dict[str, Any]) -> dict[str, str]:
    categories = ", ".join(r["categories"]) or "all restricted"
    return {"ID": r["id"], "NETWORK": r["network"], "CATEGORIES": categories, "SOURCE": r["source"], "NOTE": r["note"]}


def rule_cells(r: dict[str, Any]) -> dict[str, str]:
    return {"ID": r["id"], "RULE": r["rule"], "NOTE": r["note"]}


def stats_line(r: dict[str, Any]) -> str:
    if r["source"] is None:
        return f"{r['category']}\t{r['entries']}"

    def when(text: str) -> str:
        return local(text) if ISO.match(text) else text

    parts = [
        f"{label} {shown(r[name])}"
        for label, name, shown in (
            ("lists of", "lists_date", when),
            ("shipped", "shipped_version", str),
            ("updated", "updated", when),
            ("from", "origin", str),
        )
        if r[name]
    ]
    return f"  {r['source']}\t{r['entries']}\t{', '.join(parts) or '-'}"


def status_lines(r: dict[str, Any]) -> list[tuple[str, str]]:
    epoch = f"{r['epoch']} ({r['epoch_origin']} {r['epoch_at']} by {r['epoch_by']})" if r["epoch"] else None
    return [
        ("store", f"embedded, in {r['embedded_dir']}" if r["embedded_dir"] else "redis.url (configured)"),
        ("epoch", epoch or "none (not initialised)"),
        ("version", str(r["version"])),
        ("lists", ", ".join(f"{name} {count}" for name, count in r["lists"].items()) or "no lists"),
        ("approvals", str(r["approvals"])),
        ("people", str(r["people"])),
    ]


def test_directory_exemptions_rules_stats_and_status_three_ways(cli: CLI, tmp_path: Path) -> None:
    cli("store", "init")
    load_directory(cli, tmp_path)
    alice = check_show(three_ways(cli, "directory", "show", "CORP\\Alice"), person_lines)
    assert alice["groups"] == ["finance-staff", "travel"] and alice["department_heads"] == ["hfin"]
    assert alice["department_delegates"] == ["dfin"] and alice["email"] == "alice@example.gov"
    carol = check_show(three_ways(cli, "directory", "show", "carol"), person_lines)
    assert carol["name"] is None and carol["groups"] == [] and carol["department_heads"] == ["hit"]
    head = check_show(three_ways(cli, "directory", "show", "hfin"), person_lines)
    assert head["heads"] == ["Finance"] and head["delegates"] == []

    phones = cli("exemptions", "add", "--network", "10.9.0.1/16", "--category", "webmail", "--category", "web-im",
                 "--note", "government-issued phones").stdout.strip()  # fmt: skip
    cli("exemptions", "add", "--network", "192.0.2.0/24")
    exemptions = check_list(three_ways(cli, "exemptions", "list"), exemption_cells, 3)
    assert [(item["source"], item["network"]) for item in exemptions] == [
        ("config", "172.16.5.0/24"), ("redis", "10.9.0.0/16"), ("redis", "192.0.2.0/24")
    ]  # fmt: skip
    assert exemptions[1]["id"] == phones and exemptions[1]["categories"] == ["web-im", "webmail"]
    assert exemptions[2]["categories"] == [] and exemptions[2]["note"] == ""

    allow = cli("rules", "allow", "mail.google.com", "--path", "/a/agency.gov.hk/", "--note", "department mail")
    cli("rules", "category", "portal.example.com", "--path", "/personal/", "--category", "cloud-storage")
    rules = check_list(three_ways(cli, "rules", "list"), rule_cells, 2)
    assert {rule["id"]: rule["kind"] for rule in rules} == {allow.stdout.strip(): "allow", rules[1]["id"]: "category"}
    assert rules[0]["rule"] == f"allow {rules[0]['host']}{rules[0]['path']}" and rules[0]["note"] == "department mail"
    assert rules[1]["category"] == "cloud-storage" and rules[1]["path"] == "/personal/"

    cli("categories", "add", "webmail", "mail.google.com", "mail.example.net")
    listing = tmp_path / "drives.txt"
    listing.write_text("drive.example.com\nbox.example.org\nfiles.example.net\n", encoding="utf-8")
    cli("categories", "import", str(listing), "--category", "cloud-storage", "--source", "drives")
    stats = three_ways(cli, "categories", "stats")
    assert isinstance(stats.data, list) and len(stats.data) == 4
    assert [stats_line(record) for record in stats.data] == stats.table.splitlines()
    assert stats.rows == [[csv_cell(record[name]) for name in stats.header] for record in stats.data]
    imported = next(record for record in stats.data if record["source"] == "drives")
    assert imported["entries"] == 3 and imported["updated"] and imported["updated"].endswith("+00:00")

    status = check_show(three_ways(cli, "store", "status"), status_lines)
    assert status["store"] == "configured" and status["embedded_dir"] is None
    assert status["epoch_origin"] == "initialised" and status["people"] == 5 and status["approvals"] == 0
    assert status["lists"] == {"cloud-storage": 3, "webmail": 2}


# ---- services -------------------------------------------------------------------------------------------------

ROLES = ("web", "media", "desktop", "ranges")


def service_cells(r: dict[str, Any]) -> dict[str, str]:
    counts = {role: str(len(r[role])) for role in ROLES}
    return {"id": r["id"], "name": r["name_en"], "名稱": r["name_zh"], "category": r["category"], **counts,
            "origin": r["origin"]}  # fmt: skip


def service_lines(r: dict[str, Any]) -> list[tuple[str, str]]:
    lines = [("id", r["id"]), ("name", f"{r['name_en']} / {r['name_zh']}"), ("category", r["category"])]
    lines += [("origin", r["origin"]), *((role, cell(r[role], " ")) for role in ROLES)]
    lines += [("paths", cell(r["paths"], " ")), ("tenant", cell(r["tenant"])), ("checked", cell(r["checked"]))]
    lines.append(("sources", cell(r["sources"], "; ")))
    return lines + ([("note", r["note"])] if r["note"] else [])


def test_services_list_and_show_three_ways(cli: CLI) -> None:
    cli("services", "add", "teamchat", "--name-en", "Team Chat", "--name-zh", "團隊通", "--category", "web-im",
        "--web", "chat.team.example", "--web", "app.team.example", "--media", "cdn.team.example",
        "--range", "198.51.100.0/24", "--path", "www.example.org/chat", "--source", "the vendor's network page",
        "--source", "https://team.example/ips", "--note", "a pilot in Finance")  # fmt: skip
    cli("services", "add", "filedrop", "--name-en", "FileDrop", "--name-zh", "檔案投", "--category", "cloud-storage",
        "--web", "filedrop.example")  # fmt: skip
    listed = check_list(three_ways(cli, "services", "list"), service_cells, 2)
    assert [record["id"] for record in listed] == ["filedrop", "teamchat"]  # by category, then id
    assert listed[1]["web"] == ["chat.team.example", "app.team.example"] and listed[1]["origin"] == "admin"
    check_list(three_ways(cli, "services", "list", "--category", "web-im"), service_cells, 1)

    chat = check_show(three_ways(cli, "services", "show", "teamchat"), service_lines)
    assert chat["paths"] == ["www.example.org/chat"] and chat["ranges"] == ["198.51.100.0/24"]
    assert chat["sources"] == ["the vendor's network page", "https://team.example/ips"]
    assert chat["note"] == "a pilot in Finance" and chat["tenant"] is None
    drop = check_show(three_ways(cli, "services", "show", "filedrop"), service_lines)
    assert drop["note"] is None and drop["media"] == []


# ---- access requests, made through the portal --------------------------------------------------------------


def request_cells(r: dict[str, Any]) -> dict[str, str]:
    return {
        "ID": r["id"],
        "STATUS": r["status"],
        "USER": r["user"],
        "CATEGORY": r["category"],
        "SERVICE": cell(r["service"]),
        "HOST": r["host"],
        "DAYS": str(r["days"]),
        "DEPARTMENT": cell(r["department"]),
        "SUBMITTED": local(r["submitted_at"]),
        "DECIDED BY": cell(r["decided_by"]),
        "APPROVAL": cell(r["approval_id"]),
    }


def request_lines(r: dict[str, Any]) -> list[tuple[str, str]]:
    service = f"{r['service']} ({r['service_name_en']} / {r['service_name_zh']})" if r["service"] else "-"
    lines = [
        ("id", r["id"]),
        ("status", r["status"]),
        ("user", r["user"]),
        ("client ip", cell(r["client_ip"])),
        ("category", r["category"]),
        ("service", service),
        ("host", r["host"]),
        ("days", str(r["days"])),
        ("department", cell(r["department"])),
        ("approvers", cell(r["approvers"])),
        ("justification", r["justification"]),
        ("submitted", local(r["submitted_at"])),
    ]
    if r["decided_at"]:
        lines.append(("decided", f"{local(r['decided_at'])} by {r['decided_by']}: {cell(r['note'])}"))
    if r["approval_id"]:
        lines.append(("approval", f"{r['approval_id']} until {local(r['valid_until'])}"))
    return lines


@pytest.fixture
def portal(start_portal: Any) -> Iterator[Portal]:
    yield start_portal(workers=1)


def test_requests_list_and_show_three_ways(portal: Portal) -> None:
    assert portal.submit(portal.token()).status == 303
    claim = RequestClaim("carol", "10.1.2.3", "webmail", "mail.google.com", int(time.time()) + 600,
                         service="gmail", service_en="Gmail", service_zh="Gmail 郵件")  # fmt: skip
    assert portal.submit(sign(claim, SECRET), days="14").status == 303
    portal.admin("requests", "approve", "Q1", "--by", "hfin", "--note", "for the Singapore project")

    listed = check_list(three_ways(portal.admin, "requests", "list"), request_cells, 2)
    assert [(item["id"], item["status"], item["user"]) for item in listed] == [
        ("Q1", "approved", "alice"), ("Q2", "pending", "carol")
    ]  # fmt: skip
    assert listed[0]["approval_id"] == "A1" and listed[1]["service"] == "gmail" and listed[1]["days"] == 14
    check_list(three_ways(portal.admin, "requests", "list", "--status", "pending"), request_cells, 1)

    approved = check_show(three_ways(portal.admin, "requests", "show", "Q1"), request_lines)
    assert approved["note"] == "for the Singapore project" and approved["approvers"] == ["dfin", "hfin"]
    assert approved["client_ip"] == "10.1.2.3" and approved["justification"] and approved["valid_until"]
    pending = check_show(three_ways(portal.admin, "requests", "show", "Q2"), request_lines)
    assert pending["service_name_zh"] == "Gmail 郵件" and pending["decided_at"] is None
    assert pending["department"] == "IT" and pending["approvers"] == ["hit"]


# ---- CSV as RFC 4180 has it; a wrong --format ---------------------------------------------------------------

COMMANDS = (
    ("approvals", "list"),
    ("approvals", "show", "A1"),
    ("requests", "list"),
    ("requests", "show", "Q1"),
    ("directory", "show", "alice"),
    ("exemptions", "list"),
    ("rules", "list"),
    ("categories", "stats"),
    ("services", "list"),
    ("services", "show", "gmail"),
    ("store", "status"),
)


def test_csv_lines_end_in_crlf_and_a_cell_with_a_comma_quote_or_line_break_is_quoted(
    cli: CLI, redis_url: str, config_file: Path, cli_zygote: ZygoteClient
) -> None:
    note = 'mail, "the department\'s"\nsecond line'
    rule = cli("rules", "allow", "mail.google.com", "--note", note).stdout.strip()
    listed = cli_zygote.run_bytes(["rules", "list", "--format", "csv"], env=clearance_env(redis_url, config_file))
    assert listed.returncode == 0, listed.stderr
    raw = listed.stdout  # bytes: text mode would turn CRLF into LF before the test could see it
    assert raw.count(b"\r\n") == 2 and raw.endswith(b"\r\n")  # the header and the row (the note's \n is inside)
    assert b'"mail, ""the department\'s""\nsecond line"' in raw
    header, row = list(csv.reader(io.StringIO(raw.decode(), newline="")))
    assert header == documented("rules list") and dict(zip(header, row, strict=True))["note"] == note
    assert dict(zip(header, row, strict=True))["id"] == rule


def test_every_list_and_show_command_is_documented_and_refuses_a_wrong_format_in_one_line(
    cli: CLI, sync_redis: redis.Redis
) -> None:
    for command in COMMANDS:
        assert documented(" ".join(command[:2]))
        result = cli(*command, "--format", "xml", check=False)
        assert result.returncode == 2, (command, result)
        assert result.stderr.startswith("clearance: ") and result.stderr.count("\n") == 1, result.stderr
        assert "--format" in result.stderr and "'xml'" in result.stderr and not result.stdout
    assert sync_redis.dbsize() == 0
