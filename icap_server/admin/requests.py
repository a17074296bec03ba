"""`clearance requests …`: the access requests people made from block pages, and their decisions.

Approving turns a request into an ordinary approval through `policy.lifecycle.build_approval` (the checks of
`approvals grant`: a head or delegate of the requester's department, a justification, the longest validity) for
the service the request names (every host of it), or the whole category for a request without one,
saved with its audit entry and change announcement together with the request's decision, in one transaction.
"""

from __future__ import annotations

import argparse
from collections.abc import Awaitable
from typing import TypeVar
from zoneinfo import ZoneInfo

from icap_server.admin.discovery_requests import add_create_from_discovery
from icap_server.admin.output import add_format, print_record, print_rows
from icap_server.admin.records import REQUEST_LINES, REQUEST_TABLE, RequestRow, request_record, request_row
from icap_server.admin.support import (
    Commands,
    StoreAction,
    UsageError,
    add_group,
    approval_rules,
    check_department,
    store_approval_rules,
)
from icap_server.config import Config
from icap_server.service.decisions import DecisionError, approve_request, deny_request
from policy.identity import normalise_username
from policy.requests import RequestStatus
from policy.store import PolicyStore

T = TypeVar("T")


def register(commands: Commands) -> None:
    requests = add_group(commands, "requests", "access requests made from block pages: list, show, approve, deny")
    listing = requests.add_parser("list", help="list access requests (newest last)")
    listing.add_argument("--status", choices=[str(status) for status in RequestStatus])
    listing.add_argument("--department", help="requests from this department")
    add_format(listing)
    listing.set_defaults(handler=requests_list)
    show = requests.add_parser("show", help="one request in full, with its justification")
    show.add_argument("id")
    add_format(show)
    show.set_defaults(handler=requests_show)
    approve = requests.add_parser(
        "approve", help="approve: grants the requester the service asked for, or the category (prints the approval)"
    )
    approve.add_argument("id")
    approve.add_argument("--by", required=True, help="the head (or delegate) of the requester's department")
    approve.add_argument("--days", type=int, metavar="N", help="valid for N days (default: as requested)")
    approve.add_argument("--note", default="", help="shown to the requester")
    approve.set_defaults(handler=requests_approve)
    deny = requests.add_parser("deny", help="decline a request")
    deny.add_argument("id")
    deny.add_argument("--by", required=True, help="the head (or delegate) of the requester's department")
    deny.add_argument("--note", default="", help="why; shown to the requester")
    deny.set_defaults(handler=requests_deny)
    add_create_from_discovery(requests)


def requests_list(args: argparse.Namespace, config: Config) -> StoreAction:
    zone = ZoneInfo(config.policy.timezone)

    async def action(store: PolicyStore) -> int:
        requests = await store.all_requests()
        check_department(args.department, await store.load_directory(), (item.department for item in requests))
        rows = [
            request_row(item)
            for item in requests
            if (not args.status or item.status == args.status)
            and (not args.department or item.department == args.department)
        ]
        print_rows(args.format, RequestRow, rows, REQUEST_TABLE, zone)
        return 0

    return action


def requests_show(args: argparse.Namespace, config: Config) -> StoreAction:
    zone = ZoneInfo(config.policy.timezone)

    async def action(store: PolicyStore) -> int:
        print_record(args.format, request_record(await store.get_request(args.id)), REQUEST_LINES, zone)
        return 0

    return action


def _decider(args: argparse.Namespace, config: Config, missing: str) -> str:
    """Who decides (--by), normalised as approvals are; UsageError(missing) when it names nobody."""
    by = normalise_username(args.by, config.identity) if args.by.strip() else ""
    if not by:
        raise UsageError(missing)
    return by


def requests_approve(args: argparse.Namespace, config: Config) -> StoreAction:
    by = _decider(args, config, "--by must name the approver")
    if args.days is not None and args.days < 1:
        raise UsageError(f"--days must be at least 1, got {args.days}")
    zone = ZoneInfo(config.policy.timezone)

    async def action(store: PolicyStore) -> int:
        rules = await store_approval_rules(config, store)
        done = await decided(approve_request(store, rules, args.id, by, args.actor, args.days, args.note))
        print(done.said(zone))
        return 0

    return action


def requests_deny(args: argparse.Namespace, config: Config) -> StoreAction:
    by = _decider(args, config, "--by must name who declines")
    rules = approval_rules(config)

    async def action(store: PolicyStore) -> int:
        done = await decided(deny_request(store, rules, args.id, by, args.actor, args.note))
        print(done.said(ZoneInfo(config.policy.timezone)))
        return 0

    return action


async def decided(decision: Awaitable[T]) -> T:
    """The decision's outcome; a rule's refusal is the admin's usage error (one line, exit 2, nothing written)."""
    try:
        return await decision
    except DecisionError as error:
        raise UsageError(str(error)) from None
