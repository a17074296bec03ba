"""`clearance report`: per department, who has access now, to what, on whose authority and why.

It reads the approvals, the directory, the usage counts and the service catalogue from the store and hands
them to `policy.access_report`, which expands group, department and network approvals to the people they
cover: one row per person × approval. This module parses the options and renders the rows: rich tables on a
terminal, plain aligned text when piped, CSV (one header: `policy.access_report.COLUMNS`) or JSON (the same
records, complete) on request. The portal's printable page (icap_server.portal.report_page) shows the same rows.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from rich.console import Console
from rich.text import Text

from icap_server.admin.audit import FORMATS, iso, parse_since, rich_table, terminal, write_csv
from icap_server.admin.discovery import add_discovery
from icap_server.admin.support import Commands, StoreAction, check_department, local_time, print_table
from icap_server.config import Config
from icap_server.portal.report_page import REPORT_DEFAULT_DAYS, read_access_report, since_days_ago
from policy.access_report import (
    COLUMNS,
    AccessReport,
    AccessRow,
    DepartmentAccess,
    csv_cells,
    row_record,
)
from policy.approvals import Approval, SubjectKind
from policy.directory import Directory
from policy.store import PolicyStore


def register(commands: Commands) -> None:
    """`report`: one command, three formats of the same rows."""
    report = commands.add_parser(
        "report", help="per department: each person with access now (groups expanded), and revocations"
    )
    report.add_argument("--department", help="only this department ('-': approvals with none)")
    report.add_argument(
        "--since", metavar="YYYY-MM-DD", help=f"revocations from this day on (default: {REPORT_DEFAULT_DAYS} days ago)"
    )
    report.add_argument("--format", choices=FORMATS, default="table", help="default: table")
    report.set_defaults(handler=report_command)
    add_discovery(report)


async def read_report(
    config: Config, store: PolicyStore, now: datetime, since: datetime, department: str | None
) -> AccessReport:
    """The report from the store's records, as the portal's page reads it; an unknown department is refused."""

    def check(directory: Directory, approvals: list[Approval]) -> None:
        check_department(department, directory, (item.department for item in approvals))

    return await read_access_report(config, store, now, since, department, check)


def report_command(args: argparse.Namespace, config: Config) -> StoreAction:
    zone = ZoneInfo(config.policy.timezone)
    now = datetime.now(UTC)
    since = parse_since(args.since, zone) or since_days_ago(now, zone, REPORT_DEFAULT_DAYS)

    async def action(store: PolicyStore) -> int:
        result = await read_report(config, store, now, since, args.department)
        render_report(result, zone, args.format, terminal() if args.format == "table" else None)
        return 0

    return action


def report_record(result: AccessReport, zone: ZoneInfo) -> dict[str, Any]:
    """The report as JSON: per department its rows in full, and the approvals giving access now per service."""
    departments = []
    for department in result.departments:
        by_service = [
            {
                "service": item.key.service,
                "service_name_en": item.key.name_en or None,
                "service_name_zh": item.key.name_zh or None,
                "service_category": item.key.category,
                "count": item.count,
                "ids": list(item.ids),
            }
            for item in department.by_service
        ]
        departments.append(
            {
                "department": department.department,
                "people_with_access": department.people(),
                "active_by_service": by_service,
                "rows": [row_record(row, zone) for row in department.rows],
            }
        )
    return {
        "generated_at": iso(result.now, zone),
        "since": iso(result.since, zone),
        "timezone": zone.key,
        "columns": list(COLUMNS),
        "departments": departments,
    }


def render_report(result: AccessReport, zone: ZoneInfo, form: str, console: Console | None) -> None:
    if form == "json":
        print(json.dumps(report_record(result, zone), ensure_ascii=False, indent=2))
        return
    if form == "csv":
        rows = [list(COLUMNS)]
        rows += [csv_cells(row_record(row, zone)) for department in result.departments for row in department.rows]
        write_csv(rows)
        return
    heading = (
        f"Access report at {local_time(result.now, zone)} ({zone.key}); "
        f"revocations since {local_time(result.since, zone, '%Y-%m-%d')}"
    )
    if console is not None:
        console.print(Text(heading, style="bold"))
    else:
        print(heading)
    if not result.departments:
        _say(console, "nothing to report")
    for department in result.departments:
        _render_department(department, zone, console)


def who(row: AccessRow) -> list[str]:
    """PERSON, NAME, VIA: the person and the subject that covers them."""
    via = (
        "user"
        if row.approval.subject_kind is SubjectKind.USER
        else f"{row.approval.subject_kind} {row.approval.subject}"
    )
    name = row.person.name if row.person is not None and row.person.name else "-"
    return [row.user or "-", name, via]


def last_review(row: AccessRow, zone: ZoneInfo) -> str:
    review = row.last_review
    return f"{review.decision} by {review.by} {local_time(review.at, zone, '%Y-%m-%d')}" if review else "-"


def section_rows(department: DepartmentAccess, name: str, zone: ZoneInfo) -> list[list[str]]:
    """One section's table: a header, then a line per person × approval."""
    if name == "revoked":
        header = ["PERSON", "NAME", "VIA", "SCOPE", "APPROVAL", "APPROVER", "REVOKED", "BY", "REASON"]
        rows = [header]
        for row in department.section("revoked"):
            approval = row.approval
            rows.append(
                [*who(row), approval.scope(), approval.id, approval.approver, local_time(approval.revoked_at, zone),
                 approval.revoked_by or "-", approval.revoke_reason or "-"]
            )  # fmt: skip
        return rows
    header = ["PERSON", "NAME", "VIA", "SCOPE", "APPROVAL", "APPROVER", "UNTIL", "USES", "LAST USED", "LAST REVIEW",
              "STATE"]  # fmt: skip
    rows = [header]
    for row in department.section("access" if name == "access" else "on-hold"):
        approval = row.approval
        state = " ".join((str(row.state), *row.flags))
        until = local_time(approval.valid_until - timedelta(seconds=1), zone, "%Y-%m-%d")  # the last day valid
        rows.append(
            [*who(row), approval.scope(), approval.id, approval.approver, until, str(row.uses),
             local_time(row.last_used, zone), last_review(row, zone), state]
        )  # fmt: skip
    return rows


