"""`clearance approvals …`, `clearance directory …` and `clearance exemptions …`: the approval lifecycle.

Every handler checks its input before it connects to Redis; the rules themselves live in policy.lifecycle.
"""

from __future__ import annotations

import argparse
import ipaddress
from collections.abc import Awaitable, Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo

from icap_server.admin.approval_files import HANDLERS as IO_HANDLERS
from icap_server.admin.approval_files import add_io_parsers
from icap_server.admin.support import StoreAction, UsageError, local_time, print_fields, print_table
from icap_server.config import Config
from policy.approvals import Approval, SubjectKind
from policy.categories import validate_category
from policy.directory import DirectoryError, parse_directory_csv
from policy.identity import normalise_username
from policy.lifecycle import GrantRequest, LifecycleError, Rules, build_approval, review, revoke, suspend
from policy.store import PolicyStore, StoreError


def rules_from(config: Config) -> Rules:
    approvals = config.approvals
    return Rules(
        restricted=frozenset(config.policy.restricted_categories),
        max_validity_days=approvals.max_validity_days,
        review_interval_days=approvals.review_interval_days,
        require_department_head=approvals.require_department_head,
        on_review_overdue=approvals.on_review_overdue,
        min_justification_chars=approvals.min_justification_chars,
    )


# ---- parsers ---------------------------------------------------------------------------------


def add_parsers(commands: Any) -> None:
    approvals = commands.add_parser("approvals", help="grant, review, revoke and list approvals").add_subparsers(
        dest="action", required=True, metavar="ACTION"
    )
    grant = approvals.add_parser("grant", help="grant access to a restricted category or service (prints the id)")
    subject = grant.add_mutually_exclusive_group(required=True)
    subject.add_argument("--user", help="one person (as the proxy names them)")
    subject.add_argument("--group", help="a directory group")
    subject.add_argument("--department", help="a whole department")
    subject.add_argument("--network", metavar="CIDR", help="a client network, e.g. a lab: 10.20.30.0/24")
    scope = grant.add_mutually_exclusive_group(required=True)
    scope.add_argument("--category", help="a restricted category, e.g. webmail")
    scope.add_argument("--host", help="one service only, e.g. web.whatsapp.com")
    until = grant.add_mutually_exclusive_group(required=True)
    until.add_argument("--until", metavar="YYYY-MM-DD", help="last day of validity (inclusive, local time)")
    until.add_argument("--days", type=int, metavar="N", help="valid for N days from the start")
    grant.add_argument("--from", dest="valid_from", metavar="YYYY-MM-DD", help="first day (default: now)")
    grant.add_argument("--approver", required=True, help="the head (or delegate) of the department approving")
    grant.add_argument("--justification", "--reason", dest="justification", required=True, help="the genuine need")
    grant.add_argument("--ticket", help="a reference in the service desk")
    grant.add_argument("--owner-department", help="for group and network approvals: whose head approves")

    show = approvals.add_parser("show", help="one approval in full, with its reviews and usage")
    show.add_argument("id")
    listing = approvals.add_parser("list", help="list approvals")
    listing.add_argument("--user", help="approvals whose subject is this user")
    listing.add_argument("--department", help="approvals owned by this department")
    listing.add_argument("--state", help="active, suspended, review-overdue, expired, revoked, pending")

    revoke_parser = approvals.add_parser("revoke", help="revoke an approval now")
    revoke_parser.add_argument("id")
    revoke_parser.add_argument("--by", required=True)
    revoke_parser.add_argument("--reason")
    suspend_parser = approvals.add_parser("suspend", help="stop an approval passing traffic until it is reviewed")
    suspend_parser.add_argument("id")
    suspend_parser.add_argument("--by", required=True)
    suspend_parser.add_argument("--reason")
    review_parser = approvals.add_parser("review", help="record a review: keep (next review moves on) or revoke")
    review_parser.add_argument("id")
    review_parser.add_argument("--by", required=True, help="the head (or delegate) reviewing")
    decision = review_parser.add_mutually_exclusive_group(required=True)
    decision.add_argument("--keep", action="store_true")
    decision.add_argument("--revoke", action="store_true")
    review_parser.add_argument("--note", default="")
    add_io_parsers(approvals)

    directory = commands.add_parser("directory", help="who is in which department, and who approves").add_subparsers(
        dest="action", required=True, metavar="ACTION"
    )
    load = directory.add_parser("load", help="load a CSV export: user,name,department,groups,heads,delegates[,email]")
    load.add_argument("file", type=Path)
    load.add_argument("--merge", action="store_true", help="update these rows, keep everyone else")
    directory_show = directory.add_parser("show", help="one person's department, groups and approver roles")
    directory_show.add_argument("user")

    exemptions = commands.add_parser("exemptions", help="networks that need no approval").add_subparsers(
        dest="action", required=True, metavar="ACTION"
    )
    exemption_add = exemptions.add_parser("add", help="exempt a network (e.g. government-issued mobile devices)")
    exemption_add.add_argument("--network", required=True, metavar="CIDR")
    exemption_add.add_argument("--category", action="append", default=[], help="only this category (repeatable)")
    exemption_add.add_argument("--note", default="")
    exemptions.add_parser("list", help="list exemptions (config file and Redis)")
    exemption_remove = exemptions.add_parser("remove", help="remove an exemption added here")
    exemption_remove.add_argument("id")


