"""`clearance report discovery`: per department, who used which restricted service in monitor or caution mode.

The list a head works through before the department switches to `enforce`: each person and service, how
often it would have been blocked (`would-block`), met the caution page (`caution`) or went on past it
(`continued`), on which hosts, since when and when last. CSV and JSON carry the same rows as the table.
"""

from __future__ import annotations

import argparse
from zoneinfo import ZoneInfo

from icap_server.admin.audit import FORMATS, parse_since
from icap_server.admin.output import Line, print_rows
from icap_server.admin.support import StoreAction
from icap_server.config import Config
from policy.discovery import DiscoveryRow, summarise
from policy.store import PolicyStore

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
    kinds = report.add_subparsers(dest="report_kind", metavar="{discovery}")
    discovery = kinds.add_parser("discovery", help="who used which restricted service in monitor or caution mode")
    discovery.add_argument("--department", help="only this department")
    discovery.add_argument("--since", metavar="YYYY-MM-DD", help="from this day on (default: all that is kept)")
    discovery.add_argument("--format", choices=FORMATS, default="table", help="default: table")
    discovery.set_defaults(handler=discovery_command)


def discovery_command(args: argparse.Namespace, config: Config) -> StoreAction:
    zone = ZoneInfo(config.policy.timezone)
    since = parse_since(args.since, zone)
    day = since.date() if since is not None else None

    async def action(store: PolicyStore) -> int:
        rows = summarise(await store.read_discovery(day), args.department, day)
        print_rows(args.format, DiscoveryRow, rows, DISCOVERY_TABLE, zone)
        return 0

    return action
