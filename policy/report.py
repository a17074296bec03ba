"""What a department head looks at: the approvals' sections, and one-line summaries of audit entries.

Pure computation on plain values (approvals, usage, audit records): no Redis, no clock of its own, so the
sections can be checked at a fixed `now`. `clearance audit` renders the summaries; `clearance report` shows
the sections as flags on its rows (`policy.access_report`, one row per person × approval), and the heads'
reminders use the same definitions.

The five sections, per department (`Approval.department`, "-" for none):

- active: approvals passing traffic now (state active, or review-overdue under `on_review_overdue: warn`),
  counted per scope (`category webmail`, `host web.whatsapp.com`);
- expiring: not revoked, not expired yet, and `valid_until` within `expiring_days` (14) of now, whatever the
  state (a suspended approval that runs out is still worth a word with its head);
- review overdue: not revoked, not expired, and `review_due <= now` (the ones `on_review_overdue: suspend`
  has suspended, or `warn` flags), suspended by hand or not;
- unused: passing traffic now, in force (created and valid) for at least `unused_days` (30), and not used in
  those days: never used, or last used more than `unused_days` ago. A new approval is not flagged before it
  has had `unused_days` to be used;
- revoked: revoked at or after `since`.

Approvals are counted by service too (`active_by_service`): a service approval under its service, a host
approval under the catalogue service the host belongs to, a category approval (and a host of no service) under
its category; the audit's grants and revocations likewise (`count_by_service`). The catalogue is passed in.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta, tzinfo
from typing import Any

from .approvals import Approval, ApprovalStatus, OverduePolicy, State
from .state import ServiceCatalogue

NO_DEPARTMENT = "-"
EXPIRING_DAYS = 14
UNUSED_DAYS = 30
SECTIONS = ("active", "expiring", "review_overdue", "unused", "revoked")
SECTION_TITLES = {
    "active": "Active approvals by scope",
    "expiring": f"Expiring within {EXPIRING_DAYS} days",
    "review_overdue": "Review overdue",
    "unused": f"Not used for {UNUSED_DAYS}+ days",
    "revoked": "Revoked in the period",
}

Usage = Mapping[str, tuple[int, datetime | None]]


@dataclass(frozen=True, slots=True)
class Listed:
    """One approval in a section, with what the report shows about it."""

    approval: Approval
    state: State
    uses: int
    last_used: datetime | None


@dataclass(frozen=True, slots=True)
class ScopeCount:
    scope: str  # "category webmail" / "host web.whatsapp.com"
    count: int
    ids: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class DepartmentReport:
    department: str
    active: tuple[Listed, ...]
    expiring: tuple[Listed, ...]  # soonest first
    review_overdue: tuple[Listed, ...]  # longest overdue first
    unused: tuple[Listed, ...]  # never used first, then longest unused
    revoked: tuple[Listed, ...]  # in order of revocation

    @property
    def active_by_scope(self) -> tuple[ScopeCount, ...]:
        grouped: dict[str, list[str]] = {}
        for item in self.active:
            grouped.setdefault(item.approval.scope(), []).append(item.approval.id)
        return tuple(ScopeCount(scope, len(ids), tuple(ids)) for scope, ids in sorted(grouped.items()))

    def section(self, name: str) -> tuple[Listed, ...]:
        if name not in SECTIONS:
            raise KeyError(name)
        items: tuple[Listed, ...] = getattr(self, name)
        return items

    def is_empty(self) -> bool:
        return not any(self.section(name) for name in SECTIONS)


@dataclass(frozen=True, slots=True)
class Report:
    now: datetime
    since: datetime
    departments: tuple[DepartmentReport, ...]


@dataclass(frozen=True, slots=True)
class ServiceKey:
    """What an approval is counted under: a catalogue service (with its names), else its category or host."""

    service: str | None  # the catalogue id; None when the approval is for a category or a host of no service
    name_en: str = ""
    name_zh: str = ""
    category: str | None = None
    host: str | None = None  # a host approval whose host is no service's

    @property
    def label(self) -> str:
        if self.service is not None:
            return f"service {self.service}"
        return f"host {self.host}" if self.host else f"category {self.category}"


@dataclass(frozen=True, slots=True)
class ServiceCount:
    key: ServiceKey
    count: int
    ids: tuple[str, ...]


def service_key(approval: Approval, catalogue: ServiceCatalogue) -> ServiceKey:
    """The service an approval is about: its own, its host's, or none (its category)."""
    found = approval.service or (catalogue.service_of(approval.host) if approval.host else None)
    service = catalogue.by_id.get(found) if found else None  # a switched-off service still names its approvals
    if service is not None:
        return ServiceKey(service.id, service.name_en, service.name_zh, service.category)
    if found:
        return ServiceKey(found)  # a service no longer in the catalogue: its id is all there is
    return ServiceKey(None, category=approval.category, host=approval.host)


