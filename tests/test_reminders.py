"""Reminders: who is told what (pure, `policy.reminders`), and that each mail goes once (real Redis, real SMTP).

The end-to-end tests run the real `clearance reminders run` and a real `clearance serve` (its portal process
sends on its schedule) against a real Redis, with an aiosmtpd server the test starts and stops as the relay.
"""

from __future__ import annotations

import asyncio
import re
import time as clock
from dataclasses import replace
from datetime import UTC, datetime, time, timedelta
from email.message import Message
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import redis

from icap_server.portal.reminder_mail import reminder_message
from policy.approvals import Approval, ApprovalStatus, SubjectKind
from policy.directory import Directory, Person
from policy.reminders import (
    ApprovedNote,
    DeniedNote,
    ExpiringNote,
    HeadDigest,
    Records,
    ReminderRules,
    SuspendedNote,
    due_period,
    period_of,
    plan_reminders,
)
from policy.requests import AccessRequest, RequestStatus
from policy.store import PolicyStore
from tests.conftest import CLI, StartServer
from tests.support.net import free_port, wait_for_port
from tests.support.smtp import Inbox, smtp_sink
from tests.support.waiting import wait_until

NOW = datetime(2026, 11, 20, 2, 0, tzinfo=UTC)  # 10:00 in Hong Kong
HK = ZoneInfo("Asia/Hong_Kong")
DAY = timedelta(days=1)
PEOPLE = (
    Person("alice", "Finance", "Alice Chan", email="alice@example.gov"),
    Person("bob", "Finance", "Bob Lee", email="bob@example.gov"),
    Person("carol", "IT", "Carol Wong"),  # no address
    Person("hfin", "Finance", "Henry Fung", heads=frozenset({"Finance"}), email="hfin@example.gov"),
    Person("dfin", "Finance", "Dora Fok", delegates=frozenset({"Finance"}), email="dfin@example.gov"),
    Person("hit", "IT", "Ivy Tam", heads=frozenset({"IT"}), email="hit@example.gov"),
)
DIRECTORY_CSV = "user,name,department,groups,heads,delegates,email\n" + "".join(
    f"{p.user},{p.name},{p.department},,{';'.join(p.heads)},{';'.join(p.delegates)},{p.email}\n" for p in PEOPLE
)


def approval(
    number: int,
    user: str = "alice",
    *,
    created: timedelta,
    review_in: timedelta,
    ends_in: timedelta,
    at: datetime = NOW,
    **changes: Any,
) -> Approval:
    created_at = at - created
    values: dict[str, Any] = {
        "id": f"A{number}",
        "subject_kind": SubjectKind.USER,
        "subject": user,
        "category": "webmail",
        "host": None,
        "department": "Finance",
        "approver": "hfin",
        "justification": "Liaison with the Singapore office",
        "created_by": "it.admin",
        "created_at": created_at,
        "valid_from": created_at,
        "valid_until": at + ends_in,
        "review_due": at + review_in,
    }
    return Approval(**{**values, **changes})


def request(number: int, user: str = "alice", **changes: Any) -> AccessRequest:
    values: dict[str, Any] = {
        "id": f"Q{number}",
        "user": user,
        "client_ip": "10.1.2.3",
        "category": "webmail",
        "host": "mail.google.com",
        "justification": f"Exchanging documents, case {number}",
        "days": 30,
        "created_at": NOW - timedelta(hours=number),
        "department": "Finance",
        "approvers": ("dfin", "hfin"),
        "key": "k",
        "service": "gmail",
        "service_en": "Gmail",
        "service_zh": "Gmail",
    }
    return AccessRequest(**{**values, **changes})


def scene(at: datetime) -> tuple[Approval, Approval, Approval]:
    """The acceptance scene's approvals at `at`: one review overdue, one unused, one just approved."""
    return (
        approval(1, created=100 * DAY, review_in=-10 * DAY, ends_in=60 * DAY, at=at),
        approval(2, "bob", created=40 * DAY, review_in=50 * DAY, ends_in=100 * DAY, category="cloud-storage", at=at),
        approval(3, created=timedelta(minutes=5), review_in=90 * DAY, ends_in=30 * DAY, ticket="Q9", at=at),
    )


