"""`clearance audit` (the audit trail) and `clearance report` (what each department head should look at).

Both read the store and hand plain values to `policy.report`; this module only parses options and renders:
rich tables on a terminal, plain aligned text when piped, or CSV / JSON on request. The report counts active
approvals by service as well as by scope, and `audit --by-service` counts grants and revocations by service.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from rich.console import Console
from rich.table import Table
from rich.text import Text

from icap_server.admin.services import catalogue as service_catalogue
from icap_server.admin.support import (
    Commands,
    StoreAction,
    UsageError,
    check_department,
    local_time,
    print_table,
)
from icap_server.config import Config
from policy.report import (
    NO_DEPARTMENT,
    SECTION_TITLES,
    SECTIONS,
    DepartmentReport,
    Listed,
    Report,
    ServiceKey,
    active_by_service,
    build_report,
    change_summary,
    count_by_service,
    parse_side,
    service_key,
)
from policy.state import ServiceCatalogue
from policy.store import PolicyStore

FORMATS = ("table", "csv", "json")
REPORT_DEFAULT_DAYS = 30


def register(commands: Commands) -> None:
    """`audit` and `report`: two commands, one group of reading and rendering."""
    audit = commands.add_parser("audit", help="the audit trail: who changed what, when, before and after")
    audit.add_argument("--since", metavar="YYYY-MM-DD", help="entries from this day on (local time)")
    audit.add_argument("--department", help="entries for approvals of this department ('-': entries with none)")
    audit.add_argument(
        "--action",
        dest="only_action",
        metavar="ACTION",
        help="only this action, e.g. grant, revoke, review-keep; a prefix before '-' matches all: review, rule",
    )
    audit.add_argument("--format", choices=FORMATS, default="table", help="default: table")
    audit.add_argument(
        "--by-service", action="store_true", help="count the entries' grants and revocations per service instead"
    )
    audit.set_defaults(handler=audit_command)

    report = commands.add_parser("report", help="per department: active, expiring, overdue, unused, revoked")
    report.add_argument("--department", help="only this department ('-': approvals with none)")
    report.add_argument(
        "--since", metavar="YYYY-MM-DD", help=f"revocations from this day on (default: {REPORT_DEFAULT_DAYS} days ago)"
    )
    report.add_argument("--format", choices=FORMATS, default="table", help="default: table")
    report.set_defaults(handler=report_command)


def _since(text: str | None, zone: ZoneInfo) -> datetime | None:
    if text is None:
        return None
    try:
        day = date.fromisoformat(text)
    except ValueError:
        raise UsageError(f"--since: expected a date as YYYY-MM-DD, got {text!r}") from None
    return datetime.combine(day, datetime.min.time(), tzinfo=zone)


def _console() -> Console | None:
    """rich on a terminal; None means plain aligned text."""
    return Console() if sys.stdout.isatty() else None


def _iso(moment: datetime | None, zone: ZoneInfo) -> str | None:
    return moment.astimezone(zone).isoformat() if moment else None


def _rich_table(rows: Sequence[Sequence[str]], title: str | None = None) -> Table:
    table = Table(title=title, title_justify="left")
    for header in rows[0]:
        table.add_column(header)
    for row in rows[1:]:
        table.add_row(*(Text(cell) for cell in row))  # Text: a `[` in a justification is not markup
    return table


def _write_csv(rows: Sequence[Sequence[Any]]) -> None:
    writer = csv.writer(sys.stdout, lineterminator="\n")
    writer.writerows(rows)


# ---- audit ------------------------------------------------------------------------------------


AUDIT_COLUMNS = ("time", "actor", "action", "target", "department", "change")
# What the store writes (newer actions are known from the stream itself), so that a typo is not an empty list.
AUDIT_ACTIONS = (
    "grant", "import", "restore", "revoke", "suspend", "review-keep", "review-revoke",
    "directory-load", "directory-merge", "categories-add", "categories-load", "categories-import",
    "rule-add", "rule-remove", "exemption-add", "exemption-remove",
    "request-submit", "request-approve", "request-deny", "store-initialise", "store-reset",
)  # fmt: skip


def check_action(given: str | None, seen: Iterable[str]) -> None:
    """--action names an action, or a prefix before '-' of one (review, rule); UsageError otherwise."""
    if given is None:
        return
    known = set(AUDIT_ACTIONS) | set(seen)
    known.discard("")
    if given in known or given in {name.split("-")[0] for name in known}:
        return
    raise UsageError(f"--action: unknown action {given!r}; actions: {', '.join(sorted(known))}")


def audit_command(args: argparse.Namespace, config: Config) -> StoreAction:
    zone = ZoneInfo(config.policy.timezone)
    since = _since(args.since, zone)

    def wanted(entry: dict[str, str]) -> bool:
        if args.department is not None and entry.get("department", "") != (
            "" if args.department == NO_DEPARTMENT else args.department
        ):
            return False
        action = entry.get("action", "")
        return args.only_action is None or action == args.only_action or action.startswith(args.only_action + "-")

    async def action(store: PolicyStore) -> int:
        every = await store.read_audit(since)
        check_action(args.only_action, (entry.get("action", "") for entry in every))
        departments = (entry.get("department", "") for entry in every)
        check_department(args.department, await store.load_directory(), departments)
        entries = [entry for entry in every if wanted(entry)]
        if args.by_service:
            render_tallies(entries, args.format)
            return 0
        render_audit(entries, zone, args.format, _console() if args.format == "table" else None)
        return 0

    return action


def audit_records(entries: Sequence[dict[str, str]], zone: ZoneInfo) -> list[dict[str, Any]]:
    """The entries as the JSON output lists them: local time, the change summary, before and after in full."""
    records = []
    for entry in entries:
        before, after = parse_side(entry.get("before", "")), parse_side(entry.get("after", ""))
        action = entry.get("action", "")
        at = datetime.fromisoformat(entry["at"]) if entry.get("at") else None
        records.append(
            {
                "id": entry.get("id"),
                "time": _iso(at, zone),
                "actor": entry.get("actor", ""),
                "action": action,
                "target": entry.get("target", ""),
                "department": entry.get("department") or None,
                "change": change_summary(action, before, after, zone),
                "before": before,
                "after": after,
            }
        )
    return records


def render_audit(entries: Sequence[dict[str, str]], zone: ZoneInfo, form: str, console: Console | None) -> None:
    records = audit_records(entries, zone)
    if form == "json":
        print(json.dumps(records, ensure_ascii=False, indent=2))
        return
    if form == "csv":
        rows: list[list[Any]] = [list(AUDIT_COLUMNS)]
        rows += [[record[column] or "" for column in AUDIT_COLUMNS] for record in records]
        _write_csv(rows)
        return
    table = [[column.upper() for column in AUDIT_COLUMNS]]
    for record in records:
        at = datetime.fromisoformat(record["time"]) if record["time"] else None
        table.append(
            [
                local_time(at, zone, "%Y-%m-%d %H:%M:%S"),
                record["actor"],
                record["action"],
                record["target"],
                record["department"] or "-",
                record["change"],
            ]
        )
    if console is not None:
        console.print(_rich_table(table))
    else:
        print_table(table)


def render_tallies(entries: Sequence[dict[str, str]], form: str) -> None:
    """`audit --by-service`: grants and revocations per service (then per category or host)."""
    tallies = count_by_service(entries)
    if form == "json":
        records = [{"scope": item.label, "grants": item.grants, "revokes": item.revokes} for item in tallies]
        print(json.dumps(records, ensure_ascii=False, indent=2))
        return
    rows = [[item.label, str(item.grants), str(item.revokes)] for item in tallies]
    if form == "csv":
        _write_csv([["scope", "grants", "revokes"], *rows])
    else:
        print_table([["SCOPE", "GRANTS", "REVOKES"], *rows])


# ---- report -----------------------------------------------------------------------------------


def report_command(args: argparse.Namespace, config: Config) -> StoreAction:
    zone = ZoneInfo(config.policy.timezone)
    now = datetime.now(UTC)
    default_since = datetime.combine(
        now.astimezone(zone).date() - timedelta(days=REPORT_DEFAULT_DAYS), datetime.min.time(), tzinfo=zone
    )
    since = _since(args.since, zone) or default_since

    async def action(store: PolicyStore) -> int:
        approvals = await store.all_approvals()
        check_department(args.department, await store.load_directory(), (item.department for item in approvals))
        result = build_report(
            approvals,
            await store.usage(),
            now,
            since,
            config.approvals.on_review_overdue,
            args.department,
        )
        services = await service_catalogue(config, store)
        render_report(result, zone, args.format, _console() if args.format == "table" else None, services)
        return 0

    return action


CSV_COLUMNS = (
    "department",
    "section",
    "id",
    "subject_kind",
    "subject",
    "scope",
    "state",
    "approver",
    "valid_from",
    "valid_until",
    "review_due",
    "uses",
    "last_used",
    "revoked_at",
    "revoked_by",
    "service",
    "service_name_en",
    "service_name_zh",
    "service_category",
)


def key_record(key: ServiceKey) -> dict[str, Any]:
    """The service an approval is counted under (None, and the category, for a category approval)."""
    return {
        "service": key.service,
        "service_name_en": key.name_en or None,
        "service_name_zh": key.name_zh or None,
        "service_category": key.category,
    }


def listed_record(item: Listed, zone: ZoneInfo, services: ServiceCatalogue | None = None) -> dict[str, Any]:
    approval = item.approval
    key = service_key(approval, services or ServiceCatalogue())
    return {
        "id": approval.id,
        "subject_kind": str(approval.subject_kind),
        "subject": approval.subject,
        "scope": approval.scope(),
        "state": str(item.state),
        "approver": approval.approver,
        "valid_from": _iso(approval.valid_from, zone),
        "valid_until": _iso(approval.valid_until, zone),
        "review_due": _iso(approval.review_due, zone),
        "uses": item.uses,
        "last_used": _iso(item.last_used, zone),
        "revoked_at": _iso(approval.revoked_at, zone),
        "revoked_by": approval.revoked_by,
        **key_record(key),
    }


def report_record(result: Report, zone: ZoneInfo, services: ServiceCatalogue) -> dict[str, Any]:
    """The report as JSON: per department, the five sections (active as counts per scope, and per service)."""
    departments = []
    for department in result.departments:
        entry: dict[str, Any] = {
            "department": department.department,
            "active": [
                {"scope": item.scope, "count": item.count, "ids": list(item.ids)} for item in department.active_by_scope
            ],
            "active_by_service": [
                {**key_record(item.key), "count": item.count, "ids": list(item.ids)}
                for item in active_by_service(department, services)
            ],
        }
        for name in SECTIONS[1:]:
            entry[name] = [listed_record(item, zone, services) for item in department.section(name)]
        departments.append(entry)
    return {
        "generated_at": _iso(result.now, zone),
        "since": _iso(result.since, zone),
        "departments": departments,
    }


def render_report(
    result: Report, zone: ZoneInfo, form: str, console: Console | None, services: ServiceCatalogue | None = None
) -> None:
    services = services or ServiceCatalogue()
    if form == "json":
        print(json.dumps(report_record(result, zone, services), ensure_ascii=False, indent=2))
        return
    if form == "csv":
        rows: list[list[Any]] = [list(CSV_COLUMNS)]
        for department in result.departments:
            for name in SECTIONS:
                for item in department.section(name):
                    record = {
                        "department": department.department,
                        "section": name,
                        **listed_record(item, zone, services),
                    }
                    rows.append(["" if record[column] is None else record[column] for column in CSV_COLUMNS])
        _write_csv(rows)
        return
    heading = (
        f"Approval report at {local_time(result.now, zone)} ({zone.key}); "
        f"revocations since {local_time(result.since, zone, '%Y-%m-%d')}"
    )
    if console is not None:
        console.print(Text(heading, style="bold"))
    else:
        print(heading)
    if not result.departments:
        print("nothing to report")
    for department in result.departments:
        _render_department(department, zone, console, services)


def service_rows(department: DepartmentReport, services: ServiceCatalogue) -> list[list[str]]:
    """The active approvals per service: id, both names, category, how many, which."""
    rows = [["SERVICE", "NAME", "NAME (ZH)", "CATEGORY", "APPROVALS", "IDS"]]
    for item in active_by_service(department, services):
        key = item.key
        rows.append(
            [key.service or key.label, key.name_en or "-", key.name_zh or "-", key.category or "-", str(item.count),
             " ".join(item.ids)]
        )  # fmt: skip
    return rows


def section_rows(department: DepartmentReport, name: str, zone: ZoneInfo) -> list[list[str]]:
    """The table of one section: a header row, then one row per scope (active) or per approval."""
    if name == "active":
        rows = [["SCOPE", "APPROVALS", "IDS"]]
        rows += [[item.scope, str(item.count), " ".join(item.ids)] for item in department.active_by_scope]
        return rows
    extra: dict[str, tuple[list[str], Callable[[Listed], list[str]]]] = {
        "expiring": (
            ["LAST DAY", "APPROVER"],
            lambda item: [local_time(item.approval.valid_until - timedelta(seconds=1), zone), item.approval.approver],
        ),
        "review_overdue": (
            ["REVIEW DUE", "APPROVER"],
            lambda item: [local_time(item.approval.review_due, zone), item.approval.approver],
        ),
        "unused": (
            ["USES", "LAST USED", "VALID FROM"],
            lambda item: [str(item.uses), local_time(item.last_used, zone), local_time(item.approval.valid_from, zone)],
        ),
        "revoked": (
            ["REVOKED", "BY", "REASON"],
            lambda item: [
                local_time(item.approval.revoked_at, zone),
                item.approval.revoked_by or "-",
                item.approval.revoke_reason or "-",
            ],
        ),
    }
    headers, cells = extra[name]
    rows = [["ID", "SUBJECT", "SCOPE", "STATE", *headers]]
    for item in department.section(name):
        approval = item.approval
        subject = f"{approval.subject_kind} {approval.subject}"
        rows.append([approval.id, subject, approval.scope(), str(item.state), *cells(item)])
    return rows


def _render_department(
    department: DepartmentReport, zone: ZoneInfo, console: Console | None, services: ServiceCatalogue
) -> None:
    title = f"Department {department.department}"
    if console is not None:
        console.rule(Text(title, style="bold"))
    else:
        print(f"\n== {title} ==")
    for name in (SECTIONS[0], "by_service", *SECTIONS[1:]):
        by_service = name == "by_service"
        rows = service_rows(department, services) if by_service else section_rows(department, name, zone)
        label = "Active approvals by service" if by_service else SECTION_TITLES[name]
        if len(rows) == 1:
            if console is not None:
                console.print(Text(f"{label}: none", style="dim"))
            else:
                print(f"\n{label}: none")
            continue
        if console is not None:
            console.print(_rich_table(rows, label))
        else:
            print(f"\n{label}:")
            print_table(rows)
