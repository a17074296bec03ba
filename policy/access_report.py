"""Who has access, one row per person × approval: the auditor's answer, computed from plain records.

An approval names a subject: a user, a group, a department or a client network. The filter lets a person
through on any of them (`policy.state.ApprovalIndex.candidates`: by user, by the directory's groups and
department, by address), so the question "who can reach webmail, on whose authority, why" is answered only
when group and department approvals are expanded through the directory to the people they cover. Each row is
one person covered by one approval, so a person appears once per approval that covers them, and an approval
once per person; nothing repeats across sections, because each approval is in exactly one:

- `access`: passing traffic now (active, or review-overdue under `on_review_overdue: warn`);
- `on-hold`: not revoked and not ended, but not passing now (suspended, by hand or by an overdue review, or
  not valid yet): it passes again when kept, resumed or when it starts;
- `revoked`: revoked at or after `since`, with who revoked it, when and why.

Ended approvals (past `valid_until`) and those revoked before `since` are in no section. A network approval
covers whoever uses an address in its range, no named person: it is one row with no person and a note. So is
a group or department approval that covers nobody in the directory today, and a user approval for someone the
directory does not know keeps its row, with a note. Use (`uses`, `last_used`) is counted per approval by the
filter, not per person: a group approval's rows carry the whole group's use.

The flags on a row are `policy.report`'s sections, folded in: `expiring` (ends within `expiring_days`),
`review-due` (its review date has passed) and `unused` (passing, in force for `unused_days`, not used in them).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, tzinfo
from typing import Any, Literal

from .approvals import Approval, ApprovalStatus, OverduePolicy, Review, State, SubjectKind
from .directory import Directory, Person
from .report import (
    EXPIRING_DAYS,
    NO_DEPARTMENT,
    UNUSED_DAYS,
    ServiceCount,
    ServiceKey,
    Usage,
    count_services,
    department_of,
    service_key,
)
from .state import ServiceCatalogue

Section = Literal["access", "on-hold", "revoked"]
ACCESS_SECTIONS: tuple[Section, ...] = ("access", "on-hold", "revoked")

# The CSV header and the keys of each JSON row, in this order; documented in the README ("The report").
COLUMNS = (
    "department",
    "section",
    "person",
    "person_name",
    "person_department",
    "approval",
    "subject_kind",
    "subject",
    "scope_kind",
    "scope",
    "service",
    "service_name_en",
    "service_name_zh",
    "service_category",
    "approver",
    "justification",
    "ticket",
    "valid_from",
    "valid_until",
    "review_due",
    "status",
    "state",
    "flags",
    "uses",
    "last_used",
    "last_review_by",
    "last_review_at",
    "last_review_decision",
    "last_review_note",
    "suspended_by",
    "suspended_at",
    "suspend_reason",
    "revoked_by",
    "revoked_at",
    "revoke_reason",
    "note",
)
TIMES = frozenset(
    {"valid_from", "valid_until", "review_due", "last_used", "last_review_at", "suspended_at", "revoked_at"}
)


@dataclass(frozen=True, slots=True)
class AccessRow:
    """One person covered by one approval (person None: a network, or a group that covers nobody today)."""

    department: str
    section: Section
    person: Person | None
    user: str | None  # the person's user name; a user approval's subject even when the directory lacks them
    approval: Approval
    state: State
    service: ServiceKey
    flags: tuple[str, ...]
    uses: int
    last_used: datetime | None
    note: str = ""

    @property
    def last_review(self) -> Review | None:
        return self.approval.reviews[-1] if self.approval.reviews else None


@dataclass(frozen=True, slots=True)
class DepartmentAccess:
    department: str
    rows: tuple[AccessRow, ...]  # access, then on-hold, then revoked; by approval number, then person
    by_service: tuple[ServiceCount, ...]  # the approvals giving access now, per service (then category, host)

    def section(self, name: Section) -> tuple[AccessRow, ...]:
        return tuple(row for row in self.rows if row.section == name)

    def people(self) -> int:
        """How many named people have access now (each once, however many approvals cover them)."""
        return len({row.user for row in self.rows if row.section == "access" and row.user})


@dataclass(frozen=True, slots=True)
class AccessReport:
    now: datetime
    since: datetime
    departments: tuple[DepartmentAccess, ...]


@dataclass(frozen=True, slots=True)
class Thresholds:
    """What the flags mean; the defaults are the department report's."""

    on_review_overdue: OverduePolicy = "suspend"
    expiring_days: int = EXPIRING_DAYS
    unused_days: int = UNUSED_DAYS


def section_of(approval: Approval, state: State, since: datetime) -> Section | None:
    """The one section an approval is in at a moment, or None (ended, or revoked before `since`)."""
    if approval.status is ApprovalStatus.REVOKED:
        return "revoked" if approval.revoked_at is not None and approval.revoked_at >= since else None
    if state is State.EXPIRED:
        return None
    return "access" if state in (State.ACTIVE, State.REVIEW_OVERDUE) else "on-hold"


