"""`clearance audit`: the audit trail, who changed what, when, before and after.

It reads the store and hands plain values to `policy.report`; this module only parses options and renders:
rich tables on a terminal, plain aligned text when piped, or CSV / JSON on request. `audit --by-service`
counts grants and revocations by service. The rendering helpers here are shared with `clearance report`
(icap_server.admin.report).
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from collections.abc import Iterable, Sequence
from datetime import date, datetime
from typing import Any
from zoneinfo import ZoneInfo

from rich.console import Console
from rich.table import Table
from rich.text import Text

from icap_server.admin.support import (
    Commands,
    StoreAction,
    UsageError,
    check_department,
    local_time,
    print_table,
)
from icap_server.config import Config
from policy.report import NO_DEPARTMENT, change_summary, count_by_service, parse_side
from policy.store import PolicyStore

FORMATS = ("table", "csv", "json")


def register(commands: Commands) -> None:
    """`audit`: the trail, filtered by day, department and action."""
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


def parse_since(text: str | None, zone: ZoneInfo) -> datetime | None:
    if text is None:
        return None
    try:
        day = date.fromisoformat(text)
    except ValueError:
        raise UsageError(f"--since: expected a date as YYYY-MM-DD, got {text!r}") from None
    return datetime.combine(day, datetime.min.time(), tzinfo=zone)


def terminal() -> Console | None:
    """rich on a terminal; None means plain aligned text."""
    return Console() if sys.stdout.isatty() else None


def iso(moment: datetime | None, zone: ZoneInfo) -> str | None:
    return moment.astimezone(zone).isoformat() if moment else None


def rich_table(rows: Sequence[Sequence[str]], title: str | None = None) -> Table:
    table = Table(title=title, title_justify="left")
    for header in rows[0]:
        table.add_column(header)
    for row in rows[1:]:
        table.add_row(*(Text(cell) for cell in row))  # Text: a `[` in a justification is not markup
    return table


def write_csv(rows: Sequence[Sequence[Any]]) -> None:
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
    since = parse_since(args.since, zone)

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
        render_audit(entries, zone, args.format, terminal() if args.format == "table" else None)
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
                "time": iso(at, zone),
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
        write_csv(rows)
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
        console.print(rich_table(table))
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
        write_csv([["scope", "grants", "revokes"], *rows])
    else:
        print_table([["SCOPE", "GRANTS", "REVOKES"], *rows])
