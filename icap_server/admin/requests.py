"""`clearance requests …`: the access requests people made from block pages, and their decisions.

Approving turns a request into an ordinary approval through `policy.lifecycle.build_approval` (the checks of
`approvals grant`: a head or delegate of the requester's department, a justification, the longest validity) for
the service the request names (every host of it), or the whole category for a request without one,
saved with its audit entry and change announcement together with the request's decision, in one transaction.
"""

from __future__ import annotations

import argparse
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from icap_server.admin.support import (
    Commands,
    StoreAction,
    UsageError,
    add_group,
    approval_rules,
    check_department,
    local_time,
    print_fields,
    print_table,
    store_approval_rules,
)
from icap_server.config import Config
from policy.approvals import Approval
from policy.identity import normalise_username
from policy.lifecycle import LifecycleError, build_approval, check_authority
from policy.requests import AccessRequest, RequestError, RequestStatus, approved, check_decision, denied, grant_for
from policy.store import PolicyStore, RequestChanged


def register(commands: Commands) -> None:
    requests = add_group(commands, "requests", "access requests made from block pages: list, show, approve, deny")
    listing = requests.add_parser("list", help="list access requests (newest last)")
    listing.add_argument("--status", choices=[str(status) for status in RequestStatus])
    listing.add_argument("--department", help="requests from this department")
    listing.set_defaults(handler=requests_list)
    show = requests.add_parser("show", help="one request in full, with its justification")
    show.add_argument("id")
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


def requests_list(args: argparse.Namespace, config: Config) -> StoreAction:
    zone = ZoneInfo(config.policy.timezone)

    async def action(store: PolicyStore) -> int:
        rows = [
            (
                "ID",
                "STATUS",
                "USER",
                "CATEGORY",
                "SERVICE",
                "HOST",
                "DAYS",
                "DEPARTMENT",
                "SUBMITTED",
                "DECIDED BY",
                "APPROVAL",
            )
        ]
        requests = await store.all_requests()
        check_department(args.department, await store.load_directory(), (item.department for item in requests))
        for item in requests:
            if args.status and item.status != args.status:
                continue
            if args.department and item.department != args.department:
                continue
            rows.append(
                (
                    item.id,
                    str(item.status),
                    item.user,
                    item.category,
                    item.service or "-",
                    item.host,
                    str(item.days),
                    item.department or "-",
                    local_time(item.created_at, zone),
                    item.decided_by or "-",
                    item.approval_id or "-",
                )
            )
        print_table(rows)
        return 0

    return action


def requests_show(args: argparse.Namespace, config: Config) -> StoreAction:
    zone = ZoneInfo(config.policy.timezone)

    async def action(store: PolicyStore) -> int:
        item = await store.get_request(args.id)
        lines = [
            ("id", item.id),
            ("status", str(item.status)),
            ("user", item.user),
            ("client ip", item.client_ip or "-"),
            ("category", item.category),
            ("service", f"{item.service} ({item.service_en} / {item.service_zh})" if item.service else "-"),
            ("host", item.host),
            ("days", str(item.days)),
            ("department", item.department or "-"),
            ("approvers", ", ".join(item.approvers) or "-"),
            ("justification", item.justification),
            ("submitted", local_time(item.created_at, zone)),
        ]
        if item.decided_at is not None:
            lines.append(("decided", f"{local_time(item.decided_at, zone)} by {item.decided_by}: {item.note or '-'}"))
        if item.approval_id is not None:
            lines.append(("approval", f"{item.approval_id} until {local_time(item.valid_until, zone)}"))
        print_fields(lines)
        return 0

    return action


def _decider(args: argparse.Namespace, config: Config, missing: str) -> str:
    """Who decides (--by), normalised as approvals are; UsageError(missing) when it names nobody."""
    by = normalise_username(args.by, config.identity) if args.by.strip() else ""
    if not by:
        raise UsageError(missing)
    return by


Decide = Callable[[AccessRequest], Awaitable[tuple[AccessRequest, Approval | None, str]]]


async def _decide_and_save(store: PolicyStore, request_id: str, actor: str, decide: Decide) -> int:
    """Read the request, decide it, save the decision; if someone decided it meanwhile, read it again."""
    while True:
        before = await store.get_request(request_id)
        try:
            after, approval, said = await decide(before)
        except (RequestError, LifecycleError) as error:
            raise UsageError(str(error)) from None
        try:
            await store.save_decision(before, after, approval, actor)
        except RequestChanged:
            continue  # decided meanwhile: read it again, and say so
        print(said)
        return 0


def requests_approve(args: argparse.Namespace, config: Config) -> StoreAction:
    by = _decider(args, config, "--by must name the approver")
    if args.days is not None and args.days < 1:
        raise UsageError(f"--days must be at least 1, got {args.days}")
    zone = ZoneInfo(config.policy.timezone)

    async def action(store: PolicyStore) -> int:
        rules = await store_approval_rules(config, store)

        async def approve(before: AccessRequest) -> tuple[AccessRequest, Approval | None, str]:
            now = datetime.now(UTC)
            check_decision(before, by)
            grant = grant_for(before, by, args.actor, args.days, now)
            checked = build_approval(grant, now, await store.load_directory(), rules)
            approval = replace(checked, id=await store.next_approval_id())  # an id only once every check passed
            after = approved(before, by, now, args.note.strip(), approval.id, approval.valid_until)
            last_day = (approval.valid_until - timedelta(seconds=1)).astimezone(zone)
            scope = f"{approval.subject_kind} {approval.subject}, {approval.scope()}"
            said = f"{after.id} approved: {approval.id} ({scope}, until {last_day:%Y-%m-%d})"
            return after, approval, said

        return await _decide_and_save(store, args.id, args.actor, approve)

    return action


def requests_deny(args: argparse.Namespace, config: Config) -> StoreAction:
    by = _decider(args, config, "--by must name who declines")
    rules = approval_rules(config)

    async def action(store: PolicyStore) -> int:
        async def deny(before: AccessRequest) -> tuple[AccessRequest, Approval | None, str]:
            check_decision(before, by)
            directory = await store.load_directory()
            person = directory.person(before.user)
            department = person.department if person is not None else before.department
            check_authority(by, department, directory, rules, "decide access requests")
            after = denied(before, by, datetime.now(UTC), args.note.strip())
            return after, None, f"{after.id} denied"

        return await _decide_and_save(store, args.id, args.actor, deny)

    return action
