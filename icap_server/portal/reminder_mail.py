"""The reminder mails, written: a head's digest and the notes to a person, English then Traditional Chinese.

What goes to whom is `policy.reminders`' business; this module only words it, with the Chinese from the one
catalog, as `icap_server.portal.mail` words the request mails (whose envelope and fact lines it reuses).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from email.message import EmailMessage
from zoneinfo import ZoneInfo

from blockpages.catalog import N_, category_title
from blockpages.negotiate import Language
from icap_server.portal.mail import _both, _envelope, service_line
from icap_server.portal.texts import CHINESE, ENGLISH, bilingual
from policy.approvals import Approval
from policy.reminders import (
    ApprovedNote,
    DeniedNote,
    ExpiringNote,
    HeadDigest,
    Reminder,
    SuspendedNote,
)
from policy.report import Listed
from policy.requests import AccessRequest

DIGEST_SECTIONS = (
    N_("Access requests waiting for your decision"),
    N_("Reviews overdue"),
    N_("Reviews due within %(days)s days"),
    N_("Not used for %(days)s days or more"),
    N_("Ending within %(days)s days"),
)
DIGEST_INTRO = N_("Your digest for %(departments)s: %(count)s items.")
WORKSPACE = N_("Decide and review in the heads' workspace")


# A head's single-use link for one item and the actions it allows (`heads_auth.action_link`), or None.
LinkMaker = Callable[[str, tuple[str, ...]], str]
REQUEST_ACTIONS = ("approve", "deny")
APPROVAL_ACTIONS = ("keep", "review-revoke", "suspend")
DECIDE = N_("Decide (a single-use link)")


def reminder_message(
    reminder: Reminder,
    sender: str,
    zone: ZoneInfo,
    workspace: str | None,
    days: Sequence[int],
    link: LinkMaker | None = None,
) -> EmailMessage:
    """The mail of one reminder. `workspace`: the heads' page; `days`: review due, unused, expiring (the config's);
    `link`: the head's single-use links, one per item of a digest."""
    if isinstance(reminder, HeadDigest):
        return digest_mail(reminder, sender, zone, workspace, days, link)
    scope = reminder.request.scope() if isinstance(reminder, DeniedNote) else reminder.approval.scope()
    what = (scope_text(scope), scope_text(scope, "zh-HK"))
    if isinstance(reminder, ApprovedNote):
        return approved_mail(reminder, sender, zone, what)
    if isinstance(reminder, DeniedNote):
        return denied_mail(reminder, sender, what)
    if isinstance(reminder, ExpiringNote):
        lines = _say(
            N_(
                "Your access to %(what)s ends on %(until)s. If you still need it for your work, ask for it again "
                "from the block page once it has ended, or ask the head of %(department)s now."
            ),
            what,
            until=last_day(reminder.approval, zone),
            department=reminder.approval.department,
        )
        return _note(f"Access ending {last_day(reminder.approval, zone)}: {what[0]}", sender, reminder, lines)
    return suspended_mail(reminder, sender, zone, what)


def scope_text(scope: str, language: Language = "en") -> str:
    """`Personal webmail (webmail)`, `service whatsapp`, `host example.com`; in Chinese without the kind word."""
    kind, _, name = scope.partition(" ")
    if kind == "category" and name:
        return f"{category_title(name, language)} ({name})"
    return scope if language == "en" else name


def _say(message: str, what: tuple[str, str], **values: object) -> tuple[str, str]:
    """(English, Chinese) of a message about `what`, which is named in each language its own way."""
    return ENGLISH(message, what=what[0], **values), CHINESE(message, what=what[1], **values)


def last_day(approval: Approval, zone: ZoneInfo) -> str:
    """`valid_until` is the first moment no longer valid; people read the last day it is."""
    return (approval.valid_until - timedelta(seconds=1)).astimezone(zone).strftime("%Y-%m-%d")


def _day(moment: datetime | None, zone: ZoneInfo) -> str:
    return moment.astimezone(zone).strftime("%Y-%m-%d") if moment else "-"


def _note(subject: str, sender: str, reminder: Reminder, lines: Sequence[str]) -> EmailMessage:
    greeting = [f"{reminder.to.name},", ""]
    footer = ["", *bilingual(N_("This note is sent once. Questions: ask the head of your department."))]
    return _envelope(subject, sender, [reminder.to.email], [*greeting, *lines, *footer])


def approved_mail(note: ApprovedNote, sender: str, zone: ZoneInfo, what: tuple[str, str]) -> EmailMessage:
    approval = note.approval
    lines = _say(
        N_(
            "Your access to %(what)s was approved by %(who)s. It is valid until %(until)s and is reviewed "
            "regularly; reload the site to use it."
        ),
        what,
        who=approval.approver,
        until=last_day(approval, zone),
    )
    ticket = [f"{_both(N_('Approval'))}: {approval.id}" + (f" ({approval.ticket})" if approval.ticket else "")]
    return _note(f"Access approved: {what[0]} ({approval.id})", sender, note, [*lines, "", *ticket])


