"""Sending the reminders: the heads' digest on its schedule, the notes to people as their occasions come.

The portal process looks every `portal.reminders.check_interval_seconds`: it reads the store, lets
`policy.reminders.plan_reminders` say what is due, drops what the store records as sent, and sends the rest one
by one, each claimed first and recorded as sent only once the relay took it (`policy.store.reminders`). So the
state is in Redis, not in the process: a restart, a reload or a second portal (several `serve` hosts on one
store) sends nothing twice, a mail that failed is tried again at the next look, and a decision made by the CLI
is noticed like one made anywhere else. A failure is logged as the request mails' are (`reminder_mail_failed`),
and the next look waits longer (doubling, up to an hour) while the relay keeps failing.

The digest of a period is done once its run has sent every head's mail (the mark `digest:{period}`); a head
with nothing to say gets none. `clearance reminders run` (`run_reminders(..., force_digest=True)`) sends the
period's digest whatever the hour, for cron users and tests.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, time, timedelta
from email.message import EmailMessage
from typing import Any
from zoneinfo import ZoneInfo

import structlog

from icap_server.config import Config, SmtpConfig
from icap_server.portal.heads_auth import action_link, link_ttl_s
from icap_server.portal.links import base_url, portal_secret
from icap_server.portal.mail import send_mail
from icap_server.portal.reminder_mail import LinkMaker, reminder_message
from policy.reminders import (
    HeadDigest,
    Records,
    Reminder,
    ReminderRules,
    due_period,
    keep_for,
    period_of,
    plan_reminders,
)
from policy.store import PolicyStore, StoreError, StoreUnavailable

log = structlog.get_logger("clearance.portal")

DIGEST_DONE_KEEP = timedelta(days=40)  # the `digest:{period}` mark outlives a week's period
LONGEST_WAIT_S = 3600.0

# send_mail's shape: (smtp, message, what it is about, what kind of mail) -> whether the relay took it.
Send = Callable[[SmtpConfig, EmailMessage, Sequence[str], str], Coroutine[Any, Any, bool]]


@dataclass
class RunResult:
    """What one run found due (not sent before) and what became of it."""

    period: str | None  # the digest period this run covered, None when no digest was due
    due: list[Reminder] = field(default_factory=list)
    sent: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    busy: list[str] = field(default_factory=list)  # being sent by another process just now
    unreachable: tuple[str, ...] = ()


def reminder_rules(config: Config) -> ReminderRules:
    section = config.portal.reminders
    return ReminderRules(
        on_review_overdue=config.approvals.on_review_overdue,
        review_due_days=section.review_due_days,
        unused_days=section.unused_days,
        expiring_days=section.expiring_days,
        expiry_notice_days=section.expiry_notice_days,
        note_window_days=section.note_window_days,
        notes=section.notes,
    )


def workspace_url(config: Config) -> str | None:
    """The heads' workspace in the portal, or None when this configuration has no portal address."""
    if config.portal.listen is None and config.portal.public_url is None:
        return None
    return base_url(config) + "/heads"


async def _period(config: Config, store: PolicyStore, now: datetime, force: bool) -> str | None:
    section = config.portal.reminders
    zone = ZoneInfo(config.policy.timezone)
    if force:
        return period_of(now, zone, section.digest)
    hour, minute = (int(part) for part in section.time.split(":"))
    period = due_period(now, zone, section.digest, time(hour, minute), section.weekday)
    if period is not None and await store.reminders_sent([f"digest:{period}"]):
        return None  # this period's digest is done
    return period


async def due_reminders(config: Config, store: PolicyStore, now: datetime, force_digest: bool) -> RunResult:
    """What is due at `now` and not sent yet (a dry run stops here)."""
    period = await _period(config, store, now, force_digest)
    records = Records(
        approvals=tuple(await store.all_approvals()),
        requests=tuple(await store.all_requests()),
        usage=await store.usage(),
        directory=await store.load_directory(),
    )
    plan = plan_reminders(records, now, reminder_rules(config), period)
    sent = await store.reminders_sent([reminder.mark for reminder in plan.reminders])
    due = [reminder for reminder in plan.reminders if reminder.mark not in sent]
    return RunResult(period, due, unreachable=plan.unreachable)


