"""The department report and audit summaries, computed from plain values at a fixed moment (no Redis)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from policy.approvals import Approval, ApprovalStatus, Review, SubjectKind
from policy.report import Report, build_report, change_summary, parse_side

NOW = datetime(2026, 6, 15, 12, 0, tzinfo=UTC)
SINCE = datetime(2026, 5, 16, tzinfo=UTC)
HK = ZoneInfo("Asia/Hong_Kong")


def days(n: float) -> timedelta:
    return timedelta(days=n)


def make(number: int, department: str = "IT", **changes: Any) -> Approval:
    base = Approval(
        id=f"A{number}",
        subject_kind=SubjectKind.USER,
        subject=f"user{number}",
        category="webmail",
        host=None,
        department=department,
        approver="head",
        justification="liaison with overseas partners",
        created_by="admin",
        created_at=NOW - days(60),
        valid_from=NOW - days(60),
        valid_until=NOW + days(100),
        review_due=NOW + days(50),
    )
    return replace(base, **changes)


APPROVALS = [
    make(1),  # used yesterday: active only
    make(2, category=None, host="web.whatsapp.com"),  # never used in 60 days: active, unused
    make(3, valid_until=NOW + days(10)),  # used recently, runs out: active, expiring
    make(4, review_due=NOW - days(1)),  # suspended by the overdue review: overdue only
    make(5, status=ApprovalStatus.REVOKED, revoked_by="head", revoked_at=NOW - days(5), revoke_reason="left"),
    make(6, status=ApprovalStatus.REVOKED, revoked_by="head", revoked_at=NOW - days(40)),  # before `since`
    make(7, valid_until=NOW - days(1), review_due=NOW - days(2)),  # expired: nowhere
    make(8, created_at=NOW - days(10), valid_from=NOW - days(10)),  # new, never used: active only
    make(9),  # last used 31 days ago: active, unused
    make(10, valid_from=NOW + days(5), valid_until=NOW + days(12), created_at=NOW - days(1)),  # pending: expiring
    make(11, status=ApprovalStatus.SUSPENDED, suspended_by="head", suspended_at=NOW - days(3)),  # nowhere
    make(12, "HR", category="cloud-storage"),  # last used exactly 30 days ago: active, unused
    make(13, "", subject_kind=SubjectKind.NETWORK, subject="10.20.30.0/24", review_due=NOW - days(3)),
    make(14, "Legal", valid_until=NOW - days(30), review_due=NOW - days(40)),  # expired: no Legal section
    make(15, created_at=NOW - days(90), valid_from=NOW - days(20)),  # valid for only 20 days: not unused
]
USAGE = {
    "A1": (40, NOW - days(1)),
    "A3": (5, NOW - days(2)),
    "A4": (9, NOW - days(2)),
    "A9": (3, NOW - days(31)),
    "A12": (1, NOW - days(30)),
    "A13": (100, NOW - days(1)),
}


def sections(report: Report) -> dict[str, dict[str, list[str]]]:
    out: dict[str, dict[str, list[str]]] = {}
    for department in report.departments:
        out[department.department] = {
            "active": [f"{item.scope}={item.count}" for item in department.active_by_scope],
            "expiring": [item.approval.id for item in department.expiring],
            "review_overdue": [item.approval.id for item in department.review_overdue],
            "unused": [item.approval.id for item in department.unused],
            "revoked": [item.approval.id for item in department.revoked],
        }
    return out


def test_five_sections_per_department_suspend_mode() -> None:
    report = build_report(APPROVALS, USAGE, NOW, SINCE, "suspend")
    assert [department.department for department in report.departments] == ["HR", "IT", "-"]
    assert sections(report) == {
        "IT": {
            "active": ["category webmail=5", "host web.whatsapp.com=1"],
            "expiring": ["A3", "A10"],
            "review_overdue": ["A4"],
            "unused": ["A2", "A9"],  # never used first
            "revoked": ["A5"],
        },
        "HR": {
            "active": ["category cloud-storage=1"],
            "expiring": [],
            "review_overdue": [],
            "unused": ["A12"],
            "revoked": [],
        },
        "-": {
            "active": [],
            "expiring": [],
            "review_overdue": ["A13"],
            "unused": [],
            "revoked": [],
        },
    }
    it = report.departments[1]
    assert [item.approval.id for item in it.active] == ["A1", "A3", "A8", "A9", "A15", "A2"]
    assert {item.approval.id: str(item.state) for item in it.review_overdue} == {"A4": "suspended"}
    assert it.unused[1].uses == 3 and it.unused[1].last_used == NOW - days(31)
    assert it.active_by_scope[0].ids == ("A1", "A3", "A8", "A9", "A15")


def test_warn_mode_keeps_overdue_approvals_active() -> None:
    report = sections(build_report(APPROVALS, USAGE, NOW, SINCE, "warn"))
    assert report["IT"]["active"] == ["category webmail=6", "host web.whatsapp.com=1"]  # A4 passes, flagged
    assert report["IT"]["review_overdue"] == ["A4"]
    assert report["IT"]["unused"] == ["A2", "A9"]  # A4 was used two days ago
    assert report["-"]["active"] == ["category webmail=1"]  # the network approval, used yesterday
    assert report["-"]["review_overdue"] == ["A13"]


def test_department_filter_and_period() -> None:
    only_legal = build_report(APPROVALS, USAGE, NOW, SINCE, department="Legal")
    assert sections(only_legal) == {
        "Legal": {"active": [], "expiring": [], "review_overdue": [], "unused": [], "revoked": []}
    }
    assert only_legal.departments[0].is_empty()
    none = build_report(APPROVALS, USAGE, NOW, SINCE, department="-")
    assert [department.department for department in none.departments] == ["-"]
    longer = sections(build_report(APPROVALS, USAGE, NOW, NOW - days(60), department="IT"))
    assert longer["IT"]["revoked"] == ["A6", "A5"]  # in order of revocation
    assert build_report([], {}, NOW, SINCE).departments == ()


def test_expiring_boundary_is_fourteen_days() -> None:
    inside = make(1, valid_until=NOW + days(14))
    outside = make(2, valid_until=NOW + days(14) + timedelta(seconds=1))
    report = sections(build_report([inside, outside], {"A1": (1, NOW), "A2": (1, NOW)}, NOW, SINCE))
    assert report["IT"]["expiring"] == ["A1"]


def test_change_summaries() -> None:
    granted = make(1, valid_until=datetime(2026, 12, 31, 16, 0, tzinfo=UTC))  # midnight 1 Jan in Hong Kong
    assert change_summary("grant", None, granted.to_record(), HK) == (
        "granted user user1 category webmail until 2026-12-31"
    )
    revoked = granted.revoked("head", NOW, "no longer needed")
    assert change_summary("revoke", granted.to_record(), revoked.to_record(), HK) == (
        "status active→revoked, reason: no longer needed"
    )
    due = make(2, review_due=datetime(2026, 11, 30, 16, 0, tzinfo=UTC), valid_until=NOW + days(300),
               status=ApprovalStatus.SUSPENDED, suspended_by="head", suspended_at=NOW)
    kept = due.reviewed(Review("head", NOW, "keep", "still needed"), datetime(2027, 2, 28, 16, 0, tzinfo=UTC))
    assert change_summary("review-keep", due.to_record(), kept.to_record(), HK) == (
        "status suspended→active, review_due 2026-12-01→2027-03-01, review keep by head: still needed"
    )
    dropped = due.reviewed(Review("head", NOW, "revoke", "no longer needed"), NOW)
    assert change_summary("review-revoke", due.to_record(), dropped.to_record(), HK) == (
        "status suspended→revoked, review revoke by head: no longer needed"
    )
    moved = replace(due, review_due=datetime(2026, 11, 30, 20, 0, tzinfo=UTC))  # same day: with the time
    assert change_summary("edit", due.to_record(), moved.to_record(), HK) == (
        "review_due 2026-12-01 00:00→2026-12-01 04:00"
    )
    assert change_summary("categories-add", {"entries": 10}, {"entries": 12, "added": 2, "submitted": 3,
                                                               "hosts": ["a.example", "b.example", "c.example"]},
                          HK) == "entries 10→12, 2 new of 3: a.example b.example c.example"
    assert change_summary(
        "categories-import",
        {"entries": {"webmail": 10}},
        {"entries": {"cloud-storage": 50, "webmail": 120}, "mode": "merge", "version": 7},
        HK,
    ) == "merge: cloud-storage 0→50, webmail 10→120"
    rule = {"id": "R1", "kind": "allow", "host": "mail.google.com", "path_prefix": "/a/", "category": None,
            "note": ""}
    assert change_summary("rule-add", None, rule, HK) == "added rule allow mail.google.com/a/"
    assert change_summary("rule-remove", rule, None, HK) == "removed rule allow mail.google.com/a/"
    assert change_summary("directory-load", None, {"rows": 12}, HK) == "rows 12"
    assert parse_side("") is None and parse_side("[1]") is None and parse_side('{"a": 1}') == {"a": 1}
