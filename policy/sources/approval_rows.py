"""Checking the rows of an approval file: sealed exports restored as they are, the rest under the grant rules.

A record (a row with an id) is first checked for structure and types (`check_rows`); `check_records` then
restores it exactly when its seal verifies (this store's own export, so export -> import -> export is
exact), and otherwise applies the grant rules to it (policy.lifecycle.check_imported_record). A new grant
becomes the GrantSpec `approvals grant` would make; `build_grants` applies the approval rules
(policy.lifecycle.build_approval) to each, once. Pure: rows in, values and problems out.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from policy.approvals import Approval, ApprovalStatus, Review, SubjectKind
from policy.categories import validate_category
from policy.directory import Directory
from policy.identity import IdentityRules, normalise_username
from policy.lifecycle import ApprovalRules, GrantSpec, LifecycleError, build_approval, check_imported_record
from policy.sources.approval_files import ID_RE, RECORD_ONLY, Row, RowError, RowProblem, Values, is_sealed


def _present(value: Any) -> bool:
    return value is not None and value != "" and value != []


def _text(values: Values, key: str, required: bool = False, strip: bool = True) -> str | None:
    value = values.get(key)
    if isinstance(value, bool) or not (value is None or isinstance(value, str | int | float)):
        raise RowError(f"{key}: expected text, got {type(value).__name__}")
    text = value if isinstance(value, str) else "" if value is None else str(value)
    if strip:
        text = text.strip()
    if not text.strip():
        if required:
            raise RowError(f"{key} is required")
        return None
    return text


def _kind(values: Values) -> SubjectKind:
    text = _text(values, "subject_kind", required=True) or ""
    try:
        return SubjectKind(text.lower())
    except ValueError:
        known = ", ".join(kind.value for kind in SubjectKind)
        raise RowError(f"subject_kind: {text!r} is not one of {known}") from None


def _parse_moment(value: Any, key: str) -> datetime | date:
    if isinstance(value, datetime | date):
        return value
    if not isinstance(value, str):
        raise RowError(f"{key}: expected a date or time, got {type(value).__name__}")
    text = value.strip()
    if len(text) == 10:
        try:
            return date.fromisoformat(text)
        except ValueError:
            pass
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        raise RowError(f"{key}: {value!r} is not a date (YYYY-MM-DD) or ISO 8601 date and time") from None


def _stored_moment(values: Values, key: str, required: bool) -> datetime | None:
    """A time in an exported record: ISO 8601, UTC unless it says otherwise (as Approval.from_record reads it)."""
    value = values.get(key)
    if not _present(value):
        if required:
            raise RowError(f"{key} is required in an existing record")
        return None
    moment = _parse_moment(value, key)
    if not isinstance(moment, datetime):
        moment = datetime.combine(moment, time.min)
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _grant_moment(value: Any, key: str, zone: ZoneInfo, end_of_day: bool) -> datetime:
    moment = _parse_moment(value, key)
    if not isinstance(moment, datetime):
        day = moment + timedelta(days=1) if end_of_day else moment
        return datetime.combine(day, time.min, tzinfo=zone).astimezone(UTC)
    return (moment if moment.tzinfo is not None else moment.replace(tzinfo=zone)).astimezone(UTC)


def _reviews(value: Any) -> tuple[Review, ...]:
    if not _present(value):
        return ()
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as error:
            raise RowError(f"reviews: not a JSON list: {error.msg}") from None
    if not isinstance(value, list):
        raise RowError("reviews: expected a list of {by, at, decision, note}")
    reviews: list[Review] = []
    for number, item in enumerate(value, 1):
        if not isinstance(item, dict):
            raise RowError(f"reviews[{number}]: expected {{by, at, decision, note}}")
        unknown = sorted(set(map(str, item)) - {"by", "at", "decision", "note"})
        if unknown:
            raise RowError(f"reviews[{number}]: unknown key(s) {', '.join(unknown)}")
        try:
            by = _text(item, "by", required=True, strip=False) or ""
            at = _stored_moment(item, "at", required=True)
            decision = _text(item, "decision", required=True) or ""
            note = _text(item, "note", strip=False) or ""
        except RowError as error:
            raise RowError(f"reviews[{number}]: {error}") from None
        if decision not in ("keep", "revoke"):
            raise RowError(f"reviews[{number}]: decision must be keep or revoke, got {decision!r}")
        assert at is not None
        reviews.append(Review(by=by, at=at, decision="keep" if decision == "keep" else "revoke", note=note))
    return tuple(reviews)


def _record_scope(values: Values) -> tuple[str | None, str | None, str | None]:
    """(category, host, service) of a record: exactly one of them, the category a valid name."""
    category = _text(values, "category")
    host = _text(values, "host")
    service = _text(values, "service")
    if [category, host, service].count(None) != 2:
        raise RowError("give exactly one scope: category, service or host")
    if category is not None:
        try:
            validate_category(category)
        except ValueError as error:
            raise RowError(f"category: {error}") from None
    return category, host, service


def _record_status(values: Values) -> ApprovalStatus:
    status_text = _text(values, "status") or "active"
    try:
        return ApprovalStatus(status_text)
    except ValueError:
        known = ", ".join(item.value for item in ApprovalStatus)
        raise RowError(f"status: {status_text!r} is not one of {known}") from None


def check_record(values: Values) -> Approval:
    """An exported record, restored as it is: checked for structure and types only."""
    approval_id = _text(values, "id", required=True) or ""
    if not ID_RE.match(approval_id):
        raise RowError(f"id: {approval_id!r} is not an approval id (A followed by a number)")
    kind = _kind(values)
    category, host, service = _record_scope(values)
    status = _record_status(values)
    moments = {
        key: _stored_moment(values, key, required)
        for key, required in (
            ("created_at", True),
            ("valid_from", True),
            ("valid_until", True),
            ("review_due", True),
            ("revoked_at", False),
            ("suspended_at", False),
        )
    }
    created_at, valid_from, valid_until, review_due = (
        moments["created_at"],
        moments["valid_from"],
        moments["valid_until"],
        moments["review_due"],
    )
    assert created_at and valid_from and valid_until and review_due
    return Approval(
        id=approval_id,
        subject_kind=kind,
        subject=_text(values, "subject", required=True, strip=False) or "",
        category=category,
        host=host,
        department=_text(values, "department", strip=False) or "",
        approver=_text(values, "approver", required=True, strip=False) or "",
        justification=_text(values, "justification", strip=False) or "",
        created_by=_text(values, "created_by", required=True, strip=False) or "",
        created_at=created_at,
        valid_from=valid_from,
        valid_until=valid_until,
        review_due=review_due,
        ticket=_text(values, "ticket", strip=False),
        service=service,
        status=status,
        revoked_by=_text(values, "revoked_by", strip=False),
        revoked_at=moments["revoked_at"],
        revoke_reason=_text(values, "revoke_reason", strip=False),
        suspended_by=_text(values, "suspended_by", strip=False),
        suspended_at=moments["suspended_at"],
        suspend_reason=_text(values, "suspend_reason", strip=False),
        reviews=_reviews(values.get("reviews")),
    )


@dataclass(frozen=True, slots=True)
class GrantContext:
    """What a new grant's row is read with: user names as the proxy gives them, local dates, who imports, now."""

    identity: IdentityRules
    zone: ZoneInfo
    actor: str
    now: datetime


