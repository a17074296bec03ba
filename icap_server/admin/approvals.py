"""`clearance approvals …`: grant, review, revoke, suspend, show and list approvals; import and export them.

Every handler checks its input before it connects to Redis; the rules themselves live in policy.lifecycle.
Import and export (files of approvals) are their own module, `icap_server.admin.approvals_io`.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from typing import Literal
from zoneinfo import ZoneInfo

from icap_server.admin import approvals_io
from icap_server.admin.output import add_format, print_record, print_rows
from icap_server.admin.records import APPROVAL_LINES, APPROVAL_TABLE, ApprovalRow, approval_record, approval_row
from icap_server.admin.requests import decided
from icap_server.admin.support import (
    Commands,
    StoreAction,
    UsageError,
    add_group,
    approval_rules,
    check_department,
    checked_category,
    store_approval_rules,
)
from icap_server.config import Config
from icap_server.service.decisions import review_approval, stop_approval
from policy.approvals import Approval, State, SubjectKind
from policy.identity import normalise_username
from policy.lifecycle import GrantSpec, LifecycleError, build_approval
from policy.store import PolicyStore


def register(commands: Commands) -> None:
    approvals = add_group(commands, "approvals", "grant, review, revoke and list approvals")
    _register_grant(approvals)
    show = approvals.add_parser("show", help="one approval in full, with its reviews and usage")
    show.add_argument("id")
    add_format(show)
    show.set_defaults(handler=approvals_show)
    listing = approvals.add_parser("list", help="list approvals")
    listing.add_argument("--user", help="approvals whose subject is this user")
    listing.add_argument("--department", help="approvals owned by this department")
    listing.add_argument("--state", choices=[str(state) for state in State], help="the state now")
    add_format(listing)
    listing.set_defaults(handler=approvals_list)
    revoke_parser = approvals.add_parser("revoke", help="revoke an approval now")
    revoke_parser.add_argument("id")
    revoke_parser.add_argument("--by", required=True)
    revoke_parser.add_argument("--reason")
    revoke_parser.set_defaults(handler=approvals_revoke)
    suspend_parser = approvals.add_parser("suspend", help="stop an approval passing traffic until it is reviewed")
    suspend_parser.add_argument("id")
    suspend_parser.add_argument("--by", required=True)
    suspend_parser.add_argument("--reason")
    suspend_parser.set_defaults(handler=approvals_suspend)
    review_parser = approvals.add_parser("review", help="record a review: keep (next review moves on) or revoke")
    review_parser.add_argument("id")
    review_parser.add_argument("--by", required=True, help="the head (or delegate) reviewing")
    decision = review_parser.add_mutually_exclusive_group(required=True)
    decision.add_argument("--keep", action="store_true")
    decision.add_argument("--revoke", action="store_true")
    review_parser.add_argument("--note", default="")
    review_parser.set_defaults(handler=approvals_review)
    approvals_io.register(approvals)


def _register_grant(approvals: Commands) -> None:
    grant = approvals.add_parser("grant", help="grant access to a restricted category or service (prints the id)")
    subject = grant.add_mutually_exclusive_group(required=True)
    subject.add_argument("--user", help="one person (as the proxy names them)")
    subject.add_argument("--group", help="a directory group")
    subject.add_argument("--department", help="a whole department")
    subject.add_argument("--network", metavar="CIDR", help="a client network, e.g. a lab: 10.20.30.0/24")
    scope = grant.add_mutually_exclusive_group(required=True)
    scope.add_argument("--category", help="a restricted category, e.g. webmail")
    scope.add_argument("--service", help="one service, every host of it (web, media, desktop), e.g. whatsapp")
    scope.add_argument("--host", help="one host (and its subdomains) only, e.g. web.whatsapp.com")
    until = grant.add_mutually_exclusive_group(required=True)
    until.add_argument("--until", metavar="YYYY-MM-DD", help="last day of validity (inclusive, local time)")
    until.add_argument("--days", type=int, metavar="N", help="valid for N days from the start")
    grant.add_argument("--from", dest="valid_from", metavar="YYYY-MM-DD", help="first day (default: now)")
    grant.add_argument("--approver", required=True, help="the head (or delegate) of the department approving")
    grant.add_argument("--justification", "--reason", dest="justification", required=True, help="the genuine need")
    grant.add_argument("--ticket", help="a reference in the service desk")
    grant.add_argument("--owner-department", help="for group and network approvals: whose head approves")
    grant.set_defaults(handler=approvals_grant)


def _day(text: str, option: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise UsageError(f"{option}: expected a date as YYYY-MM-DD, got {text!r}") from None


def _validity(args: argparse.Namespace, zone: ZoneInfo, now: datetime) -> tuple[datetime, datetime]:
    start = now
    if args.valid_from:
        start = datetime.combine(_day(args.valid_from, "--from"), datetime.min.time(), tzinfo=zone).astimezone(UTC)
    if args.days is not None:
        if args.days < 1:
            raise UsageError(f"--days must be at least 1, got {args.days}")
        return start, start + timedelta(days=args.days)
    last_day = _day(args.until, "--until")
    end = datetime.combine(last_day + timedelta(days=1), datetime.min.time(), tzinfo=zone).astimezone(UTC)
    if end <= now:
        raise UsageError(f"--until {args.until} is in the past")
    return start, end


def _subject(args: argparse.Namespace, config: Config) -> tuple[SubjectKind, str]:
    if args.user:
        return SubjectKind.USER, normalise_username(args.user, config.identity)
    if args.group:
        return SubjectKind.GROUP, args.group
    if args.department:
        return SubjectKind.DEPARTMENT, args.department
    return SubjectKind.NETWORK, args.network


def approvals_grant(args: argparse.Namespace, config: Config) -> StoreAction:
    kind, subject = _subject(args, config)
    category = checked_category(args.category) if args.category else None
    now = datetime.now(UTC)
    valid_from, valid_until = _validity(args, ZoneInfo(config.policy.timezone), now)
    spec = GrantSpec(
        subject_kind=kind,
        subject=subject,
        category=category,
        host=args.host,
        approver=normalise_username(args.approver, config.identity) if args.approver.strip() else "",
        justification=args.justification,
        created_by=args.actor,
        valid_from=valid_from,
        valid_until=valid_until,
        department=args.owner_department,
        ticket=args.ticket,
        service=args.service,
    )

    async def action(store: PolicyStore) -> int:
        rules = await store_approval_rules(config, store)
        try:
            checked = build_approval(spec, now, await store.load_directory(), rules)
        except LifecycleError as error:
            raise UsageError(str(error)) from None
        approval = replace(checked, id=await store.next_approval_id())  # an id only once every check passed
        await store.save_approval(approval, args.actor, "grant", None)
        print(approval.id)
        return 0

    return action


def _said(after: Approval, config: Config) -> int:
    print(f"{after.id} {after.state(datetime.now(UTC), config.approvals.on_review_overdue)}")
    return 0


def _stop(name: Literal["revoke", "suspend"]) -> Callable[[argparse.Namespace, Config], StoreAction]:
    """`revoke` or `suspend`: --by must be the approver, a head or delegate of its department, or an admin."""

    def handler(args: argparse.Namespace, config: Config) -> StoreAction:
        by = normalise_username(args.by, config.identity)
        rules = approval_rules(config)

        async def action(store: PolicyStore) -> int:
            stopping = stop_approval(store, rules, args.id, by, args.reason, args.actor, name)
            return _said(await decided(stopping), config)

        return action

    return handler


approvals_revoke = _stop("revoke")
approvals_suspend = _stop("suspend")


def approvals_review(args: argparse.Namespace, config: Config) -> StoreAction:
    by = normalise_username(args.by, config.identity)
    decision: Literal["keep", "revoke"] = "keep" if args.keep else "revoke"
    rules = approval_rules(config)

    async def action(store: PolicyStore) -> int:
        reviewing = review_approval(store, rules, args.id, by, decision, args.note, args.actor)
        return _said(await decided(reviewing), config)

    return action


def approvals_list(args: argparse.Namespace, config: Config) -> StoreAction:
    user = normalise_username(args.user, config.identity) if args.user else None
    zone = ZoneInfo(config.policy.timezone)
    overdue = config.approvals.on_review_overdue

    async def action(store: PolicyStore) -> int:
        now = datetime.now(UTC)
        usage = await store.usage()
        approvals = await store.all_approvals()
        check_department(args.department, await store.load_directory(), (item.department for item in approvals))
        rows: list[ApprovalRow] = []
        for approval in approvals:
            if user and not (approval.subject_kind is SubjectKind.USER and approval.subject == user):
                continue
            if args.department and approval.department != args.department:
                continue
            state = approval.state(now, overdue)
            if args.state and state != args.state:
                continue
            rows.append(approval_row(approval, state, usage.get(approval.id, (0, None))[0]))
        print_rows(args.format, ApprovalRow, rows, APPROVAL_TABLE, zone)
        return 0

    return action


def approvals_show(args: argparse.Namespace, config: Config) -> StoreAction:
    zone = ZoneInfo(config.policy.timezone)

    async def action(store: PolicyStore) -> int:
        approval = await store.get_approval(args.id)
        count, last_used = (await store.usage()).get(approval.id, (0, None))
        state = approval.state(datetime.now(UTC), config.approvals.on_review_overdue)
        print_record(args.format, approval_record(approval, state, count, last_used), APPROVAL_LINES, zone)
        return 0

    return action
