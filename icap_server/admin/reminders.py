"""`clearance reminders run [--dry-run]`: the heads' digest and the notes to people, computed and sent once now.

The same run the portal process makes on its schedule (`icap_server.portal.reminders`), except that the
period's digest goes whatever the hour: for a cron job where no portal runs, and for tests. What was sent
before (by the portal or an earlier run) is not sent again. Exit 1 when a mail could not be sent: it is not
recorded as sent, so the next run tries it again.
"""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from icap_server.admin.support import Commands, StoreAction, UsageError, add_group, print_table
from icap_server.config import Config
from policy.reminders import ApprovedNote, DeniedNote, ExpiringNote, HeadDigest, Reminder
from policy.store import PolicyStore

if TYPE_CHECKING:
    from icap_server.portal.reminders import RunResult

EXIT_NOT_SENT = 1


def register(commands: Commands) -> None:
    reminders = add_group(commands, "reminders", "the heads' digest and the notes to people about their access")
    run = reminders.add_parser("run", help="send what is due now, once (the period's digest whatever the hour)")
    run.add_argument("--dry-run", action="store_true", help="list what would be sent; send nothing")
    run.set_defaults(handler=reminders_run)


def kind_of(reminder: Reminder) -> str:
    if isinstance(reminder, HeadDigest):
        return "digest"
    if isinstance(reminder, ApprovedNote):
        return "approved"
    if isinstance(reminder, DeniedNote):
        return "denied"
    return "expiring" if isinstance(reminder, ExpiringNote) else "suspended"


def about(reminder: Reminder) -> str:
    if isinstance(reminder, HeadDigest):
        return f"{reminder.count} items ({', '.join(reminder.departments)})"
    if isinstance(reminder, DeniedNote):
        return f"{reminder.request.id} {reminder.request.scope()}"
    return f"{reminder.approval.id} {reminder.approval.scope()}"


def reminders_run(args: argparse.Namespace, config: Config) -> StoreAction:
    if not args.dry_run and config.smtp.host is None:
        raise UsageError("smtp.host is not set, so nothing can be sent (--dry-run lists what would be)")

    async def action(store: PolicyStore) -> int:
        from icap_server.portal.reminders import run_reminders  # the mailer and pages: only for a run

        result = await run_reminders(config, store, datetime.now(UTC), force_digest=True, dry_run=args.dry_run)
        show(result, args.dry_run)
        return EXIT_NOT_SENT if result.failed else 0

    return action


def show(result: RunResult, dry_run: bool) -> None:
    """One row per mail due, with what became of it, then one line of totals."""
    failed, busy = set(result.failed), set(result.busy)
    rows = [("KIND", "TO", "ABOUT", "STATUS")]
    for reminder in result.due:
        status = (
            "would send"
            if dry_run
            else "failed"
            if reminder.mark in failed
            else "busy"
            if reminder.mark in busy
            else "sent"
        )
        rows.append((kind_of(reminder), f"{reminder.to.user} <{reminder.to.email}>", about(reminder), status))
    if len(rows) > 1:
        print_table(rows)
    totals = f"{len(result.due)} due, {len(result.sent)} sent, {len(result.failed)} failed"
    if result.busy:
        totals += f", {len(result.busy)} being sent by another process"
    print(totals + (f" (digest period {result.period})" if result.period else ""))
    if result.unreachable:
        print(f"no e-mail address in the directory: {', '.join(result.unreachable)}", file=sys.stderr)
    if result.failed:
        print(f"clearance: {len(result.failed)} mail(s) not sent: see reminder_mail_failed in the log", file=sys.stderr)