def check_grant(values: Values, context: GrantContext) -> GrantSpec:
    """A new grant, as `approvals grant` would ask for it; the rules are applied later (build_approval)."""
    extra = [key for key in RECORD_ONLY if _present(values.get(key))]
    if extra:
        raise RowError(
            f"no id, so this is a new grant, which takes {', '.join(extra)} from the rules: "
            "leave them empty, or give the id of an existing record"
        )
    identity = context.identity
    kind = _kind(values)
    subject = _text(values, "subject", required=True) or ""
    if kind is SubjectKind.USER:
        subject = normalise_username(subject, identity)
    category = _text(values, "category")
    if category is not None:
        try:
            category = validate_category(category)
        except ValueError as error:
            raise RowError(f"category: {error}") from None
    owner = _text(values, "owner_department")
    department = _text(values, "department")
    if owner and department and owner != department:
        raise RowError(f"owner_department {owner!r} and department {department!r} disagree")
    approver = _text(values, "approver") or ""
    valid_from = context.now
    if _present(values.get("valid_from")):
        valid_from = _grant_moment(values["valid_from"], "valid_from", context.zone, end_of_day=False)
    if not _present(values.get("valid_until")):
        raise RowError("valid_until is required: the last day of validity (YYYY-MM-DD)")
    valid_until = _grant_moment(values["valid_until"], "valid_until", context.zone, end_of_day=True)
    return GrantSpec(
        subject_kind=kind,
        subject=subject,
        category=category,
        host=_text(values, "host"),
        approver=normalise_username(approver, identity) if approver else "",
        justification=_text(values, "justification", strip=False) or "",
        created_by=context.actor,
        valid_from=valid_from,
        valid_until=valid_until,
        department=owner or department,
        ticket=_text(values, "ticket"),
        service=_text(values, "service"),
    )