OVERDUE, UNUSED, FRESH = scene(NOW)
SECTIONS_SHOWN = (
    "Access requests waiting for your decision / 等待你決定的使用申請 (2)",
    "Reviews overdue / 逾期未覆核 (1)",
    "Not used for 30 days or more / 30 日或以上未有使用 (1)",
)
SCENE = Records(
    approvals=(OVERDUE, UNUSED, FRESH),
    requests=(request(1), request(2, "bob")),
    usage={"A1": (12, NOW - 2 * DAY)},
    directory=Directory({p.user: p for p in PEOPLE}),
)


def kinds(
    records: Records, at: datetime = NOW, period: str | None = "2026-11-20", **rules: Any
) -> list[tuple[str, str]]:
    plan = plan_reminders(records, at, ReminderRules(**rules), period)
    return [(type(item).__name__, item.to.user) for item in plan.reminders]


# ---- pure: who is told what -------------------------------------------------------------------------------


def test_each_head_gets_one_digest_listing_everything_of_their_departments() -> None:
    plan = plan_reminders(SCENE, NOW, ReminderRules(), "2026-11-20")
    digests = [item for item in plan.reminders if isinstance(item, HeadDigest)]
    assert [d.to.user for d in digests] == ["dfin", "hfin"]  # hit's IT has nothing: no mail
    for digest in digests:
        assert [r.id for r in digest.pending] == ["Q1", "Q2"]
        assert [i.approval.id for i in digest.reviews_overdue] == ["A1"]
        assert [i.approval.id for i in digest.unused] == ["A2"]
        assert digest.reviews_due == digest.expiring == ()
        assert digest.count == 4 and digest.departments == ("Finance",)
        assert digest.mark == f"digest:2026-11-20:{digest.to.user}"


def test_a_digest_lists_reviews_falling_due_and_approvals_ending_but_not_the_heads_own_request() -> None:
    due = approval(4, created=80 * DAY, review_in=3 * DAY, ends_in=10 * DAY)
    own = request(5, "hfin")
    records = replace(SCENE, approvals=(due,), requests=(own,), usage={"A4": (1, NOW - DAY)})
    plan = plan_reminders(records, NOW, ReminderRules(notes=False), "2026-W47")
    by_user = {item.to.user: item for item in plan.reminders if isinstance(item, HeadDigest)}
    assert [r.id for r in by_user["dfin"].pending] == ["Q5"] and by_user["hfin"].pending == ()
    assert [i.approval.id for i in by_user["hfin"].reviews_due] == ["A4"]
    assert [i.approval.id for i in by_user["hfin"].expiring] == ["A4"]
    quiet = plan_reminders(replace(records, approvals=(), requests=()), NOW, ReminderRules(notes=False), "p")
    assert quiet.reminders == ()  # nothing to say: no mail


def test_no_digest_outside_its_period_and_no_notes_when_switched_off() -> None:
    assert all(kind != "HeadDigest" for kind, _ in kinds(SCENE, period=None))
    assert kinds(SCENE, period=None, notes=False) == []


def test_the_person_is_told_of_an_approval_once_and_of_a_suspension_for_review() -> None:
    notes = [item for item in plan_reminders(SCENE, NOW, ReminderRules(), None).reminders]
    assert [(type(n).__name__, n.to.user, n.mark) for n in notes] == [
        ("SuspendedNote", "alice", f"note:suspended:A1:{OVERDUE.review_due.isoformat()}"),
        ("ApprovedNote", "alice", "note:approved:A3"),
    ]
    suspended = notes[0]
    assert isinstance(suspended, SuspendedNote) and suspended.for_review
    # Under `warn` an overdue review suspends nothing: no note (the head's digest lists it).
    assert kinds(SCENE, period=None, on_review_overdue="warn") == [("ApprovedNote", "alice")]
    # Decisions older than the window are not announced any more.
    assert kinds(SCENE, NOW + 4 * DAY, period=None) == [("SuspendedNote", "alice")]


