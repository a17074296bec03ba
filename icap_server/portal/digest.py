"""When the approvers are mailed: the first request at once, then at most one digest per interval per address.

Found in issue 9: one person's burst of 200 requests sent 200 mails to their head. Now each address (a head
or delegate) is mailed at once when it has had no mail for `portal.digest_interval_minutes`, so a lone
request still arrives promptly; requests that come sooner wait, and go in one digest when the interval has
passed. Addresses waiting for the same requests share one mail, as a single request's head and delegates
always have. Kept in memory by the portal process: requests waiting when it stops are not mailed (they are
stored, and `clearance requests list` shows them).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine, Sequence
from email.message import EmailMessage
from typing import Any
from zoneinfo import ZoneInfo

import structlog

from icap_server.config import SmtpConfig
from icap_server.portal.mail import digest_message, recipients, send_mail
from policy.directory import Directory
from policy.requests import AccessRequest

log = structlog.get_logger("clearance.portal")

Send = Callable[[SmtpConfig, EmailMessage, Sequence[str]], Coroutine[Any, Any, bool]]


class Digest:
    """The approvers' mail, at most one per address per `interval_s` (0: one mail per request)."""

    def __init__(
        self,
        smtp: SmtpConfig,
        zone: ZoneInfo,
        interval_s: float,
        send: Send = send_mail,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.smtp, self.zone, self.interval_s = smtp, zone, interval_s
        self.send, self.clock = send, clock
        self.last_sent: dict[str, float] = {}
        self.waiting: dict[str, list[AccessRequest]] = {}
        self.due: dict[str, float] = {}  # addresses with a digest coming, and when
        self.timers: set[asyncio.Task[None]] = set()

    async def add(self, request: AccessRequest, directory: Directory) -> None:
        """A new request for its approvers: mailed now to those not mailed lately, gathered for the others."""
        if self.smtp.host is None:
            return
        to, missing = recipients(request, directory)
        if missing:
            log.warning("approvers_without_email", request=request.id, approvers=missing)
        if not to:
            log.warning("request_not_mailed", request=request.id, reason="no approver has an e-mail address")
            return
        now = self.clock()
        due_now: list[str] = []
        later: set[float] = set()
        for address in to:
            self.waiting.setdefault(address, []).append(request)
            if address in self.due:
                continue  # a digest is already coming
            due = self.last_sent.get(address, float("-inf")) + self.interval_s
            if due <= now:
                due_now.append(address)
            else:
                self.due[address] = due
                later.add(due)
        for due in later:
            timer = asyncio.create_task(self._later(due - now))
            self.timers.add(timer)  # kept until done: the loop holds tasks only weakly
            timer.add_done_callback(self.timers.discard)
        await self._flush(due_now)

    async def _later(self, delay: float) -> None:
        """After `delay`, mail every address whose digest is due (those mailed together stay together)."""
        await asyncio.sleep(delay)
        now = self.clock()
        ready = [address for address, due in self.due.items() if due <= now + 0.01]
        for address in ready:
            del self.due[address]
        await self._flush(ready)

    async def _flush(self, addresses: Sequence[str]) -> None:
        """Mail what each address waits for; addresses waiting for the same requests get one mail together."""
        groups: dict[tuple[str, ...], list[str]] = {}
        batches: dict[tuple[str, ...], list[AccessRequest]] = {}
        now = self.clock()
        for address in addresses:
            items = self.waiting.pop(address, [])
            if not items:
                continue
            self.last_sent[address] = now
            ids = tuple(item.id for item in items)
            groups.setdefault(ids, []).append(address)
            batches[ids] = items
        for ids, to in groups.items():
            message = digest_message(batches[ids], self.smtp.sender, sorted(to), self.zone)
            await self.send(self.smtp, message, ids)