# ---- approvals --------------------------------------------------------------------------------


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
    category = None
    if args.category:
        try:
            category = validate_category(args.category)
        except ValueError as error:
            raise UsageError(str(error)) from None
    now = datetime.now(UTC)
    valid_from, valid_until = _validity(args, ZoneInfo(config.policy.timezone), now)
    request = GrantRequest(
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
    )
    rules = rules_from(config)

    async def action(store: PolicyStore) -> int:
        directory = await store.load_directory()
        try:
            build_approval(request, "A0", now, directory, rules)  # every check before an id is taken
            approval = build_approval(request, await store.next_approval_id(), now, directory, rules)
        except LifecycleError as error:
            raise UsageError(str(error)) from None
        await store.save_approval(approval, args.actor, "grant", None)
        print(approval.id)
        return 0

    return action


def _change(
    change: Callable[[Approval, PolicyStore], Awaitable[Approval]], action_name: str
) -> Callable[[argparse.Namespace, Config], StoreAction]:
    """A handler that loads one approval, changes it, and saves it with its audit entry."""

    def handler(args: argparse.Namespace, config: Config) -> StoreAction:
        async def action(store: PolicyStore) -> int:
            before = await store.get_approval(args.id)
            try:
                after = await change(before, store)
            except LifecycleError as error:
                raise UsageError(str(error)) from None
            await store.save_approval(after, args.actor, action_name, before)
            print(f"{after.id} {after.state(datetime.now(UTC), config.approvals.on_review_overdue)}")
            return 0

        return action

    return handler


def approvals_revoke(args: argparse.Namespace, config: Config) -> StoreAction:
    by = normalise_username(args.by, config.identity)

    async def change(approval: Approval, store: PolicyStore) -> Approval:
        return revoke(approval, by, args.reason, datetime.now(UTC))

    return _change(change, "revoke")(args, config)


def approvals_suspend(args: argparse.Namespace, config: Config) -> StoreAction:
    by = normalise_username(args.by, config.identity)

    async def change(approval: Approval, store: PolicyStore) -> Approval:
        return suspend(approval, by, args.reason, datetime.now(UTC))

    return _change(change, "suspend")(args, config)


def approvals_review(args: argparse.Namespace, config: Config) -> StoreAction:
    by = normalise_username(args.by, config.identity)
    decision: Literal["keep", "revoke"] = "keep" if args.keep else "revoke"
    rules = rules_from(config)

    async def change(approval: Approval, store: PolicyStore) -> Approval:
        return review(approval, by, decision, args.note, datetime.now(UTC), await store.load_directory(), rules)

    return _change(change, f"review-{decision}")(args, config)


def approvals_list(args: argparse.Namespace, config: Config) -> StoreAction:
    user = normalise_username(args.user, config.identity) if args.user else None
    zone = ZoneInfo(config.policy.timezone)
    overdue = config.approvals.on_review_overdue

    async def action(store: PolicyStore) -> int:
        now = datetime.now(UTC)
        usage = await store.usage()
        rows = [("ID", "SUBJECT", "SCOPE", "STATE", "VALID UNTIL", "REVIEW DUE", "APPROVER", "DEPARTMENT", "USES")]
        for approval in await store.all_approvals():
            if user and not (approval.subject_kind is SubjectKind.USER and approval.subject == user):
                continue
            if args.department and approval.department != args.department:
                continue
            state = approval.state(now, overdue)
            if args.state and state != args.state:
                continue
            rows.append(
                (
                    approval.id,
                    f"{approval.subject_kind} {approval.subject}",
                    approval.scope(),
                    str(state),
                    local_time(approval.valid_until - timedelta(seconds=1), zone),
                    local_time(approval.review_due, zone),
                    approval.approver,
                    approval.department or "-",
                    str(usage.get(approval.id, (0, None))[0]),
                )
            )
        print_table(rows)
        return 0

    return action