def test_a_hand_suspension_gets_a_note_of_its_own_and_a_revoked_approval_none() -> None:
    held = replace(
        UNUSED,
        status=ApprovalStatus.SUSPENDED,
        suspended_by="hfin",
        suspended_at=NOW - DAY,
        suspend_reason="checking the need",
    )
    gone = replace(OVERDUE, status=ApprovalStatus.REVOKED, revoked_by="hfin", revoked_at=NOW - DAY)
    plan = plan_reminders(replace(SCENE, approvals=(held, gone)), NOW, ReminderRules(), None)
    (note,) = plan.reminders
    assert isinstance(note, SuspendedNote) and not note.for_review and note.to.user == "bob"
    assert note.mark == f"note:suspended:A2:{(NOW - DAY).isoformat()}"
    body = mail_text(reminder_message(note, "c@example.gov", HK, None, (7, 30, 14)))
    assert "suspended by hfin: checking the need" in body and "已被 hfin 暫停" in body


def test_the_person_is_told_a_week_before_the_end_unless_the_approval_was_that_short() -> None:
    ending = approval(5, created=60 * DAY, review_in=20 * DAY, ends_in=6 * DAY)
    short = approval(6, created=timedelta(days=4), review_in=3 * DAY, ends_in=3 * DAY)
    plan = plan_reminders(replace(SCENE, approvals=(ending, short)), NOW, ReminderRules(), None)
    (note,) = plan.reminders
    assert isinstance(note, ExpiringNote) and note.approval.id == "A5"
    assert note.mark == f"note:expiring:A5:{ending.valid_until.isoformat()}"
    assert kinds(replace(SCENE, approvals=(ending,)), NOW - 2 * DAY, period=None) == []  # 8 days before: not yet


def test_a_denied_request_is_announced_to_its_requester_and_people_without_address_are_named() -> None:
    denied = request(7, status=RequestStatus.DENIED, decided_by="hfin", decided_at=NOW - DAY, note="use the shared one")
    lost = request(8, "carol", status=RequestStatus.DENIED, decided_by="hit", decided_at=NOW - DAY, department="IT")
    plan = plan_reminders(replace(SCENE, approvals=(), requests=(denied, lost)), NOW, ReminderRules(), None)
    (note,) = plan.reminders
    assert isinstance(note, DeniedNote) and note.mark == "note:denied:Q7"
    assert plan.unreachable == ("carol",)
    body = mail_text(reminder_message(note, "c@example.gov", HK, None, (7, 30, 14)))
    assert "declined by hfin" in body and "use the shared one" in body and "拒絕" in body


def test_the_digest_period_is_the_local_day_or_week_from_its_hour_on() -> None:
    eight = time(8, 0)
    assert due_period(NOW, HK, "daily", eight) == "2026-11-20"  # 10:00 local
    assert due_period(NOW, HK, "daily", time(11, 0)) is None
    assert due_period(NOW, HK, "off", eight) is None
    assert period_of(NOW, HK, "weekly") == "2026-W47"
    assert due_period(NOW, HK, "weekly", eight, "friday") == "2026-W47"  # 2026-11-20 is a Friday
    assert due_period(NOW, HK, "weekly", eight, "saturday") is None
    assert due_period(NOW - timedelta(hours=3), HK, "daily", eight) is None  # 07:00 local
    assert period_of(datetime(2026, 11, 19, 17, 0, tzinfo=UTC), HK, "daily") == "2026-11-20"  # past midnight in HK


def test_the_digest_mail_lists_each_item_in_english_and_chinese_with_the_workspace_link() -> None:
    digest = next(
        i for i in plan_reminders(SCENE, NOW, ReminderRules(), "2026-11-20").reminders if isinstance(i, HeadDigest)
    )
    text = mail_text(reminder_message(digest, "c@example.gov", HK, "https://portal.example/heads", (7, 30, 14)))
    for expected in ["Q1", "Q2", "A1", "A2", "case 1", "https://portal.example/heads", "never used", *SECTIONS_SHOWN]:
        assert expected in text, expected
    approved = next(
        i for i in plan_reminders(SCENE, NOW, ReminderRules(), None).reminders if isinstance(i, ApprovedNote)
    )
    body = mail_text(reminder_message(approved, "c@example.gov", HK, None, (7, 30, 14)))
    assert "approved by hfin" in body and "2026-12-20" in body and "Q9" in body
    assert "hfin 已批准你使用 個人網上電郵 (webmail)" in body