def active_by_service(department: DepartmentReport, catalogue: ServiceCatalogue) -> tuple[ServiceCount, ...]:
    """The department's active approvals counted per service (then per category), services first."""
    return count_services((item.approval for item in department.active), catalogue)


def count_services(approvals: Iterable[Approval], catalogue: ServiceCatalogue) -> tuple[ServiceCount, ...]:
    """Approvals counted per service (then per category or host), services first, ids in number order."""
    grouped: dict[ServiceKey, list[str]] = {}
    for approval in sorted(approvals, key=_number):
        grouped.setdefault(service_key(approval, catalogue), []).append(approval.id)
    ordered = sorted(grouped.items(), key=lambda pair: (pair[0].service is None, pair[0].label))
    return tuple(ServiceCount(key, len(ids), tuple(ids)) for key, ids in ordered)


GRANT_ACTIONS = frozenset({"grant", "import", "restore"})
REVOKE_ACTIONS = frozenset({"revoke", "review-revoke"})


@dataclass(frozen=True, slots=True)
class ServiceTally:
    """Audit entries about approvals of one service (or category, or host): how many granted, how many revoked."""

    label: str  # `service whatsapp`, `category webmail`, `host example.com`
    grants: int
    revokes: int


def count_by_service(entries: Iterable[Mapping[str, str]]) -> tuple[ServiceTally, ...]:
    """Grants (grant, import, restore) and revocations of approvals in audit entries, per approval scope."""
    tallies: dict[str, list[int]] = {}
    for entry in entries:
        action = entry.get("action", "")
        column = 0 if action in GRANT_ACTIONS else 1 if action in REVOKE_ACTIONS else None
        record = parse_side(entry.get("after", "")) or parse_side(entry.get("before", ""))
        if column is None or not _is_approval(record):
            continue
        assert record is not None
        tallies.setdefault(_scope_of(record), [0, 0])[column] += 1
    ordered = sorted(tallies.items(), key=lambda pair: (not pair[0].startswith("service "), pair[0]))
    return tuple(ServiceTally(label, grants, revokes) for label, (grants, revokes) in ordered)


def _scope_of(record: Mapping[str, Any]) -> str:
    """An approval record's scope as `Approval.scope` words it."""
    if record.get("service"):
        return f"service {record['service']}"
    return f"host {record['host']}" if record.get("host") else f"category {record.get('category')}"


def department_of(approval: Approval) -> str:
    return approval.department or NO_DEPARTMENT


def build_report(
    approvals: Iterable[Approval],
    usage: Usage,
    now: datetime,
    since: datetime,
    on_review_overdue: OverduePolicy = "suspend",
    department: str | None = None,
    expiring_days: int = EXPIRING_DAYS,
    unused_days: int = UNUSED_DAYS,
) -> Report:
    """The five sections for every department with something in one of them (or just `department`)."""
    by_department: dict[str, list[Approval]] = {}
    for approval in approvals:
        name = department_of(approval)
        if department is None or name == department:
            by_department.setdefault(name, []).append(approval)
    if department is not None:
        by_department.setdefault(department, [])
    reports = []
    for name, members in by_department.items():
        report = _department(name, members, usage, now, since, on_review_overdue, expiring_days, unused_days)
        if department is not None or not report.is_empty():
            reports.append(report)
    reports.sort(key=lambda item: (item.department == NO_DEPARTMENT, item.department))
    return Report(now=now, since=since, departments=tuple(reports))


