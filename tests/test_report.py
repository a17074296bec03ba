"""The department report, who has access (one row per person × approval) and audit summaries, at a fixed moment."""

from __future__ import annotations

import io
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from policy.access_report import COLUMNS, Thresholds, build_access_report, csv_cells, row_record, rows_of
from policy.approvals import Approval, ApprovalStatus, Review, SubjectKind
from policy.directory import Directory, Person
from policy.report import Report, build_report, change_summary, parse_side
from policy.state import ServiceCatalogue

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
    due = make(
        2,
        review_due=datetime(2026, 11, 30, 16, 0, tzinfo=UTC),
        valid_until=NOW + days(300),
        status=ApprovalStatus.SUSPENDED,
        suspended_by="head",
        suspended_at=NOW,
    )
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
    assert (
        change_summary(
            "categories-add",
            {"entries": 10},
            {"entries": 12, "added": 2, "submitted": 3, "hosts": ["a.example", "b.example", "c.example"]},
            HK,
        )
        == "entries 10→12, 2 new of 3: a.example b.example c.example"
    )
    assert (
        change_summary(
            "categories-import",
            {"entries": {"webmail": 10}},
            {"entries": {"cloud-storage": 50, "webmail": 120}, "mode": "merge", "version": 7},
            HK,
        )
        == "merge: cloud-storage 0→50, webmail 10→120"
    )
    rule = {"id": "R1", "kind": "allow", "host": "mail.google.com", "path_prefix": "/a/", "category": None, "note": ""}
    assert change_summary("rule-add", None, rule, HK) == "added rule allow mail.google.com/a/"
    assert change_summary("rule-remove", rule, None, HK) == "removed rule allow mail.google.com/a/"
    assert change_summary("directory-load", None, {"rows": 12}, HK) == "rows 12"
    assert parse_side("") is None and parse_side("[1]") is None and parse_side('{"a": 1}') == {"a": 1}


# ---- who has access: one row per person × approval (policy.access_report) ----------------------

DIRECTORY = Directory(
    {
        person.user: person
        for person in (
            Person("user1", "IT", "User One", frozenset({"ops"})),
            Person("user2", "IT", "User Two", frozenset({"ops"})),
            Person("user3", "HR", "User Three", frozenset({"ops"})),  # a group crosses departments
            Person("head", "IT", "Head", heads=frozenset({"IT"})),
        )
    }
)


def access(approvals: list[Approval], since: datetime = SINCE, **options: Any) -> dict[str, list[tuple[str, ...]]]:
    report = build_access_report(approvals, DIRECTORY, USAGE, ServiceCatalogue(), NOW, since, **options)
    return {
        department.department: [(row.section, row.user or "-", row.approval.id, *row.flags) for row in department.rows]
        for department in report.departments
    }


def test_subjects_are_expanded_through_the_directory_to_each_person_once() -> None:
    approvals = [
        make(1),  # user1: not in the directory's sense of a group, a user
        make(2, subject_kind=SubjectKind.GROUP, subject="ops", category="cloud-storage"),
        make(3, subject_kind=SubjectKind.DEPARTMENT, subject="IT", category="web-im"),
        make(4, subject_kind=SubjectKind.NETWORK, subject="10.0.0.0/8"),
        make(5, subject_kind=SubjectKind.GROUP, subject="nobody-here"),
        make(6, subject="ghost"),  # a user the directory does not know
    ]
    report = build_access_report(approvals, DIRECTORY, USAGE, ServiceCatalogue(), NOW, SINCE)
    (it,) = report.departments
    assert [(row.user, row.approval.id) for row in it.rows] == [
        ("user1", "A1"),
        ("user1", "A2"), ("user2", "A2"), ("user3", "A2"),  # every member, whatever their department
        ("head", "A3"), ("user1", "A3"), ("user2", "A3"),  # the department's people, not HR's user3
        (None, "A4"),
        (None, "A5"),
        ("ghost", "A6"),
    ]  # fmt: skip
    notes = {row.approval.id: row.note for row in it.rows if row.note}
    assert notes == {
        "A4": "covers every client address in 10.0.0.0/8; no named person",
        "A5": "no one in the directory is in group nobody-here",
        "A6": "not in the directory",
    }
    assert it.rows[3].person is not None and it.rows[3].person.department == "HR"
    assert it.people() == 5  # user1, user2, user3, head, ghost: each once
    assert [item.key.label for item in it.by_service] == [
        "category cloud-storage",
        "category web-im",
        "category webmail",
    ]
    assert it.by_service[2].ids == ("A1", "A4", "A5", "A6")