def mail_text(message: Message) -> str:
    payload = message.get_payload(decode=True)
    assert isinstance(payload, bytes)
    return payload.decode("utf-8")


# ---- end to end: real Redis, real SMTP, the real CLI and serve -------------------------------------------


def write_config(path: Path, smtp: str, portal: str = "") -> Path:
    path.write_text(
        "policy:\n  load_default_lists: false\n"
        "approvals:\n  require_department_head: true\n  min_justification_chars: 0\n"
        f"portal:\n  public_url: https://portal.example.gov\n{portal}" + smtp + "logging:\n  format: json\n",
        encoding="utf-8",
    )
    return path


def seed(redis_url: str, cli: CLI, config: Path, tmp_path: Path) -> None:
    """The acceptance scene in the store: the directory, two pending requests, the three approvals."""
    (tmp_path / "people.csv").write_text(DIRECTORY_CSV, encoding="utf-8")
    cli("--config", str(config), "directory", "load", str(tmp_path / "people.csv"))

    async def fill() -> None:
        store = PolicyStore.from_url(redis_url)
        now = datetime.now(UTC)
        try:
            for number, user in ((1, "alice"), (2, "bob")):
                made = replace(request(number, user), created_at=now - timedelta(hours=number))
                await store.create_request(lambda _id, made=made: made, made.open_key, f"n{number}", 60)
            for item in scene(now):
                await store.save_approval(item, "it.admin", "grant", None)
            await store.record_usage({"A1": (12, now - 2 * DAY)})
        finally:
            await store.close()

    asyncio.run(fill())


def sent_marks(client: redis.Redis) -> dict[str, str]:
    return {key: str(client.get(key)) for key in client.scan_iter("clearance:reminder:*")}


def test_one_run_sends_each_head_one_digest_and_each_note_once(
    redis_url: str, sync_redis: redis.Redis, cli: CLI, tmp_path: Path
) -> None:
    """Acceptance 2: two pending requests, one review overdue, one unused approval; one mail per head."""
    inbox = Inbox()
    with smtp_sink(inbox, timeout=5) as smtp:
        config = write_config(tmp_path / "reminders.yaml", smtp)
        seed(redis_url, cli, config, tmp_path)
        first = cli("--config", str(config), "reminders", "run")
        second = cli("--config", str(config), "reminders", "run")
    assert "4 due, 4 sent, 0 failed" in first.stdout, first.stdout
    assert "0 due, 0 sent, 0 failed" in second.stdout, second.stdout  # nothing new
    assert sorted(rcpt for rcpt, _ in inbox.messages) == [
        ["alice@example.gov"],
        ["alice@example.gov"],
        ["dfin@example.gov"],
        ["hfin@example.gov"],
    ]
    for head in ("hfin@example.gov", "dfin@example.gov"):
        (digest,) = inbox.to(head)
        body = mail_text(digest)
        for item in ["Q1", "Q2", "A1", "A2", "https://portal.example.gov/heads", *SECTIONS_SHOWN]:
            assert item in body, (head, item)
        assert not re.search(r"\bA3\b", body)  # new and used nowhere yet (a word: link tokens are random letters)
        assert digest["Subject"].startswith("Clearance digest ") and "4 items" in digest["Subject"]
    subjects = sorted(str(message["Subject"]) for message in inbox.to("alice@example.gov"))
    assert subjects[0].startswith("Access approved:") and "A3" in subjects[0]
    assert subjects[1].startswith("Access suspended:") and "A1" in subjects[1]
    assert not inbox.to("hit@example.gov") and not inbox.to("bob@example.gov")
    marks = sent_marks(sync_redis)
    assert set(marks.values()) == {"sent"} and len(marks) == 5  # four mails and the period's digest done
    assert all(sync_redis.ttl(key) > 0 for key in marks)  # each kept for a while, not for ever