def flags_of(
    approval: Approval, state: State, last_used: datetime | None, now: datetime, limits: Thresholds
) -> tuple[str, ...]:
    """`policy.report`'s expiring, review-overdue and unused sections, as words on the approval's rows."""
    if approval.status is ApprovalStatus.REVOKED or state is State.EXPIRED:
        return ()
    flags = []
    if approval.valid_until <= now + timedelta(days=limits.expiring_days):
        flags.append("expiring")
    if approval.review_due <= now:
        flags.append("review-due")
    idle_since = now - timedelta(days=limits.unused_days)
    in_force_long = max(approval.created_at, approval.valid_from) <= idle_since
    idle = last_used is None or last_used <= idle_since
    if state in (State.ACTIVE, State.REVIEW_OVERDUE) and in_force_long and idle:
        flags.append("unused")
    return tuple(flags)


def covered(approval: Approval, directory: Directory) -> list[tuple[str | None, Person | None, str]]:
    """The people an approval's subject names today, each once: (user, person, note)."""
    subject = approval.subject
    if approval.subject_kind is SubjectKind.USER:
        person = directory.person(subject)
        return [(subject, person, "" if person is not None else "not in the directory")]
    if approval.subject_kind is SubjectKind.NETWORK:
        return [(None, None, f"covers every client address in {subject}; no named person")]
    if approval.subject_kind is SubjectKind.GROUP:
        members = [person for person in directory.people.values() if subject in person.groups]
    else:
        members = [person for person in directory.people.values() if person.department == subject]
    if not members:
        return [(None, None, f"no one in the directory is in {approval.subject_kind} {subject}")]
    return [(person.user, person, "") for person in sorted(members, key=lambda person: person.user)]


def build_access_report(
    approvals: Iterable[Approval],
    directory: Directory,
    usage: Usage,
    catalogue: ServiceCatalogue,
    now: datetime,
    since: datetime,
    department: str | None = None,
    limits: Thresholds | None = None,
) -> AccessReport:
    """Every department with a row (or just `department`, even with none), `-` (no department) last."""
    limits = limits or Thresholds()
    rows: dict[str, list[AccessRow]] = {} if department is None else {department: []}
    for approval in sorted(approvals, key=_number):
        name = department_of(approval)
        if department is not None and name != department:
            continue
        state = approval.state(now, limits.on_review_overdue)
        section = section_of(approval, state, since)
        if section is None:
            continue
        uses, last_used = usage.get(approval.id, (0, None))
        flags = flags_of(approval, state, last_used, now, limits)
        key = service_key(approval, catalogue)
        for user, person, note in covered(approval, directory):
            row = AccessRow(name, section, person, user, approval, state, key, flags, uses, last_used, note)
            rows.setdefault(name, []).append(row)
    order = {name: index for index, name in enumerate(ACCESS_SECTIONS)}
    departments = []
    for name, members in sorted(rows.items(), key=lambda pair: (pair[0] == NO_DEPARTMENT, pair[0])):
        members.sort(key=lambda row: (order[row.section], _number(row.approval), row.user or ""))
        giving = {row.approval.id: row.approval for row in members if row.section == "access"}
        departments.append(DepartmentAccess(name, tuple(members), count_services(giving.values(), catalogue)))
    return AccessReport(now, since, tuple(departments))


def row_record(row: AccessRow, zone: tzinfo) -> dict[str, Any]:
    """A row as the CSV and the JSON give it: COLUMNS' keys, times in ISO 8601 local time, absent as None."""
    approval = row.approval
    review = row.last_review
    scope_kind = "service" if approval.service else "host" if approval.host else "category"
    person = row.person
    values: dict[str, Any] = {
        "department": row.department,
        "section": row.section,
        "person": row.user,
        "person_name": (person.name or None) if person else None,
        "person_department": person.department if person else None,
        "approval": approval.id,
        "subject_kind": str(approval.subject_kind),
        "subject": approval.subject,
        "scope_kind": scope_kind,
        "scope": approval.service or approval.host or approval.category,
        "service": row.service.service,
        "service_name_en": row.service.name_en or None,
        "service_name_zh": row.service.name_zh or None,
        "service_category": row.service.category,
        "approver": approval.approver,
        "justification": approval.justification,
        "ticket": approval.ticket or None,
        "valid_from": approval.valid_from,
        "valid_until": approval.valid_until,
        "review_due": approval.review_due,
        "status": str(approval.status),
        "state": str(row.state),
        "flags": list(row.flags),
        "uses": row.uses,
        "last_used": row.last_used,
        "last_review_by": review.by if review else None,
        "last_review_at": review.at if review else None,
        "last_review_decision": review.decision if review else None,
        "last_review_note": (review.note or None) if review else None,
        "suspended_by": approval.suspended_by,
        "suspended_at": approval.suspended_at,
        "suspend_reason": approval.suspend_reason,
        "revoked_by": approval.revoked_by,
        "revoked_at": approval.revoked_at,
        "revoke_reason": approval.revoke_reason,
        "note": row.note or None,
    }
    for name in TIMES:
        moment = values[name]
        values[name] = moment.astimezone(zone).isoformat() if moment is not None else None
    return {name: values[name] for name in COLUMNS}


def csv_cells(record: dict[str, Any]) -> list[str]:
    """A record as one CSV line's cells: none as empty, the flags joined by `;`."""
    cells = []
    for name in COLUMNS:
        value = record[name]
        cells.append(";".join(value) if isinstance(value, list) else "" if value is None else str(value))
    return cells


def rows_of(report: AccessReport) -> Sequence[AccessRow]:
    return [row for department in report.departments for row in department.rows]


def _number(approval: Approval) -> int:
    digits = approval.id.lstrip("A")
    return int(digits) if digits.isdigit() else 0
