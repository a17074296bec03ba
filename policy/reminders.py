"""Who is reminded of what: the heads' digest and the notes to people, computed from plain records at `now`.

Pure: approvals, requests, usage and the directory in, a list of typed mails out, with no clock and no I/O of
its own, so each kind can be checked at a fixed moment. The portal process (`icap_server.portal.reminders`)
reads the store, calls `plan_reminders`, and sends what has not been sent yet.

- **The digest**: one mail per head or delegate per period (a day, or an ISO week), listing for every
  department they head or deputise: pending requests (not their own), reviews overdue, reviews due within
  `review_due_days`, approvals unused for `unused_days`, and approvals ending within `expiring_days`. The
  last three mean what they mean in `clearance report` (`policy.report.build_report` computes them). No mail
  when there is nothing to say.
- **Notes to the person** of a user approval (a group, department or network approval has no one person; its
  head sees it in the digest): approved (an approval made in the last `note_window_days`), denied (a request
  declined in that window), about to expire (`expiry_notice_days` before the end, unless the approval was
  given for no longer than that: its approval note said when it ends) and suspended (by hand, or because its
  review is overdue under `on_review_overdue: suspend`; once per suspension).

Each mail carries a `mark`: the name under which "sent" is recorded, so that each goes once. A mark names what
it is about precisely enough that a new occasion gets a new one (a suspension lifted by a review and imposed
again is a new `suspended` mark), and `keep_until` says how long the record must outlive the occasion.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, tzinfo
from typing import Literal

from .approvals import Approval, ApprovalStatus, OverduePolicy, State, SubjectKind
from .directory import Directory, Person
from .report import Listed, Usage, build_report, department_of
from .requests import AccessRequest, RequestStatus

Schedule = Literal["off", "daily", "weekly"]
WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
KEEP = timedelta(days=30)  # how long a mark outlives the last moment its mail could be planned again


@dataclass(frozen=True, slots=True)
class ReminderRules:
    on_review_overdue: OverduePolicy = "suspend"
    review_due_days: int = 7
    unused_days: int = 30
    expiring_days: int = 14
    expiry_notice_days: int = 7
    note_window_days: int = 3
    notes: bool = True


@dataclass(frozen=True, slots=True)
class Records:
    """What the plan is made from, as the store returns it."""

    approvals: tuple[Approval, ...]
    requests: tuple[AccessRequest, ...]
    usage: Usage
    directory: Directory


@dataclass(frozen=True, slots=True)
class Recipient:
    user: str
    name: str
    email: str


@dataclass(frozen=True, slots=True)
class HeadDigest:
    """One head's (or delegate's) digest for one period."""

    mark: str
    to: Recipient
    period: str  # 2026-11-03, or 2026-W45
    departments: tuple[str, ...]  # those the head heads or deputises that have something listed
    pending: tuple[AccessRequest, ...]
    reviews_overdue: tuple[Listed, ...]
    reviews_due: tuple[Listed, ...]
    unused: tuple[Listed, ...]
    expiring: tuple[Listed, ...]
    keep_until: datetime

    @property
    def count(self) -> int:
        return sum(map(len, (self.pending, self.reviews_overdue, self.reviews_due, self.unused, self.expiring)))


@dataclass(frozen=True, slots=True)
class ApprovedNote:
    mark: str
    to: Recipient
    approval: Approval
    keep_until: datetime


@dataclass(frozen=True, slots=True)
class DeniedNote:
    mark: str
    to: Recipient
    request: AccessRequest
    keep_until: datetime


@dataclass(frozen=True, slots=True)
class ExpiringNote:
    mark: str
    to: Recipient
    approval: Approval
    keep_until: datetime


@dataclass(frozen=True, slots=True)
class SuspendedNote:
    mark: str
    to: Recipient
    approval: Approval
    for_review: bool  # suspended because its review is overdue (else by hand, with its reason)
    keep_until: datetime


Note = ApprovedNote | DeniedNote | ExpiringNote | SuspendedNote
Reminder = HeadDigest | Note


@dataclass(frozen=True, slots=True)
class Plan:
    reminders: tuple[Reminder, ...]
    unreachable: tuple[str, ...]  # people with something to be told and no e-mail address in the directory


# ---- periods ------------------------------------------------------------------------------------


def period_of(now: datetime, zone: tzinfo, schedule: Schedule) -> str:
    """The digest period `now` falls in: its local day, or its ISO week when weekly."""
    local = now.astimezone(zone)
    if schedule == "weekly":
        year, week, _ = local.isocalendar()
        return f"{year}-W{week:02d}"
    return local.date().isoformat()


def due_period(now: datetime, zone: tzinfo, schedule: Schedule, at: time, weekday: str = "monday") -> str | None:
    """The period whose digest is due at `now` (its moment has come), or None: not yet, or no schedule.

    A portal that was down at the moment sends the period's digest when it is back, still within the period.
    """
    if schedule == "off":
        return None
    local = now.astimezone(zone)
    day: date = local.date()
    if schedule == "weekly":
        day = day - timedelta(days=local.weekday()) + timedelta(days=WEEKDAYS.index(weekday))
    moment = datetime.combine(day, at, tzinfo=zone)
    return period_of(now, zone, schedule) if local >= moment else None


# ---- the plan -----------------------------------------------------------------------------------


def plan_reminders(records: Records, now: datetime, rules: ReminderRules, period: str | None) -> Plan:
    """Every mail due at `now`: the heads' digests for `period` (None: no digest now), then the notes."""
    unreachable: list[str] = []
    reminders: list[Reminder] = []
    if period is not None:
        reminders += _digests(records, now, rules, period, unreachable)
    if rules.notes:
        reminders += _notes(records, now, rules, unreachable)
    return Plan(tuple(reminders), tuple(sorted(set(unreachable))))


