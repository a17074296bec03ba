"""Deciding access requests and changing approvals: the one "load, check, save" the CLI and the portal share.

`clearance requests approve|deny`, `clearance approvals review|revoke|suspend` and the heads' workspace in the
portal all go through these functions, so a decision made in a browser is held to the very rules, writes the
very audit entries and sends the very announcement (`ApprovalsSaved`, which every worker applies within a
second) as one typed at the command line. Who decided (`by`) and who did it (`actor`, the audit trail's) are
separate: an admin at the CLI is `--actor`, a head in the portal is `portal:<head>`.

A rule that refuses is a `DecisionError` carrying the rule's own words; a missing record is the store's
`StoreError`. Nothing is written in either case.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Literal
from zoneinfo import ZoneInfo

from icap_server.config import Config
from icap_server.service.catalogue import shipped_services
from policy.approvals import Approval
from policy.directory import Directory
from policy.identity import normalise_username
from policy.lifecycle import ApprovalRules, LifecycleError, build_approval, check_authority, review, revoke, suspend
from policy.requests import AccessRequest, RequestError, approved, check_decision, denied, grant_for
from policy.store import PolicyStore, RequestChanged


class DecisionError(ValueError):
    """A decision or change the rules refuse; the message is the rule's, and nothing was written."""


@dataclass(frozen=True, slots=True)
class RequestDecision:
    """A request as decided, and the approval it became (None when denied)."""

    request: AccessRequest
    approval: Approval | None

    def said(self, zone: ZoneInfo) -> str:
        """What `clearance requests approve|deny` prints: `Q4 approved: A17 (user alice, …, until 2025-07-01)`."""
        approval = self.approval
        if approval is None:
            return f"{self.request.id} denied"
        last_day = (approval.valid_until - timedelta(seconds=1)).astimezone(zone)
        scope = f"{approval.subject_kind} {approval.subject}, {approval.scope()}"
        return f"{self.request.id} approved: {approval.id} ({scope}, until {last_day:%Y-%m-%d})"


def approval_rules(config: Config) -> ApprovalRules:
    """The approval rules from the configuration: the same for grant, import, review and requests approve."""
    approvals = config.approvals
    return ApprovalRules(
        restricted=frozenset(config.policy.restricted_categories),
        max_validity_days=approvals.max_validity_days,
        review_interval_days=approvals.review_interval_days,
        require_department_head=approvals.require_department_head,
        on_review_overdue=approvals.on_review_overdue,
        min_justification_chars=approvals.min_justification_chars,
        admins=frozenset(normalise_username(name, config.identity) for name in approvals.admins),
        services={service.id: service.category for service in shipped_services(config)},
    )


async def store_approval_rules(config: Config, store: PolicyStore) -> ApprovalRules:
    """`approval_rules` with the admins' services too (they live in the store): for grants, imports, requests."""
    rules = approval_rules(config)
    services = dict(rules.services)
    for service in await store.admin_services():
        if service.disabled:
            services.pop(service.id, None)
        else:
            services[service.id] = service.category
    return replace(rules, services=services)


Decide = Callable[[AccessRequest], Awaitable[tuple[AccessRequest, Approval | None]]]


async def _decide_and_save(store: PolicyStore, request_id: str, actor: str, decide: Decide) -> RequestDecision:
    """Read the request, decide it, save the decision; if someone decided it meanwhile, read it again."""
    while True:
        before = await store.get_request(request_id)
        try:
            after, approval = await decide(before)
        except (RequestError, LifecycleError) as error:
            raise DecisionError(str(error)) from None
        try:
            await store.save_decision(before, after, approval, actor)
        except RequestChanged:
            continue  # decided meanwhile: read it again, and say so
        return RequestDecision(after, approval)


async def approve_request(
    store: PolicyStore, rules: ApprovalRules, request_id: str, by: str, actor: str, days: int | None, note: str
) -> RequestDecision:
    """Approve: an ordinary approval (the checks of `approvals grant`), saved with the decision in one MULTI."""

    async def approve(before: AccessRequest) -> tuple[AccessRequest, Approval | None]:
        now = datetime.now(UTC)
        check_decision(before, by)
        grant = grant_for(before, by, actor, days, now)
        checked = build_approval(grant, now, await store.load_directory(), rules)
        approval = replace(checked, id=await store.next_approval_id())  # an id only once every check passed
        return approved(before, by, now, note.strip(), approval.id, approval.valid_until), approval

    return await _decide_and_save(store, request_id, actor, approve)


async def deny_request(
    store: PolicyStore, rules: ApprovalRules, request_id: str, by: str, actor: str, note: str
) -> RequestDecision:
    """Deny: only a head or delegate of the requester's department (now, else as recorded), never the requester."""

    async def deny(before: AccessRequest) -> tuple[AccessRequest, Approval | None]:
        check_decision(before, by)
        directory = await store.load_directory()
        person = directory.person(before.user)
        department = person.department if person is not None else before.department
        check_authority(by, department, directory, rules, "decide access requests")
        return denied(before, by, datetime.now(UTC), note.strip()), None

    return await _decide_and_save(store, request_id, actor, deny)


Change = Callable[[Approval, Directory], Approval]


async def change_approval(store: PolicyStore, approval_id: str, actor: str, action: str, change: Change) -> Approval:
    """Load one approval, change it under the rules, save it with its audit entry and announcement."""
    before = await store.get_approval(approval_id)
    try:
        after = change(before, await store.load_directory())
    except LifecycleError as error:
        raise DecisionError(str(error)) from None
    await store.save_approval(after, actor, action, before)
    return after


async def review_approval(
    store: PolicyStore,
    rules: ApprovalRules,
    approval_id: str,
    by: str,
    decision: Literal["keep", "revoke"],
    note: str,
    actor: str,
) -> Approval:
    """A review (`review-keep`: the next review moves on; `review-revoke`) by a head or delegate."""

    def change(approval: Approval, directory: Directory) -> Approval:
        return review(approval, by, decision, note, datetime.now(UTC), directory, rules)

    return await change_approval(store, approval_id, actor, f"review-{decision}", change)


async def stop_approval(
    store: PolicyStore,
    rules: ApprovalRules,
    approval_id: str,
    by: str,
    reason: str | None,
    actor: str,
    action: Literal["revoke", "suspend"],
) -> Approval:
    """Revoke or suspend now: its approver, a head or delegate of its department, or an admin."""
    stop = revoke if action == "revoke" else suspend

    def change(approval: Approval, directory: Directory) -> Approval:
        return stop(approval, by, reason, datetime.now(UTC), directory, rules)

    return await change_approval(store, approval_id, actor, action, change)
