"""The rules of an approval's life, as pure functions: what a grant must satisfy, who may review it.

Kept apart from the CLI and the store so that `approvals grant`, `approvals import` and reviews apply the very
same checks, and so every rule is testable with plain data.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Literal

from .approvals import Approval, OverduePolicy, Review, SubjectKind, justification_problem
from .categories import parse_host_entry
from .directory import Directory


class LifecycleError(ValueError):
    """A grant, review or change the rules do not allow; the message says why."""


@dataclass(frozen=True, slots=True)
class Rules:
    """The parts of the configuration that govern approvals."""

    restricted: frozenset[str]
    max_validity_days: int = 180
    review_interval_days: int = 90
    require_department_head: bool = True
    on_review_overdue: OverduePolicy = "suspend"
    min_justification_chars: int = 20


@dataclass(frozen=True, slots=True)
class GrantRequest:
    subject_kind: SubjectKind
    subject: str
    category: str | None
    host: str | None
    approver: str
    justification: str
    created_by: str
    valid_from: datetime
    valid_until: datetime
    department: str | None = None
    ticket: str | None = None


def normalise_subject(kind: SubjectKind, subject: str) -> str:
    subject = subject.strip()
    if not subject:
        raise LifecycleError(f"the {kind} must not be empty")
    if kind is SubjectKind.NETWORK:
        try:
            return str(ipaddress.ip_network(subject, strict=False))
        except ValueError:
            raise LifecycleError(f"{subject!r} is not a network in CIDR form (e.g. 10.20.0.0/16)") from None
    return subject


def department_of(request: GrantRequest, directory: Directory, rules: Rules) -> str:
    """The department that owns an approval: whose head approves it and reviews it."""
    if request.subject_kind is SubjectKind.DEPARTMENT:
        if request.department and request.department != request.subject:
            raise LifecycleError(f"a department approval belongs to {request.subject}, not {request.department}")
        return request.subject
    if request.subject_kind is SubjectKind.USER:
        person = directory.person(request.subject)
        if person is not None:
            if request.department and request.department != person.department:
                raise LifecycleError(
                    f"{request.subject} is in {person.department}, not {request.department} (directory)"
                )
            return person.department
        if rules.require_department_head:
            raise LifecycleError(
                f"{request.subject!r} is not in the directory, so their department head is unknown "
                "(load it with `clearance directory load`)"
            )
        return request.department or ""
    if not request.department:
        raise LifecycleError(f"a {request.subject_kind} approval needs --department: whose head approves it")
    return request.department


def check_authority(person: str, department: str, directory: Directory, rules: Rules, doing: str) -> None:
    if not rules.require_department_head:
        return
    if directory.may_approve(person, department):
        return
    heads, delegates = directory.approvers_of(department)
    who = ", ".join(sorted(heads | delegates)) or "nobody in the directory"
    raise LifecycleError(
        f"{person!r} may not {doing} for {department or 'an unknown department'}: "
        f"only its head or a delegate may ({who})"
    )


def build_approval(
    request: GrantRequest, approval_id: str, now: datetime, directory: Directory, rules: Rules
) -> Approval:
    """A new approval, or LifecycleError naming the first rule it breaks."""
    subject = normalise_subject(request.subject_kind, request.subject)
    request = replace(request, subject=subject)
    if (request.category is None) == (request.host is None):
        raise LifecycleError("give exactly one scope: --category C or --host H")
    host = None
    if request.host is not None:
        host = parse_host_entry(request.host)
        if host is None:
            raise LifecycleError(f"{request.host!r} is not a host name")
    if request.category is not None and request.category not in rules.restricted:
        restricted = ", ".join(sorted(rules.restricted))
        raise LifecycleError(
            f"category {request.category!r} is not restricted, so it needs no approval (restricted: {restricted})"
        )
    if not request.approver.strip():
        raise LifecycleError("the approver must not be empty")
    problem = justification_problem(request.justification, rules.min_justification_chars)
    if problem:
        raise LifecycleError(problem)
    if request.valid_until <= request.valid_from:
        raise LifecycleError("the approval must end after it starts")
    if request.valid_until <= now:
        raise LifecycleError("the approval would already have ended")
    longest = timedelta(days=rules.max_validity_days)
    # Less than a day's grace, for --until: its last day runs to local midnight, so a grant made in the
    # morning for the longest period ends 180 days and some hours later; --days 181 is still too long.
    if request.valid_until - request.valid_from >= longest + timedelta(days=1):
        raise LifecycleError(
            f"validity of {(request.valid_until - request.valid_from).days} days exceeds the maximum of "
            f"{rules.max_validity_days} (approvals.max_validity_days): grant less and renew on review"
        )
    department = department_of(request, directory, rules)
    check_authority(request.approver, department, directory, rules, "approve")
    review_due = min(request.valid_from + timedelta(days=rules.review_interval_days), request.valid_until)
    return Approval(
        id=approval_id,
        subject_kind=request.subject_kind,
        subject=subject,
        category=request.category,
        host=host,
        department=department,
        approver=request.approver.strip(),
        justification=" ".join(request.justification.split()),
        created_by=request.created_by,
        created_at=now,
        valid_from=request.valid_from,
        valid_until=request.valid_until,
        review_due=review_due,
        ticket=request.ticket or None,
    )


def review(
    approval: Approval,
    by: str,
    decision: Literal["keep", "revoke"],
    note: str,
    now: datetime,
    directory: Directory,
    rules: Rules,
) -> Approval:
    """Record a critical review: keep (the next review moves on) or revoke."""
    if approval.revoked_at is not None:
        raise LifecycleError(f"approval {approval.id} was revoked by {approval.revoked_by}; nothing to review")
    if now >= approval.valid_until:
        raise LifecycleError(f"approval {approval.id} has expired; grant a new one instead")
    check_authority(by, approval.department, directory, rules, "review approvals")
    next_due = now + timedelta(days=rules.review_interval_days)
    return approval.reviewed(Review(by=by, at=now, decision=decision, note=note), next_due)


def revoke(approval: Approval, by: str, reason: str | None, now: datetime) -> Approval:
    """Revoking is never refused for authority: stopping access promptly matters more than who does it."""
    if approval.revoked_at is not None:
        raise LifecycleError(f"approval {approval.id} was already revoked by {approval.revoked_by}")
    return approval.revoked(by, now, reason)


def suspend(approval: Approval, by: str, reason: str | None, now: datetime) -> Approval:
    if approval.revoked_at is not None:
        raise LifecycleError(f"approval {approval.id} is revoked; it cannot be suspended")
    return approval.suspended(by, now, reason)
