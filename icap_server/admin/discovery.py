"""`clearance report discovery` and `report readiness`: what monitor and caution mode saw, per department.

`report readiness --department D` counts, per service, the people who would be blocked if D switched to
`enforce` now (their approvals and exemptions judged as `enforce` would), and with the pending requests approved.

The list a head works through before the department switches to `enforce`: each person and service, how
often it would have been blocked (`would-block`), met the caution page (`caution`) or went on past it
(`continued`), on which hosts, since when and when last. CSV and JSON carry the same rows as the table.
"""

from __future__ import annotations

import argparse
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from icap_server.admin.audit import FORMATS, parse_since
from icap_server.admin.output import Line, print_rows
from icap_server.admin.support import StoreAction
from icap_server.config import Config
from icap_server.service.application import decision_settings
from icap_server.service.explain import served_state
from policy.decision import RequestFacts, judge
from policy.discovery import DiscoveryRow, summarise
from policy.readiness import ReadinessRow, readiness
from policy.state import PolicyState
from policy.store import PolicyStore

READINESS_TABLE = (
    Line("DEPARTMENT", "{department}"),
    Line("SERVICE", "{service}", when="service"),
    Line("CATEGORY", "{category}"),
    Line("PEOPLE SEEN", "{people_seen}"),
    Line("BLOCKED", "{blocked}"),
    Line("PENDING", "{pending}"),
    Line("BLOCKED IF PENDING APPROVED", "{blocked_if_pending_approved}"),
)

DISCOVERY_TABLE = (
    Line("DEPARTMENT", "{department}", when="department", otherwise="(none)"),
    Line("USER", "{user}", when="user", otherwise="(not signed in)"),
    Line("SERVICE", "{service}", when="service"),
    Line("CATEGORY", "{category}"),
    Line("WOULD-BLOCK", "{would_block}"),
    Line("CAUTION", "{caution}"),
    Line("CONTINUED", "{continued}"),
    Line("FIRST DAY", "{first_day}"),
    Line("LAST SEEN", "{last_seen}"),
)


def add_discovery(report: argparse.ArgumentParser) -> None:
    """`report discovery` beside the access report (`report` alone stays the access report)."""
    kinds = report.add_subparsers(dest="report_kind", metavar="{discovery,readiness}")
    discovery = kinds.add_parser("discovery", help="who used which restricted service in monitor or caution mode")
    discovery.add_argument("--department", help="only this department")
    discovery.add_argument("--since", metavar="YYYY-MM-DD", help="from this day on (default: all that is kept)")
    discovery.add_argument("--format", choices=FORMATS, default="table", help="default: table")
    discovery.set_defaults(handler=discovery_command)
    ready = kinds.add_parser("readiness", help="how many would be blocked if a department switched to enforce")
    ready.add_argument("--department", required=True)
    ready.add_argument("--format", choices=FORMATS, default="table", help="default: table")
    ready.set_defaults(handler=readiness_command)


def discovery_command(args: argparse.Namespace, config: Config) -> StoreAction:
    zone = ZoneInfo(config.policy.timezone)
    since = parse_since(args.since, zone)
    day = since.date() if since is not None else None

    async def action(store: PolicyStore) -> int:
        rows = summarise(await store.read_discovery(day), args.department, day)
        print_rows(args.format, DiscoveryRow, rows, DISCOVERY_TABLE, zone)
        return 0

    return action


def readiness_command(args: argparse.Namespace, config: Config) -> StoreAction:
    """Each person's use judged as `enforce` would judge it now: approvals and exemptions count, modes do not."""
    zone = ZoneInfo(config.policy.timezone)
    settings = decision_settings(config)

    async def action(store: PolicyStore) -> int:
        rows = summarise(await store.read_discovery(), args.department)
        states: dict[str, PolicyState] = {}
        now = datetime.now(UTC)
        for row in rows:
            for host in row.hosts:
                if host not in states:
                    states[host] = await served_state(config, store, host)

        def blocked(row: DiscoveryRow) -> bool:
            return any(
                judge(states[host], RequestFacts(host, "/", row.user or None), settings, now).blocked
                for host in row.hosts
            )

        result = readiness(rows, blocked, await store.all_requests())
        print_rows(args.format, ReadinessRow, result, READINESS_TABLE, zone)
        return 0

    return action