def approvals_show(args: argparse.Namespace, config: Config) -> StoreAction:
    zone = ZoneInfo(config.policy.timezone)

    async def action(store: PolicyStore) -> int:
        approval = await store.get_approval(args.id)
        count, last_used = (await store.usage()).get(approval.id, (0, None))
        now = datetime.now(UTC)
        lines = [
            ("id", approval.id),
            ("state", str(approval.state(now, config.approvals.on_review_overdue))),
            ("subject", f"{approval.subject_kind} {approval.subject}"),
            ("scope", approval.scope()),
            ("department", approval.department or "-"),
            ("approver", approval.approver),
            ("justification", approval.justification),
            ("ticket", approval.ticket or "-"),
            ("created", f"{local_time(approval.created_at, zone)} by {approval.created_by}"),
            ("valid", f"{local_time(approval.valid_from, zone)} to {local_time(approval.valid_until, zone)}"),
            ("review due", local_time(approval.review_due, zone)),
            ("used", f"{count} times, last {local_time(last_used, zone)}"),
        ]
        if approval.revoked_at:
            lines.append(
                (
                    "revoked",
                    f"{local_time(approval.revoked_at, zone)} by {approval.revoked_by}: "
                    f"{approval.revoke_reason or '-'}",
                )
            )
        if approval.suspended_at:
            lines.append(
                (
                    "suspended",
                    f"{local_time(approval.suspended_at, zone)} by {approval.suspended_by}: "
                    f"{approval.suspend_reason or '-'}",
                )
            )
        for item in approval.reviews:
            lines.append(("review", f"{local_time(item.at, zone)} {item.decision} by {item.by}: {item.note or '-'}"))
        print_fields(lines)
        return 0

    return action


# ---- directory --------------------------------------------------------------------------------


def directory_load(args: argparse.Namespace, config: Config) -> StoreAction:
    try:
        with args.file.open(encoding="utf-8-sig", newline="") as handle:
            people = parse_directory_csv(handle, lambda name: normalise_username(name, config.identity))
    except OSError as error:
        raise UsageError(f"{args.file}: {error.strerror or error}") from None
    except UnicodeDecodeError:
        raise UsageError(f"{args.file}: not UTF-8 text") from None
    except DirectoryError as error:
        raise UsageError(f"{args.file}:{error.line}: {str(error).partition(': ')[2]}") from None

    async def action(store: PolicyStore) -> int:
        written, total = await store.write_directory(people, args.actor, merge=args.merge)
        mode = "merged" if args.merge else "loaded (replacing the directory)"
        print(f"{written} people {mode}; the directory has {total}")
        return 0

    return action


def directory_show(args: argparse.Namespace, config: Config) -> StoreAction:
    user = normalise_username(args.user, config.identity)

    async def action(store: PolicyStore) -> int:
        directory = await store.load_directory()
        person = directory.person(user)
        if person is None:
            raise StoreError(f"{user!r} is not in the directory")
        heads, delegates = directory.approvers_of(person.department)
        print(f"user:       {person.user}")
        print(f"name:       {person.name or '-'}")
        print(
            f"department: {person.department} (heads: {', '.join(sorted(heads)) or '-'}; "
            f"delegates: {', '.join(sorted(delegates)) or '-'})"
        )
        print(f"groups:     {', '.join(sorted(person.groups)) or '-'}")
        print(f"heads:      {', '.join(sorted(person.heads)) or '-'}")
        print(f"delegate:   {', '.join(sorted(person.delegates)) or '-'}")
        print(f"email:      {person.email or '-'}")
        return 0

    return action


# ---- exemptions -------------------------------------------------------------------------------


def exemptions_add(args: argparse.Namespace, config: Config) -> StoreAction:
    try:
        network = str(ipaddress.ip_network(args.network, strict=False))
    except ValueError:
        raise UsageError(f"--network: not a network in CIDR form: {args.network!r}") from None
    categories = frozenset(args.category)
    unknown = sorted(categories - set(config.policy.restricted_categories))
    if unknown:
        raise UsageError(f"--category {unknown[0]!r} is not a restricted category")

    async def action(store: PolicyStore) -> int:
        exemption = await store.add_exemption(network, categories, args.note.strip(), args.actor)
        print(exemption.id)
        return 0

    return action


def exemptions_list(args: argparse.Namespace, config: Config) -> StoreAction:
    from icap_server.config import static_exemptions

    async def action(store: PolicyStore) -> int:
        rows = [("ID", "NETWORK", "CATEGORIES", "SOURCE", "NOTE")]
        for source, items in (("config", static_exemptions(config)), ("redis", tuple(await store.exemptions()))):
            rows += [
                (item.id, item.network, ", ".join(sorted(item.categories)) or "all restricted", source, item.note)
                for item in items
            ]
        print_table(rows)
        return 0

    return action


def exemptions_remove(args: argparse.Namespace, config: Config) -> StoreAction:
    async def action(store: PolicyStore) -> int:
        await store.remove_exemption(args.id, args.actor)
        print(f"{args.id} removed")
        return 0

    return action


HANDLERS: dict[tuple[str, str | None], Callable[[argparse.Namespace, Config], StoreAction]] = {
    ("approvals", "grant"): approvals_grant,
    ("approvals", "show"): approvals_show,
    ("approvals", "list"): approvals_list,
    ("approvals", "revoke"): approvals_revoke,
    ("approvals", "suspend"): approvals_suspend,
    ("approvals", "review"): approvals_review,
    ("directory", "load"): directory_load,
    ("directory", "show"): directory_show,
    ("exemptions", "add"): exemptions_add,
    ("exemptions", "list"): exemptions_list,
    ("exemptions", "remove"): exemptions_remove,
    **IO_HANDLERS,
}
