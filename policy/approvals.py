"""The approval record: who may use what, on whose authority, why, until when, and when it is reviewed.

The guidelines ask for access only with the prior approval of the head of the department, for a genuine need,
revoked promptly when no longer needed and critically reviewed regularly. So an approval is a record that can
be reviewed, not a yes/no flag: a subject (a user, a group, a whole department or a client network), a scope
(one restricted category or one service's host), the approver, the justification, its validity, the next
review date, and what happened to it since.
"""

from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Literal

from policy.hosts import is_ip_literal

OverduePolicy = Literal["suspend", "warn"]


class SubjectKind(StrEnum):
    USER = "user"
    GROUP = "group"
    DEPARTMENT = "department"
    NETWORK = "network"


# Most specific first: a personal approval explains a pass before a group's, a department's or a network's.
SUBJECT_RANK = {SubjectKind.USER: 0, SubjectKind.GROUP: 1, SubjectKind.DEPARTMENT: 2, SubjectKind.NETWORK: 3}


class ApprovalStatus(StrEnum):
    ACTIVE = "active"
    SUSPENDED = "suspended"
    REVOKED = "revoked"


class State(StrEnum):
    """What an approval amounts to at a moment: stored status plus the clock."""

    ACTIVE = "active"
    PENDING = "pending"  # not valid yet
    EXPIRED = "expired"
    REVOKED = "revoked"
    SUSPENDED = "suspended"  # suspended by hand, or review overdue with on_review_overdue: suspend
    REVIEW_OVERDUE = "review-overdue"  # still passing, flagged (on_review_overdue: warn)


@dataclass(frozen=True, slots=True)
class Review:
    by: str
    at: datetime
    decision: Literal["keep", "revoke"]
    note: str = ""


