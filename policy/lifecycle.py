"""The rules of an approval's life, as pure functions: what a grant must satisfy, who may review it.

Kept apart from the CLI and the store so that `approvals grant`, `approvals import` and reviews apply the very
same checks, and so every rule is testable with plain data.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Literal

from .approvals import Approval, ApprovalStatus, OverduePolicy, Review, SubjectKind, justification_problem
from .categories import parse_host_entry
from .directory import Directory


class LifecycleError(ValueError):
    """A grant, review or change the rules do not allow; the message says why."""


@dataclass(frozen=True, slots=True)
class ApprovalRules:
    """The parts of the configuration that govern approvals (not to be confused with URL rules, policy.rules)."""

    restricted: frozenset[str]
    max_validity_days: int = 180
    review_interval_days: int = 90
    require_department_head: bool = True
    on_review_overdue: OverduePolicy = "suspend"
    min_justification_chars: int = 20
    admins: frozenset[str] = frozenset()  # may revoke or suspend any approval (approvals.admins)
    services: Mapping[str, str] = field(default_factory=dict)  # service id -> its category (the catalogue)


@dataclass(frozen=True, slots=True)
class GrantSpec:
    """What a grant asks for, as given (`approvals grant`, an import row, an approved access request).

    Not yet checked: `build_approval` applies the rules and makes the Approval, without an id.
    """

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
    service: str | None = None


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


def department_of(spec: GrantSpec, directory: Directory, rules: ApprovalRules) -> str:
    """The department that owns an approval: whose head approves it and reviews it."""
    if spec.subject_kind is SubjectKind.DEPARTMENT:
        if spec.department and spec.department != spec.subject:
            raise LifecycleError(f"a department approval belongs to {spec.subject}, not {spec.department}")
        return spec.subject
    if spec.subject_kind is SubjectKind.USER:
        person = directory.person(spec.subject)
        if person is not None:
            if spec.department and spec.department != person.department:
                raise LifecycleError(
                    f"{spec.subject} is in {person.department}, not {spec.department} (directory)"
                )
            return person.department
        if rules.require_department_head:
            raise LifecycleError(
                f"{spec.subject!r} is not in the directory, so their department head is unknown "
                "(load it with `clearance directory load`)"
            )
        return spec.department or ""
    if not spec.department:
        raise LifecycleError(f"a {spec.subject_kind} approval needs --department: whose head approves it")
    return spec.department


def check_authority(
    person: str, department: str, directory: Directory, rules: ApprovalRules, doing: str
) -> None:
    """Only a head or delegate of the department may approve or review (when approvals.require_department_head)."""
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


UNASSIGNED = ""  # the id of a built approval until the store hands out one (`dataclasses.replace`)


def build_approval(spec: GrantSpec, now: datetime, directory: Directory, rules: ApprovalRules) -> Approval:
    """A new approval with no id yet, or LifecycleError naming the first rule it breaks.

    The id is left UNASSIGNED so that the rules run once: the caller takes an id from the store only after
    every check has passed, and sets it with `dataclasses.replace(approval, id=...)`.
    """
    subject = normalise_subject(spec.subject_kind, spec.subject)
    spec = replace(spec, subject=subject)
    host = _checked_scope(spec, rules)
    if not spec.approver.strip():
        raise LifecycleError("the approver must not be empty")
    problem = justification_problem(spec.justification, rules.min_justification_chars)
    if problem:
        raise LifecycleError(problem)
    _check_validity(spec, now, rules)
    department = department_of(spec, directory, rules)
    check_authority(spec.approver, department, directory, rules, "approve")
    review_due = min(spec.valid_from + timedelta(days=rules.review_interval_days), spec.valid_until)
    return Approval(
        id=UNASSIGNED,
        subject_kind=spec.subject_kind,
        subject=subject,
        category=spec.category,
        host=host,
        department=department,
        approver=spec.approver.strip(),
        justification=" ".join(spec.justification.split()),
        created_by=spec.created_by,
        created_at=now,
        valid_from=spec.valid_from,
        valid_until=spec.valid_until,
        review_due=review_due,
        ticket=spec.ticket or None,
        service=spec.service,
    )


def _checked_scope(spec: GrantSpec, rules: ApprovalRules) -> str | None:
    """Exactly one scope, a restricted category, a service or a host name; returns the host in canonical form."""
    if [spec.category, spec.host, spec.service].count(None) != 2:
        raise LifecycleError("give exactly one scope: --category C, --service S or --host H")
    if spec.service is not None:
        _check_service(spec.service, rules)
    host = None
    if spec.host is not None:
        host = parse_host_entry(spec.host)
        if host is None:
            raise LifecycleError(f"{spec.host!r} is not a host name")
    if spec.category is not None and spec.category not in rules.restricted:
        restricted = ", ".join(sorted(rules.restricted))
        raise LifecycleError(
            f"category {spec.category!r} is not restricted, so it needs no approval (restricted: {restricted})"
        )
    return host


def _check_service(service: str, rules: ApprovalRules) -> None:
    """A service of the catalogue whose category is restricted (else it needs no approval, or does not exist)."""
    category = rules.services.get(service)
    if category is None:
        known = ", ".join(sorted(rules.services)[:12]) or "none"
        raise LifecycleError(f"unknown service {service!r} (`clearance services list`; e.g. {known})")
    if category not in rules.restricted:
        raise LifecycleError(f"service {service!r} is in category {category!r}, which is not restricted")


def _check_validity(spec: GrantSpec, now: datetime, rules: ApprovalRules) -> None:
    """It ends after it starts and after now, and lasts no longer than approvals.max_validity_days."""
    if spec.valid_until <= now and spec.valid_until > spec.valid_from:
        raise LifecycleError("the approval would already have ended")
    _check_span(spec.valid_from, spec.valid_until, rules)


def _check_span(valid_from: datetime, valid_until: datetime, rules: ApprovalRules) -> None:
    if valid_until <= valid_from:
        raise LifecycleError("the approval must end after it starts")
    longest = timedelta(days=rules.max_validity_days)
    # Less than a day's grace, for --until: its last day runs to local midnight, so a grant made in the
    # morning for the longest period ends 180 days and some hours later; --days 181 is still too long.
    if valid_until - valid_from >= longest + timedelta(days=1):
        raise LifecycleError(
            f"validity of {(valid_until - valid_from).days} days exceeds the maximum of "
            f"{rules.max_validity_days} (approvals.max_validity_days): grant less and renew on review"
        )


def check_imported_record(approval: Approval, now: datetime, directory: Directory, rules: ApprovalRules) -> None:
    """A whole record from a file that is not this store's own export: LifecycleError unless grant would allow it.

    `approvals import` restores sealed records of its own export as they are; any other record with an id
    could otherwise smuggle in what `grant` refuses (a subject outside the directory, an approver without
    authority, five years of validity). A record that can never pass traffic again (revoked, or ended) is
    history and is kept as it is. Otherwise the same rules as build_approval, on the record's own dates,
    plus: its department is the one the rules give, its next review is no later than a review would set,
    and whoever kept it on review had the authority to.
    """
    if approval.status is ApprovalStatus.REVOKED or approval.revoked_at is not None or approval.valid_until <= now:
        return
    spec = GrantSpec(
        subject_kind=approval.subject_kind,
        subject=approval.subject,
        category=approval.category,
        host=approval.host,
        approver=approval.approver,
        justification=approval.justification,
        created_by=approval.created_by,
        valid_from=approval.valid_from,
        valid_until=approval.valid_until,
        department=approval.department or None,
        service=approval.service,
    )
    if normalise_subject(spec.subject_kind, spec.subject) != approval.subject:
        raise LifecycleError(f"subject {approval.subject!r} is not in canonical form")
    if _checked_scope(spec, rules) != approval.host:
        raise LifecycleError(f"host {approval.host!r} is not in canonical form")
    if not approval.approver.strip():
        raise LifecycleError("the approver must not be empty")
    problem = justification_problem(approval.justification, rules.min_justification_chars)
    if problem:
        raise LifecycleError(problem)
    _check_span(approval.valid_from, approval.valid_until, rules)
    department = department_of(spec, directory, rules)
    if department != approval.department:
        raise LifecycleError(f"department {approval.department!r}: the rules give {department!r}")
    check_authority(approval.approver, department, directory, rules, "approve")
    _check_reviews(approval, directory, rules)


def _check_reviews(approval: Approval, directory: Directory, rules: ApprovalRules) -> None:
    """Each review by someone who may review, and the next review no later than the last one set it."""
    last = approval.valid_from
    for item in approval.reviews:
        check_authority(item.by, approval.department, directory, rules, "review approvals")
        last = max(last, item.at)
    latest_due = last + timedelta(days=rules.review_interval_days, hours=1)
    if approval.review_due > latest_due:
        raise LifecycleError(
            f"review_due {approval.review_due:%Y-%m-%d} is later than a review every "
            f"{rules.review_interval_days} days allows (approvals.review_interval_days)"
        )


def review(
    approval: Approval,
    by: str,
    decision: Literal["keep", "revoke"],
    note: str,
    now: datetime,
    directory: Directory,
    rules: ApprovalRules,
) -> Approval:
    """Record a critical review: keep (the next review moves on) or revoke."""
    if approval.revoked_at is not None:
        raise LifecycleError(f"approval {approval.id} was revoked by {approval.revoked_by}; nothing to review")
    if now >= approval.valid_until:
        raise LifecycleError(f"approval {approval.id} has expired; grant a new one instead")
    check_authority(by, approval.department, directory, rules, "review approvals")
    next_due = now + timedelta(days=rules.review_interval_days)
    return approval.reviewed(Review(by=by, at=now, decision=decision, note=note), next_due)


def check_stop_authority(approval: Approval, by: str, directory: Directory, rules: ApprovalRules, doing: str) -> None:
    """Who may revoke or suspend: a head or delegate of its department, its approver, or an approvals admin.

    The list is wide on purpose, since stopping access promptly matters, but `--by` is recorded as who stopped
    it, so it must name someone with a say: any name at all would make the audit trail a fiction.
    """
    if by in rules.admins or by == approval.approver or directory.may_approve(by, approval.department):
        return
    heads, delegates = directory.approvers_of(approval.department)
    who = ", ".join(sorted({approval.approver} | heads | delegates | rules.admins))
    raise LifecycleError(
        f"{by!r} may not {doing} {approval.id}: only its approver, a head or delegate of "
        f"{approval.department or 'its department'}, or an admin in approvals.admins may ({who})"
    )


def revoke(
    approval: Approval, by: str, reason: str | None, now: datetime, directory: Directory, rules: ApprovalRules
) -> Approval:
    if approval.revoked_at is not None:
        raise LifecycleError(f"approval {approval.id} was already revoked by {approval.revoked_by}")
    check_stop_authority(approval, by, directory, rules, "revoke")
    return approval.revoked(by, now, reason)


def suspend(
    approval: Approval, by: str, reason: str | None, now: datetime, directory: Directory, rules: ApprovalRules
) -> Approval:
    if approval.revoked_at is not None:
        raise LifecycleError(f"approval {approval.id} is revoked; it cannot be suspended")
    check_stop_authority(approval, by, directory, rules, "suspend")
    return approval.suspended(by, now, reason)