@dataclass(slots=True)
class CheckedRows:
    """The rows of a file sorted out: records to restore, grants to build, and what is wrong with the rest."""

    records: list[tuple[Row, Approval]] = field(default_factory=list)
    grants: list[tuple[Row, GrantSpec]] = field(default_factory=list)
    problems: list[RowProblem] = field(default_factory=list)


def check_rows(rows: Iterable[Row], context: GrantContext) -> CheckedRows:
    """Every row checked for structure (before any connection): records become Approvals, new grants GrantSpecs."""
    checked = CheckedRows()
    first_seen: dict[str, str] = {}
    for row in rows:
        try:
            if "" in row.values:
                raise RowError(str(row.values[""]))
            if _present(row.values.get("id")):
                approval = check_record(row.values)
                if approval.id in first_seen:
                    raise RowError(f"id {approval.id} already appears at {first_seen[approval.id]}")
                first_seen[approval.id] = row.where
                checked.records.append((row, approval))
            else:
                checked.grants.append((row, check_grant(row.values, context)))
        except RowError as error:
            checked.problems.append(RowProblem(row, str(error)))
    return checked


def build_grants(
    specs: Iterable[tuple[Row, GrantSpec]], now: datetime, directory: Directory, rules: ApprovalRules
) -> tuple[list[Approval], list[RowProblem]]:
    """Every new grant through build_approval, once (ids come later, once every row has passed)."""
    grants: list[Approval] = []
    problems: list[RowProblem] = []
    for row, spec in specs:
        try:
            grants.append(build_approval(spec, now, directory, rules))
        except LifecycleError as error:
            problems.append(RowProblem(row, str(error)))
    return grants, problems


def check_records(
    records: Iterable[tuple[Row, Approval]], key: bytes, now: datetime, directory: Directory, rules: ApprovalRules
) -> tuple[frozenset[str], list[RowProblem]]:
    """(ids of the sealed records, problems): a record this store did not seal must pass the grant rules."""
    sealed: set[str] = set()
    problems: list[RowProblem] = []
    for row, approval in records:
        if is_sealed(row.values, approval, key):
            sealed.add(approval.id)
            continue
        try:
            check_imported_record(approval, now, directory, rules)
        except LifecycleError as error:
            problems.append(RowProblem(row, f"{approval.id} is checked like a grant (no seal of this store): {error}"))
    return frozenset(sealed), problems