def denied_mail(note: DeniedNote, sender: str, what: tuple[str, str]) -> EmailMessage:
    request = note.request
    lines = list(
        _say(
            N_("Your request %(id)s for %(what)s was declined by %(who)s."),
            what,
            id=request.id,
            who=request.decided_by or "-",
        )
    )
    if request.note:
        lines += ["", f"{_both(N_('Note'))}: {request.note}"]
    return _note(f"Access request {request.id} declined: {what[0]}", sender, note, lines)


def suspended_mail(note: SuspendedNote, sender: str, zone: ZoneInfo, what: tuple[str, str]) -> EmailMessage:
    approval = note.approval
    if note.for_review:
        lines = _say(
            N_(
                "Your access to %(what)s is suspended until the head of %(department)s reviews it (the review "
                "was due on %(due)s). Ask them to review it if you still need it."
            ),
            what,
            department=approval.department,
            due=_day(approval.review_due, zone),
        )
    else:
        lines = _say(
            N_("Your access to %(what)s was suspended by %(who)s: %(reason)s"),
            what,
            who=approval.suspended_by or "-",
            reason=approval.suspend_reason or "-",
        )
    return _note(f"Access suspended: {what[0]} ({approval.id})", sender, note, lines)


def _listed(item: Listed, zone: ZoneInfo, link: LinkMaker | None) -> list[str]:
    approval = item.approval
    use = f"used {item.uses}x, last {_day(item.last_used, zone)}" if item.last_used else "never used"
    return [
        f"  {approval.id}  {approval.subject_kind} {approval.subject}  {scope_text(approval.scope())}  [{item.state}]",
        f"      review {_day(approval.review_due, zone)}, until {last_day(approval, zone)}, {use}",
        *_link_line(link, approval.id, APPROVAL_ACTIONS),
    ]


def _request_lines(request: AccessRequest, zone: ZoneInfo, link: LinkMaker | None) -> list[str]:
    what = service_line(request) if request.service else scope_text(request.scope())
    submitted = request.created_at.astimezone(zone).strftime("%Y-%m-%d %H:%M")
    return [
        f"  {request.id}  {request.user}  {what}  {request.host}  {request.days} days  {submitted}",
        f"      {request.justification}",
        *_link_line(link, request.id, REQUEST_ACTIONS),
    ]


def _link_line(link: LinkMaker | None, item: str, actions: tuple[str, ...]) -> list[str]:
    return [f"      {_both(DECIDE)}: {link(item, actions)}"] if link is not None else []


def digest_mail(
    digest: HeadDigest,
    sender: str,
    zone: ZoneInfo,
    workspace: str | None,
    days: Sequence[int],
    link: LinkMaker | None = None,
) -> EmailMessage:
    """One head's digest: a section per kind with something in it, each item on two lines."""
    departments = ", ".join(digest.departments)
    lines = [
        f"{digest.to.name},",
        "",
        *bilingual(DIGEST_INTRO, departments=departments, count=digest.count),
    ]
    if workspace:
        lines += ["", _both(WORKSPACE) + f": {workspace}"]
    review_due, unused, expiring = days
    sections: list[tuple[str, dict[str, int], list[list[str]]]] = [
        (DIGEST_SECTIONS[0], {}, [_request_lines(request, zone, link) for request in digest.pending]),
        (DIGEST_SECTIONS[1], {}, [_listed(item, zone, link) for item in digest.reviews_overdue]),
        (DIGEST_SECTIONS[2], {"days": review_due}, [_listed(item, zone, link) for item in digest.reviews_due]),
        (DIGEST_SECTIONS[3], {"days": unused}, [_listed(item, zone, link) for item in digest.unused]),
        (DIGEST_SECTIONS[4], {"days": expiring}, [_listed(item, zone, link) for item in digest.expiring]),
    ]
    for title, values, items in sections:
        if items:
            lines += ["", "-" * 60, " / ".join(bilingual(title, **values)) + f" ({len(items)})", ""]
            lines += [line for item in items for line in item]
    lines += [
        "",
        "-" * 60,
        *bilingual(N_("Or with the command line:")),
        "  clearance requests approve|deny ID --by YOUR-NAME [--days N] --note TEXT",
        "  clearance approvals review ID --by YOUR-NAME --keep|--revoke --note TEXT",
        "",
        *bilingual(N_("You receive this as a head or delegate of %(departments)s."), departments=departments),
    ]
    subject = f"Clearance digest {digest.period}: {digest.count} items ({departments})"
    return _envelope(subject, sender, [digest.to.email], lines)