async def run_reminders(
    config: Config,
    store: PolicyStore,
    now: datetime,
    *,
    force_digest: bool = False,
    dry_run: bool = False,
    send: Send = send_mail,
) -> RunResult:
    """One run: plan, then send each due mail once (claimed first, recorded as sent after the relay took it)."""
    result = await due_reminders(config, store, now, force_digest)
    if dry_run or config.smtp.host is None:
        return result
    zone = ZoneInfo(config.policy.timezone)
    section = config.portal.reminders
    days = (section.review_due_days, section.unused_days, section.expiring_days)
    hold = timedelta(seconds=config.smtp.timeout * 2 + 60)
    secret = await portal_secret(config, store) if workspace_url(config) else None
    for reminder in result.due:
        token = await store.claim_reminder(reminder.mark, hold)
        if token is None:
            result.busy.append(reminder.mark)
            continue
        link = _links(config, secret, reminder.to.user) if isinstance(reminder, HeadDigest) and secret else None
        message = reminder_message(reminder, config.smtp.sender, zone, workspace_url(config), days, link)
        if await send(config.smtp, message, [reminder.mark], "reminder"):
            await store.reminder_sent(reminder.mark, keep_for(reminder, now))
            result.sent.append(reminder.mark)
        else:
            await store.release_reminder(reminder.mark, token)
            result.failed.append(reminder.mark)
    digests_left = [mark for mark in result.failed + result.busy if mark.startswith("digest:")]
    if result.period is not None and not digests_left:
        await store.reminder_sent(f"digest:{result.period}", DIGEST_DONE_KEEP)
    if result.sent or result.failed:
        log.info(
            "reminders_run",
            period=result.period,
            digests=sum(isinstance(item, HeadDigest) for item in result.due),
            sent=len(result.sent),
            failed=len(result.failed),
        )
    return result


def _links(config: Config, secret: str, head: str) -> LinkMaker:
    """One head's single-use links in their digest: bound to the head, the item and its actions, short-lived."""
    base, ttl = base_url(config), link_ttl_s(config)
    return lambda item, actions: action_link(base, secret, head, item, actions, ttl)


class ReminderLoop:
    """The portal process's reminders: a run every check interval, until `stop`."""

    def __init__(
        self,
        config: Config,
        store: PolicyStore,
        send: Send = send_mail,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.config, self.store, self.send, self.clock = config, store, send, clock
        self.warned: set[str] = set()  # people without an address, named in the log once per process

    async def run(self, stop: asyncio.Event) -> None:
        interval = self.config.portal.reminders.check_interval_seconds
        wait = interval
        while not stop.is_set():
            try:
                result = await run_reminders(self.config, self.store, self.clock(), send=self.send)
            except (StoreError, StoreUnavailable, OSError) as error:
                log.error("reminders_unavailable", error=str(error), retry_s=interval)
                wait = interval
            else:
                self._warn(result.unreachable)
                wait = min(max(wait * 2, interval), LONGEST_WAIT_S) if result.failed else interval
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), wait)

    def _warn(self, users: tuple[str, ...]) -> None:
        new = sorted(set(users) - self.warned)
        if new:
            log.warning("reminder_without_email", users=new, hint="add their email to the directory")
            self.warned.update(new)


def start_reminders(config: Config, store: PolicyStore, stop: asyncio.Event) -> asyncio.Task[None] | None:
    """The reminder loop as a task of the portal's loop; None when nothing could be sent (no `smtp.host`)."""
    section = config.portal.reminders
    if config.smtp.host is None or (section.digest == "off" and not section.notes):
        return None
    return asyncio.create_task(ReminderLoop(config, store).run(stop))