def recipient(person: Person | None) -> Recipient | None:
    if person is None or not person.email:
        return None
    return Recipient(person.user, person.name or person.user, person.email)


@dataclass
class _Sections:
    pending: list[AccessRequest]
    overdue: list[Listed]
    due: list[Listed]
    unused: list[Listed]
    expiring: list[Listed]


def _by_department(records: Records, now: datetime, rules: ReminderRules) -> dict[str, _Sections]:
    """What each department's heads are to hear of, in the report's order."""
    found: dict[str, _Sections] = {}

    def sections(name: str) -> _Sections:
        return found.setdefault(name, _Sections([], [], [], [], []))

    for request in records.requests:
        if request.status is RequestStatus.PENDING and request.department:
            sections(request.department).pending.append(request)
    report = build_report(
        records.approvals,
        records.usage,
        now,
        now,
        rules.on_review_overdue,
        expiring_days=rules.expiring_days,
        unused_days=rules.unused_days,
    )
    for department in report.departments:
        part = sections(department.department)
        part.overdue += department.review_overdue
        part.unused += department.unused
        part.expiring += department.expiring
    horizon = now + timedelta(days=rules.review_due_days)
    due = [a for a in records.approvals if a.status is not ApprovalStatus.REVOKED and now < a.review_due <= horizon]
    for approval in sorted(due, key=lambda item: (item.review_due, item.id)):
        if approval.review_due < approval.valid_until:  # a review after the end is no review: it just ends
            uses, last = records.usage.get(approval.id, (0, None))
            sections(department_of(approval)).due.append(
                Listed(approval, approval.state(now, rules.on_review_overdue), uses, last)
            )
    return found


def _digests(
    records: Records, now: datetime, rules: ReminderRules, period: str, unreachable: list[str]
) -> list[Reminder]:
    found = _by_department(records, now, rules)
    digests: list[Reminder] = []
    for person in sorted(records.directory.people.values(), key=lambda item: item.user):
        departments = sorted((person.heads | person.delegates) & found.keys())
        parts = [found[name] for name in departments]
        pending = tuple(r for part in parts for r in part.pending if r.user != person.user)  # not their own
        digest = HeadDigest(
            mark=f"digest:{period}:{person.user}",
            to=Recipient(person.user, person.name or person.user, person.email),
            period=period,
            departments=tuple(departments),
            pending=pending,
            reviews_overdue=tuple(item for part in parts for item in part.overdue),
            reviews_due=tuple(item for part in parts for item in part.due),
            unused=tuple(item for part in parts for item in part.unused),
            expiring=tuple(item for part in parts for item in part.expiring),
            keep_until=now + KEEP + timedelta(days=7),
        )
        if digest.count == 0:
            continue  # nothing to say
        if not person.email:
            unreachable.append(person.user)
            continue
        digests.append(digest)
    return digests


def _notes(records: Records, now: datetime, rules: ReminderRules, unreachable: list[str]) -> list[Reminder]:
    window = timedelta(days=rules.note_window_days)
    notes: list[Reminder] = []

    for request in records.requests:
        decided = request.decided_at
        if request.status is RequestStatus.DENIED and decided is not None and now - window <= decided <= now:
            person = recipient(records.directory.person(request.user))
            if person is None:
                unreachable.append(request.user)
            else:
                notes.append(DeniedNote(f"note:denied:{request.id}", person, request, decided + window + KEEP))
    for approval in _personal(records.approvals):
        person = recipient(records.directory.person(approval.subject))
        due = approval_notes(approval, person or Recipient(approval.subject, approval.subject, ""), now, rules)
        if due and person is None:
            unreachable.append(approval.subject)
        elif due:
            notes += due
    return notes


def _personal(approvals: Iterable[Approval]) -> list[Approval]:
    return [a for a in approvals if a.subject_kind is SubjectKind.USER and a.status is not ApprovalStatus.REVOKED]


def approval_notes(approval: Approval, to: Recipient, now: datetime, rules: ReminderRules) -> list[Note]:
    """The notes one personal approval is due at `now`: approved, expiring, suspended (each at most once)."""
    if approval.status is ApprovalStatus.REVOKED or now >= approval.valid_until:
        return []
    found: list[Note] = []
    window = timedelta(days=rules.note_window_days)
    if now - window <= approval.created_at <= now:
        found.append(ApprovedNote(f"note:approved:{approval.id}", to, approval, approval.created_at + window + KEEP))
    notice = timedelta(days=rules.expiry_notice_days)
    started = max(approval.created_at, approval.valid_from)
    if approval.valid_from <= now and approval.valid_until - now <= notice and approval.valid_until - started > notice:
        mark = f"note:expiring:{approval.id}:{approval.valid_until.isoformat()}"
        found.append(ExpiringNote(mark, to, approval, approval.valid_until + KEEP))
    if approval.state(now, rules.on_review_overdue) is State.SUSPENDED:
        for_review = approval.status is not ApprovalStatus.SUSPENDED
        since = approval.review_due if for_review else approval.suspended_at or approval.created_at
        mark = f"note:suspended:{approval.id}:{since.isoformat()}"
        found.append(SuspendedNote(mark, to, approval, for_review, approval.valid_until + KEEP))
    return found


def keep_for(reminder: Reminder, now: datetime) -> timedelta:
    """How long the reminder's "sent" record is kept (at least a day)."""
    return max(reminder.keep_until - now, timedelta(days=1))