def _department(
    name: str,
    approvals: list[Approval],
    usage: Usage,
    now: datetime,
    since: datetime,
    on_review_overdue: OverduePolicy,
    expiring_days: int,
    unused_days: int,
) -> DepartmentReport:
    active: list[Listed] = []
    expiring: list[Listed] = []
    overdue: list[Listed] = []
    unused: list[Listed] = []
    revoked: list[Listed] = []
    horizon = now + timedelta(days=expiring_days)
    idle_since = now - timedelta(days=unused_days)
    for approval in approvals:
        uses, last_used = usage.get(approval.id, (0, None))
        item = Listed(approval, approval.state(now, on_review_overdue), uses, last_used)
        if approval.status is ApprovalStatus.REVOKED:
            if approval.revoked_at is not None and approval.revoked_at >= since:
                revoked.append(item)
            continue
        if now >= approval.valid_until:
            continue  # expired: in no section
        if approval.valid_until <= horizon:
            expiring.append(item)
        if approval.review_due <= now:
            overdue.append(item)
        if item.state in (State.ACTIVE, State.REVIEW_OVERDUE):
            active.append(item)
            in_force_since = max(approval.created_at, approval.valid_from)
            if in_force_since <= idle_since and (last_used is None or last_used <= idle_since):
                unused.append(item)
    never = datetime.min.replace(tzinfo=now.tzinfo)
    return DepartmentReport(
        department=name,
        active=tuple(sorted(active, key=lambda item: (item.approval.scope(), _number(item.approval)))),
        expiring=tuple(sorted(expiring, key=lambda item: (item.approval.valid_until, _number(item.approval)))),
        review_overdue=tuple(sorted(overdue, key=lambda item: (item.approval.review_due, _number(item.approval)))),
        unused=tuple(sorted(unused, key=lambda item: (item.last_used or never, _number(item.approval)))),
        revoked=tuple(sorted(revoked, key=lambda item: (item.approval.revoked_at or never, _number(item.approval)))),
    )


def _number(approval: Approval) -> int:
    digits = approval.id.lstrip("A")
    return int(digits) if digits.isdigit() else 0


# ---- audit entries ----------------------------------------------------------------------------


def parse_side(text: str) -> dict[str, Any] | None:
    """One side (before / after) of an audit entry: a JSON object, or None when empty or not an object."""
    if not text:
        return None
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def change_summary(action: str, before: Mapping[str, Any] | None, after: Mapping[str, Any] | None, zone: tzinfo) -> str:
    """A short line on what an audit entry changed: `status active→revoked`, `granted user alice …`."""
    if _is_approval(before) or _is_approval(after):
        return _approval_change(action, before, after, zone)
    if action.startswith("categories-"):
        return _category_change(before, after)
    if _is_rule(after) or _is_rule(before):
        rule = after if after is not None else before
        assert rule is not None
        verb = "added" if before is None else "removed" if after is None else "changed"
        return f"{verb} rule {_describe_rule(rule)}"
    return _generic_change(before, after)


APPROVAL_FIELDS = (
    "status",
    "subject_kind",
    "subject",
    "category",
    "host",
    "service",
    "department",
    "approver",
    "valid_from",
    "valid_until",
    "review_due",
    "ticket",
    "justification",
)


def _is_approval(value: Mapping[str, Any] | None) -> bool:
    return value is not None and "subject_kind" in value and "review_due" in value


def _is_rule(value: Mapping[str, Any] | None) -> bool:
    return value is not None and "kind" in value and "path_prefix" in value


def _approval_change(
    action: str, before: Mapping[str, Any] | None, after: Mapping[str, Any] | None, zone: tzinfo
) -> str:
    if before is None and after is not None:
        verb = {"grant": "granted", "restore": "restored"}.get(action, "created")
        scope = _scope_of(after)
        until = _last_day(after.get("valid_until"), zone)
        return f"{verb} {after.get('subject_kind')} {after.get('subject')} {scope} until {until}"
    if after is None:
        return "deleted"
    assert before is not None
    parts = [
        f"{name} {_pair(name, before.get(name), after.get(name), zone)}"
        for name in APPROVAL_FIELDS
        if before.get(name) != after.get(name)
    ]
    added = after.get("reviews", [])[len(before.get("reviews", [])) :]
    new_reviews = [item for item in added if isinstance(item, dict)]
    for item in new_reviews:
        note = f": {item['note']}" if item.get("note") else ""
        parts.append(f"review {item.get('decision')} by {item.get('by')}{note}")
    for reason in ("revoke_reason", "suspend_reason"):
        if not new_reviews and after.get(reason) and after.get(reason) != before.get(reason):
            parts.append(f"reason: {after[reason]}")  # a review's reason is its note, already shown
    return ", ".join(parts) or "no change"