def test_each_approval_in_one_section_with_the_report_sections_as_flags() -> None:
    assert access(APPROVALS) == {
        "HR": [("access", "user12", "A12", "unused")],
        "IT": [
            ("access", "user1", "A1"),
            ("access", "user2", "A2", "unused"),
            ("access", "user3", "A3", "expiring"),
            ("access", "user8", "A8"),
            ("access", "user9", "A9", "unused"),
            ("access", "user15", "A15"),
            ("on-hold", "user4", "A4", "review-due"),  # suspended by its overdue review
            ("on-hold", "user10", "A10", "expiring"),  # not valid yet
            ("on-hold", "user11", "A11"),  # suspended by hand
            ("revoked", "user5", "A5"),  # A6 was revoked before `since`, A7 has ended: in no section
        ],
        "-": [("on-hold", "-", "A13", "review-due")],  # a network: no named person
    }
    warn = access(APPROVALS, limits=Thresholds(on_review_overdue="warn"))
    assert ("access", "user4", "A4", "review-due") in warn["IT"]  # passes, flagged
    assert warn["-"] == [("access", "-", "A13", "review-due")]
    assert access(APPROVALS, department="Legal") == {"Legal": []}  # asked for: there, with no rows
    assert list(access(APPROVALS, department="HR")) == ["HR"]


def test_the_flags_are_the_department_reports_sections() -> None:
    """The same definitions as build_report's expiring, review-overdue and unused sections, approval by approval."""
    for mode in ("suspend", "warn"):
        sections = build_report(APPROVALS, USAGE, NOW, SINCE, mode)
        report = build_access_report(
            APPROVALS, DIRECTORY, USAGE, ServiceCatalogue(), NOW, SINCE, limits=Thresholds(on_review_overdue=mode)
        )
        flagged = {(row.approval.id, flag) for row in rows_of(report) for flag in row.flags}
        listed = {
            (item.approval.id, flag)
            for department in sections.departments
            for name, flag in (("expiring", "expiring"), ("review_overdue", "review-due"), ("unused", "unused"))
            for item in department.section(name)
        }
        assert flagged == listed and flagged
        passing = {row.approval.id for row in rows_of(report) if row.section == "access"}
        assert passing == {item.approval.id for department in sections.departments for item in department.active}


def test_a_row_as_a_record_and_as_csv_cells() -> None:
    reviewed = make(1, ticket="SD-9", reviews=(Review("head", NOW - days(3), "keep", "still needed"),))
    report = build_access_report([reviewed], DIRECTORY, USAGE, ServiceCatalogue(), NOW, SINCE)
    record = row_record(rows_of(report)[0], HK)
    assert list(record) == list(COLUMNS)
    assert record["person"] == "user1" and record["person_name"] == "User One" and record["ticket"] == "SD-9"
    assert (record["last_review_by"], record["last_review_decision"], record["last_review_note"]) == (
        "head",
        "keep",
        "still needed",
    )
    assert (
        record["last_review_at"] == "2026-06-12T20:00:00+08:00" and record["last_used"] == "2026-06-14T20:00:00+08:00"
    )
    assert record["uses"] == 40 and record["flags"] == [] and record["revoked_at"] is None
    cells = dict(zip(COLUMNS, csv_cells(record), strict=True))
    assert cells["uses"] == "40" and cells["revoked_at"] == "" and cells["scope"] == "webmail"
    flagged = build_access_report([make(2)], DIRECTORY, {}, ServiceCatalogue(), NOW, SINCE)
    assert csv_cells(row_record(rows_of(flagged)[0], HK))[COLUMNS.index("flags")] == "unused"


def test_rich_tables_on_a_terminal() -> None:
    from rich.console import Console

    from icap_server.admin.report import render_report

    approval = make(1, justification="[bold]not markup[/bold]")
    revoked = make(2, subject="user2").revoked("head", NOW - days(1), "[red]left[/red]")
    output = io.StringIO()
    console = Console(file=output, width=250, force_terminal=False)
    render_report(build_access_report([approval, revoked], DIRECTORY, USAGE, ServiceCatalogue(), NOW, SINCE), HK,
                  "table", console)  # fmt: skip
    render_report(build_access_report([], DIRECTORY, {}, ServiceCatalogue(), NOW, SINCE), HK, "table", console)
    text = output.getvalue()
    assert "Department IT: 1 people with access" in text and "Revoked in the period" in text
    assert "On hold: suspended or not valid yet: none" in text and "nothing to report" in text
    assert "[bold]not markup[/bold]" in text and "[red]left[/red]" in text  # cells are text, not rich markup