def test_a_failing_relay_is_reported_and_nothing_is_marked_so_the_next_run_sends(
    redis_url: str, sync_redis: redis.Redis, cli: CLI, tmp_path: Path
) -> None:
    inbox = Inbox(refuse=True)
    with smtp_sink(inbox, timeout=5) as smtp:
        config = write_config(tmp_path / "reminders.yaml", smtp)
        seed(redis_url, cli, config, tmp_path)
        failed = cli("--config", str(config), "reminders", "run", check=False)
        assert failed.returncode == 1, failed.stderr
        assert "4 due, 0 sent, 4 failed" in failed.stdout and "4 mail(s) not sent" in failed.stderr
        assert "reminder_mail_failed" in failed.stderr and "451" in failed.stderr
        assert sent_marks(sync_redis) == {}  # no "sent", and no claim left behind
        dry = cli("--config", str(config), "reminders", "run", "--dry-run")
        assert "4 due, 0 sent" in dry.stdout and dry.stdout.count("would send") == 4
        inbox.refuse = False
        again = cli("--config", str(config), "reminders", "run")
    assert "4 due, 4 sent, 0 failed" in again.stdout
    assert len(inbox.messages) == 4


def test_without_a_relay_only_a_dry_run_is_possible(cli: CLI, tmp_path: Path) -> None:
    config = write_config(tmp_path / "reminders.yaml", "")
    refused = cli("--config", str(config), "reminders", "run", check=False)
    assert refused.returncode == 2 and "smtp.host is not set" in refused.stderr
    dry = cli("--config", str(config), "reminders", "run", "--dry-run")
    assert dry.returncode == 0 and dry.stdout.startswith("0 due, 0 sent, 0 failed (digest period ")


def test_two_portals_on_one_store_send_each_mail_once_on_their_schedule(
    redis_url: str, sync_redis: redis.Redis, cli: CLI, start_icap_server: StartServer, tmp_path: Path
) -> None:
    """The portal process sends on its schedule; two of them (two `serve` on one Redis) never send twice."""
    inbox = Inbox()
    with smtp_sink(inbox, timeout=5) as smtp:
        ports = (free_port(), free_port())
        reminders = '  reminders:\n    time: "00:00"\n    check_interval_seconds: 0.3\n'
        seed(redis_url, cli, write_config(tmp_path / "cli.yaml", smtp), tmp_path)
        for index, port in enumerate(ports):
            text = write_config(
                tmp_path / f"serve-{port}.yaml",
                smtp,
                f"  listen: 127.0.0.1:{port}\n  secret: s3cret\n" + reminders,
            ).read_text(encoding="utf-8")
            start_icap_server(f"server:\n  workers: {index + 1}\n" + text)
            wait_for_port(port)
        wait_until(lambda: len(inbox.messages) >= 4, timeout=20, what="the four reminder mails")
        clock.sleep(2)  # several more looks by both portals
    assert sorted(rcpt[0] for rcpt, _ in inbox.messages) == [
        "alice@example.gov",
        "alice@example.gov",
        "dfin@example.gov",
        "hfin@example.gov",
    ]
    assert len(sent_marks(sync_redis)) == 5


def test_a_mark_is_claimed_by_one_sender_at_a_time_and_only_its_own_claim_is_released(redis_url: str) -> None:
    """Two senders at the same moment (two portals, or a portal and a cron run): one sends, the other leaves it."""

    async def scenario() -> None:
        store = PolicyStore.from_url(redis_url)
        try:
            first = await store.claim_reminder("note:approved:A1", timedelta(minutes=1))
            assert first is not None
            assert await store.claim_reminder("note:approved:A1", timedelta(minutes=1)) is None  # busy
            await store.release_reminder("note:approved:A1", "claim someone-else")
            assert await store.claim_reminder("note:approved:A1", timedelta(minutes=1)) is None  # still ours
            await store.release_reminder("note:approved:A1", first)  # a failed send: free for the next run
            again = await store.claim_reminder("note:approved:A1", timedelta(minutes=1))
            assert again is not None and again != first
            assert await store.reminders_sent(["note:approved:A1"]) == frozenset()
            await store.reminder_sent("note:approved:A1", timedelta(days=3))
            assert await store.reminders_sent(["note:approved:A1", "note:denied:Q1"]) == {"note:approved:A1"}
            assert await store.claim_reminder("note:approved:A1", timedelta(minutes=1)) is None  # sent: never again
            await store.release_reminder("note:approved:A1", again)  # too late: the "sent" record stays
            assert await store.reminders_sent(["note:approved:A1"]) == {"note:approved:A1"}
        finally:
            await store.close()

    asyncio.run(scenario())