def _category_change(before: Mapping[str, Any] | None, after: Mapping[str, Any] | None) -> str:
    old = (before or {}).get("entries")
    new = (after or {}).get("entries")
    if isinstance(new, dict):  # an import: entries per category
        old_sizes = old if isinstance(old, dict) else {}
        sizes = ", ".join(f"{name} {old_sizes.get(name, 0):,}→{size:,}" for name, size in new.items())
        mode = (after or {}).get("mode")
        return f"{mode}: {sizes}" if mode else sizes
    if isinstance(new, int) and after is not None:
        text = f"entries {old:,}→{new:,}" if isinstance(old, int) else f"entries {new:,}"
        if "added" in after:
            text += f", {after['added']:,} new of {after.get('submitted', after['added']):,}"
        hosts = after.get("hosts")
        if isinstance(hosts, list) and hosts and len(hosts) <= 3 and after.get("submitted", 0) <= 3:
            text += f": {' '.join(str(host) for host in hosts)}"
        return text
    return _generic_change(before, after)


def _describe_rule(rule: Mapping[str, Any]) -> str:
    target = str(rule.get("host", "")) + ("" if rule.get("path_prefix", "/") == "/" else str(rule["path_prefix"]))
    return f"allow {target}" if rule.get("kind") == "allow" else f"{target} -> {rule.get('category')}"


def _generic_change(before: Mapping[str, Any] | None, after: Mapping[str, Any] | None) -> str:
    old = _flatten(before or {})
    new = _flatten(after or {})
    if before is None:
        return ", ".join(f"{key} {value}" for key, value in new.items())
    if after is None:
        return "removed " + ", ".join(f"{key} {value}" for key, value in old.items())
    return ", ".join(
        f"{key} {old.get(key, '-')}→{new.get(key, '-')}"
        for key in sorted(set(old) | set(new))
        if old.get(key) != new.get(key)
    )


def _flatten(value: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    flat: dict[str, str] = {}
    for key, item in value.items():
        if isinstance(item, dict):
            flat.update(_flatten(item, f"{prefix}{key}."))
        elif isinstance(item, list):
            flat[prefix + key] = ",".join(str(part) for part in item) or "-"
        elif item is None or item == "":
            continue
        else:
            flat[prefix + key] = str(item)
    return flat


def _pair(name: str, old: Any, new: Any, zone: tzinfo) -> str:
    """`old→new`; times as local days (with the minute when the day is the same), none as `-`."""
    shift = timedelta(seconds=1) if name == "valid_until" else timedelta(0)  # shown as the last day valid
    old_time, new_time = _moment(old, zone), _moment(new, zone)
    if old_time is None and new_time is None:
        return f"{_text(old)}→{_text(new)}"
    days = [moment - shift if moment else None for moment in (old_time, new_time)]
    form = "%Y-%m-%d %H:%M" if days[0] and days[1] and days[0].date() == days[1].date() else "%Y-%m-%d"
    shown = [day.strftime(form) if day else _text(value) for day, value in zip(days, (old, new), strict=True)]
    return "→".join(shown)


def _text(value: Any) -> str:
    return "-" if value is None or value == "" else str(value)


def _moment(value: Any, zone: tzinfo) -> datetime | None:
    if not isinstance(value, str) or len(value) < 19 or value[4] != "-" or value[10] != "T":
        return None
    try:
        return datetime.fromisoformat(value).astimezone(zone)
    except ValueError:
        return None


def _last_day(value: Any, zone: tzinfo) -> str:
    """`valid_until` is the first moment no longer valid; people read the last day it is."""
    moment = _moment(value, zone)
    return (moment - timedelta(seconds=1)).strftime("%Y-%m-%d") if moment else _text(value)