@dataclass(frozen=True, slots=True)
class Approval:
    id: str
    subject_kind: SubjectKind
    subject: str
    category: str | None  # exactly one of category / host / service
    host: str | None
    department: str  # the department whose head approved (and who reviews it)
    approver: str
    justification: str
    created_by: str
    created_at: datetime
    valid_from: datetime
    valid_until: datetime
    review_due: datetime
    ticket: str | None = None
    service: str | None = None  # a catalogue service (policy.services): every host and range of it
    status: ApprovalStatus = ApprovalStatus.ACTIVE
    revoked_by: str | None = None
    revoked_at: datetime | None = None
    revoke_reason: str | None = None
    suspended_by: str | None = None
    suspended_at: datetime | None = None
    suspend_reason: str | None = None
    reviews: tuple[Review, ...] = field(default=())

    # ---- what it means now ----------------------------------------------------------------

    def state(self, now: datetime, on_review_overdue: OverduePolicy = "suspend") -> State:
        if self.status is ApprovalStatus.REVOKED:
            return State.REVOKED
        if now >= self.valid_until:
            return State.EXPIRED
        if now < self.valid_from:
            return State.PENDING
        if self.status is ApprovalStatus.SUSPENDED:
            return State.SUSPENDED
        if now >= self.review_due:
            return State.SUSPENDED if on_review_overdue == "suspend" else State.REVIEW_OVERDUE
        return State.ACTIVE

    def passes(self, now: datetime, on_review_overdue: OverduePolicy = "suspend") -> bool:
        return self.state(now, on_review_overdue) in (State.ACTIVE, State.REVIEW_OVERDUE)

    def scope(self) -> str:
        if self.service:
            return f"service {self.service}"
        return f"host {self.host}" if self.host else f"category {self.category}"

    def describe(self) -> str:
        return f"{self.id} ({self.subject_kind} {self.subject}, {self.scope()})"

    def covers(self, category: str, host: str | None, service: str | None = None) -> bool:
        """Whether this approval's scope covers a request to `host` (of `service`) in restricted `category`.

        A service scope covers every host of the service, whatever category lists the host; a host scope covers
        the host and its subdomains on label boundaries; an IP literal only itself (an approval for `0.1` must
        not cover `192.168.0.1`).
        """
        if self.service is not None:
            return service == self.service
        if self.host is not None:
            if host is None:
                return False
            return host == self.host or (host.endswith("." + self.host) and not is_ip_literal(host))
        return self.category == category

    def applies_to_network(self, client_ip: str | None) -> bool:
        if self.subject_kind is not SubjectKind.NETWORK or not client_ip:
            return False
        try:
            return ipaddress.ip_address(client_ip) in ipaddress.ip_network(self.subject, strict=False)
        except ValueError:
            return False

    # ---- changes --------------------------------------------------------------------------

    def revoked(self, by: str, at: datetime, reason: str | None) -> Approval:
        return replace(self, status=ApprovalStatus.REVOKED, revoked_by=by, revoked_at=at, revoke_reason=reason)

    def suspended(self, by: str, at: datetime, reason: str | None) -> Approval:
        return replace(self, status=ApprovalStatus.SUSPENDED, suspended_by=by, suspended_at=at, suspend_reason=reason)

    def reviewed(self, review: Review, next_due: datetime) -> Approval:
        """Record a review; `keep` moves the next review date and lifts a suspension."""
        if review.decision == "revoke":
            return replace(self, reviews=(*self.reviews, review)).revoked(review.by, review.at, review.note or "review")
        return replace(
            self,
            reviews=(*self.reviews, review),
            review_due=min(next_due, self.valid_until),
            status=ApprovalStatus.ACTIVE,
            suspended_by=None,
            suspended_at=None,
            suspend_reason=None,
        )

    # ---- storage --------------------------------------------------------------------------

    def to_record(self) -> dict[str, Any]:
        record = {name: getattr(self, name) for name in self.__dataclass_fields__}  # shallow: asdict deep-copies
        for key, value in list(record.items()):
            if isinstance(value, datetime):
                record[key] = value.isoformat()
        record["subject_kind"] = str(self.subject_kind)
        record["status"] = str(self.status)
        record["reviews"] = [
            {"by": r.by, "at": r.at.isoformat(), "decision": r.decision, "note": r.note} for r in self.reviews
        ]
        return record

    def to_json(self) -> str:
        return json.dumps(self.to_record(), ensure_ascii=False, sort_keys=True)

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> Approval:
        values = dict(record)
        for key in ("created_at", "valid_from", "valid_until", "review_due", "revoked_at", "suspended_at"):
            if values.get(key) is not None:
                values[key] = _aware(datetime.fromisoformat(values[key]))
        values["subject_kind"] = SubjectKind(values["subject_kind"])
        values["status"] = ApprovalStatus(values.get("status", "active"))
        values["reviews"] = tuple(
            Review(r["by"], _aware(datetime.fromisoformat(r["at"])), r["decision"], r.get("note", ""))
            for r in values.get("reviews", ())
        )
        return cls(**values)

    @classmethod
    def from_json(cls, text: str | bytes) -> Approval:
        return cls.from_record(json.loads(text))


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def utc_now() -> datetime:
    return datetime.now(UTC)


PLACEHOLDERS = frozenset({"test", "testing", "n/a", "na", "none", "need it", "needed", "required", "work", "access"})


def justification_problem(text: str, minimum: int) -> str | None:
    """Why a justification is not a genuine business need, or None if it reads like one."""
    cleaned = " ".join(text.split())
    if not cleaned:
        return "a justification is required: the genuine business need"
    if cleaned.lower().strip(".!") in PLACEHOLDERS:
        return f"{text!r} is a placeholder, not a justification"
    if len(cleaned) < minimum:
        return f"a justification of at least {minimum} characters is required, got {len(cleaned)}"
    if minimum and len(cleaned.split()) < 3 and not any("\u3000" <= ch <= "\u9fff" for ch in cleaned):
        return "a justification needs at least three words: say what the access is for"
    return None