def reason_rows(department: DepartmentAccess) -> list[list[str]]:
    """Each approval once: its ticket and justification (too long for the rows above), and any note."""
    rows = [["APPROVAL", "TICKET", "JUSTIFICATION", "NOTE"]]
    seen: set[str] = set()
    for row in department.rows:
        approval = row.approval
        if approval.id in seen:
            continue
        seen.add(approval.id)
        rows.append([approval.id, approval.ticket or "-", approval.justification, row.note or "-"])
    return rows


def service_rows(department: DepartmentAccess) -> list[list[str]]:
    rows = [["SERVICE", "NAME", "NAME (ZH)", "CATEGORY", "APPROVALS", "IDS"]]
    for item in department.by_service:
        key = item.key
        rows.append(
            [key.service or key.label, key.name_en or "-", key.name_zh or "-", key.category or "-", str(item.count),
             " ".join(item.ids)]
        )  # fmt: skip
    return rows


TITLES = {
    "access": "Access now (one line per person and approval)",
    "by_service": "Active approvals by service",
    "on-hold": "On hold: suspended or not valid yet",
    "revoked": "Revoked in the period",
    "reasons": "Justifications and tickets",
}


def _render_department(department: DepartmentAccess, zone: ZoneInfo, console: Console | None) -> None:
    title = f"Department {department.department}: {department.people()} people with access"
    _say(console, title, rule=True)
    tables: dict[str, Sequence[Sequence[str]]] = {
        "access": section_rows(department, "access", zone),
        "by_service": service_rows(department),
        "on-hold": section_rows(department, "on-hold", zone),
        "revoked": section_rows(department, "revoked", zone),
        "reasons": reason_rows(department),
    }
    for name, rows in tables.items():
        if len(rows) == 1:
            _say(console, f"{TITLES[name]}: none", dim=True)
        elif console is not None:
            console.print(rich_table(rows, TITLES[name]))
        else:
            print(f"\n{TITLES[name]}:")
            print_table(rows)


def _say(console: Console | None, text: str, rule: bool = False, dim: bool = False) -> None:
    if console is None:
        print(f"\n== {text} ==" if rule else f"\n{text}")
    elif rule:
        console.rule(Text(text, style="bold"))
    else:
        console.print(Text(text, style="dim" if dim else ""))
