"""What `approvals list/show` and `requests list/show` print: their typed rows and the layouts of their tables.

Kept apart from the commands (which filter, decide and save) so that each answer is described once, here,
and `icap_server.admin.output` makes its table, CSV and JSON from it. The field names are the stable column
names README lists; `valid_until` is the exclusive end, which the approvals table shows as its last minute.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from icap_server.admin.output import Line
from policy.approvals import Approval, State
from policy.requests import AccessRequest


@dataclass(frozen=True)
class ApprovalRow:
    """One approval as `approvals list` shows it."""

    id: str
    subject_kind: str
    subject: str
    scope: str
    state: str
    valid_until: datetime
    review_due: datetime
    approver: str
    department: str | None
    uses: int


APPROVAL_TABLE = (
    Line("ID", "{id}"),
    Line("SUBJECT", "{subject_kind} {subject}"),
    Line("SCOPE", "{scope}"),
    Line("STATE", "{state}"),
    Line("VALID UNTIL", "{valid_until:end}"),
    Line("REVIEW DUE", "{review_due}"),
    Line("APPROVER", "{approver}"),
    Line("DEPARTMENT", "{department}"),
    Line("USES", "{uses}"),
)


def approval_row(approval: Approval, state: State, uses: int) -> ApprovalRow:
    return ApprovalRow(
        id=approval.id,
        subject_kind=str(approval.subject_kind),
        subject=approval.subject,
        scope=approval.scope(),
        state=str(state),
        valid_until=approval.valid_until,
        review_due=approval.review_due,
        approver=approval.approver,
        department=approval.department or None,
        uses=uses,
    )


@dataclass(frozen=True)
class ReviewRow:
    at: datetime
    decision: str  # keep or revoke
    by: str
    note: str | None


@dataclass(frozen=True)
class ApprovalRecord:
    """One approval in full, as `approvals show` shows it: its reviews, its use, its revocation or suspension."""

    id: str
    state: str
    subject_kind: str
    subject: str
    scope: str
    department: str | None
    approver: str
    justification: str
    ticket: str | None
    created_at: datetime
    created_by: str
    valid_from: datetime
    valid_until: datetime
    review_due: datetime
    uses: int
    last_used: datetime | None
    revoked_at: datetime | None
    revoked_by: str | None
    revoke_reason: str | None
    suspended_at: datetime | None
    suspended_by: str | None
    suspend_reason: str | None
    reviews: tuple[ReviewRow, ...]


APPROVAL_LINES = (
    Line("id", "{id}"),
    Line("state", "{state}"),
    Line("subject", "{subject_kind} {subject}"),
    Line("scope", "{scope}"),
    Line("department", "{department}"),
    Line("approver", "{approver}"),
    Line("justification", "{justification}"),
    Line("ticket", "{ticket}"),
    Line("created", "{created_at} by {created_by}"),
    Line("valid", "{valid_from} to {valid_until}"),
    Line("review due", "{review_due}"),
    Line("used", "{uses} times, last {last_used}"),
    Line("revoked", "{revoked_at} by {revoked_by}: {revoke_reason}", when="revoked_at"),
    Line("suspended", "{suspended_at} by {suspended_by}: {suspend_reason}", when="suspended_at"),
    Line("review", "{at} {decision} by {by}: {note}", each="reviews"),
)


def approval_record(approval: Approval, state: State, uses: int, last_used: datetime | None) -> ApprovalRecord:
    return ApprovalRecord(
        id=approval.id,
        state=str(state),
        subject_kind=str(approval.subject_kind),
        subject=approval.subject,
        scope=approval.scope(),
        department=approval.department or None,
        approver=approval.approver,
        justification=approval.justification,
        ticket=approval.ticket or None,
        created_at=approval.created_at,
        created_by=approval.created_by,
        valid_from=approval.valid_from,
        valid_until=approval.valid_until,
        review_due=approval.review_due,
        uses=uses,
        last_used=last_used,
        revoked_at=approval.revoked_at,
        revoked_by=approval.revoked_by,
        revoke_reason=approval.revoke_reason or None,
        suspended_at=approval.suspended_at,
        suspended_by=approval.suspended_by,
        suspend_reason=approval.suspend_reason or None,
        reviews=tuple(ReviewRow(item.at, item.decision, item.by, item.note or None) for item in approval.reviews),
    )


@dataclass(frozen=True)
class RequestRow:
    """One access request as `requests list` shows it."""

    id: str
    status: str
    user: str
    category: str
    service: str | None
    host: str
    days: int
    department: str | None
    submitted_at: datetime
    decided_by: str | None
    approval_id: str | None


REQUEST_TABLE = (
    Line("ID", "{id}"),
    Line("STATUS", "{status}"),
    Line("USER", "{user}"),
    Line("CATEGORY", "{category}"),
    Line("SERVICE", "{service}"),
    Line("HOST", "{host}"),
    Line("DAYS", "{days}"),
    Line("DEPARTMENT", "{department}"),
    Line("SUBMITTED", "{submitted_at}"),
    Line("DECIDED BY", "{decided_by}"),
    Line("APPROVAL", "{approval_id}"),
)


def request_row(item: AccessRequest) -> RequestRow:
    return RequestRow(
        id=item.id,
        status=str(item.status),
        user=item.user,
        category=item.category,
        service=item.service or None,
        host=item.host,
        days=item.days,
        department=item.department or None,
        submitted_at=item.created_at,
        decided_by=item.decided_by or None,
        approval_id=item.approval_id or None,
    )


@dataclass(frozen=True)
class RequestRecord:
    """One access request in full, as `requests show` shows it; `valid_until` is its approval's end."""

    id: str
    status: str
    user: str
    client_ip: str | None
    category: str
    service: str | None
    service_name_en: str | None
    service_name_zh: str | None
    host: str
    days: int
    department: str | None
    approvers: tuple[str, ...]
    justification: str
    submitted_at: datetime
    decided_at: datetime | None
    decided_by: str | None
    note: str | None
    approval_id: str | None
    valid_until: datetime | None


REQUEST_LINES = (
    Line("id", "{id}"),
    Line("status", "{status}"),
    Line("user", "{user}"),
    Line("client ip", "{client_ip}"),
    Line("category", "{category}"),
    Line("service", "{service} ({service_name_en} / {service_name_zh})", when="service", otherwise="-"),
    Line("host", "{host}"),
    Line("days", "{days}"),
    Line("department", "{department}"),
    Line("approvers", "{approvers}"),
    Line("justification", "{justification}"),
    Line("submitted", "{submitted_at}"),
    Line("decided", "{decided_at} by {decided_by}: {note}", when="decided_at"),
    Line("approval", "{approval_id} until {valid_until}", when="approval_id"),
)


def request_record(item: AccessRequest) -> RequestRecord:
    return RequestRecord(
        id=item.id,
        status=str(item.status),
        user=item.user,
        client_ip=item.client_ip or None,
        category=item.category,
        service=item.service or None,
        service_name_en=item.service_en if item.service else None,
        service_name_zh=item.service_zh if item.service else None,
        host=item.host,
        days=item.days,
        department=item.department or None,
        approvers=item.approvers,
        justification=item.justification,
        submitted_at=item.created_at,
        decided_at=item.decided_at,
        decided_by=item.decided_by,
        note=item.note or None,
        approval_id=item.approval_id,
        valid_until=item.valid_until,
    )
