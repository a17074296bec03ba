"""E-mail to department heads and delegates about new access requests (config `smtp:`).

Sent with aiosmtplib on the portal's own event loop, after the requester already has their answer: a slow or
absent mail relay never holds up the portal, and a failure is logged, not shown to the requester (the
request is stored either way, and `clearance requests list` shows it). Its Chinese comes from the one catalog
(blockpages/locale), like the block pages' and the portal's. When mails go out, and how many requests one
carries, is `icap_server.portal.digest`'s business: this module writes and sends them.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from zoneinfo import ZoneInfo

import aiosmtplib
import structlog

from blockpages.catalog import N_, category_title
from icap_server.config import SmtpConfig
from icap_server.portal.texts import bilingual
from icap_server.runtime.metrics import count_mail
from policy.directory import Directory
from policy.requests import AccessRequest

log = structlog.get_logger("clearance.portal")


def recipients(request: AccessRequest, directory: Directory) -> tuple[list[str], list[str]]:
    """(addresses, approvers without an address) of the request's department heads and delegates."""
    addresses: list[str] = []
    missing: list[str] = []
    for user in request.approvers:
        person = directory.person(user)
        if person is not None and person.email:
            addresses.append(person.email)
        else:
            missing.append(user)
    return sorted(set(addresses)), sorted(missing)


# The facts listed in the mail, each labelled in both languages; values are filled in by request_message.
FACT_LABELS = (
    N_("Request"),
    N_("User"),
    N_("Department"),
    N_("Service"),
    N_("Category"),
    N_("Host"),
    N_("Days"),
    N_("Client"),
    N_("Submitted"),
)
LABEL_COLUMNS = 24  # where the values start, counting a Chinese character as two columns (as terminals show it)


def _columns(text: str) -> int:
    return sum(2 if unicodedata.east_asian_width(char) in "WF" else 1 for char in text)


def _both(message: str, separator: str = " / ", **values: object) -> str:
    """ "English / 中文" of one catalog message."""
    english, chinese = bilingual(message, **values)
    return f"{english}{separator}{chinese}"


def _fact(label: str, value: object) -> str:
    heading = _both(label) + ":"
    return heading + " " * max(1, LABEL_COLUMNS - _columns(heading)) + str(value)


def service_line(request: AccessRequest) -> str:
    """ "WhatsApp / 微信 (whatsapp)": the service asked for in both languages, or "-" for a category request."""
    if not request.service:
        return "-"
    english, chinese = request.service_en or request.service, request.service_zh or request.service
    names = english if english == chinese else f"{english} / {chinese}"
    return f"{names} ({request.service})"


def _facts(request: AccessRequest, zone: ZoneInfo) -> list[str]:
    """One request in a mail: its facts, labelled in both languages, its justification and how to decide it."""
    label = category_title(request.category, "en")
    submitted = request.created_at.astimezone(zone).strftime("%Y-%m-%d %H:%M %Z")
    values = (
        request.id,
        request.user,
        request.department or "-",
        service_line(request),
        f"{label} ({request.category})",
        request.host,
        request.days,
        request.client_ip or "-",
        submitted,
    )
    return [
        *(
            _fact(name, value)
            for name, value in zip(FACT_LABELS, values, strict=True)
            if name != "Service" or request.service  # a category request names no service
        ),
        "",
        _both(N_("Justification")) + ":",
        f"  {request.justification}",
        "",
        f"  clearance requests approve {request.id} --by YOUR-NAME [--days N] [--note TEXT]",
        f"  clearance requests deny {request.id} --by YOUR-NAME --note REASON",
    ]


def _envelope(subject: str, sender: str, to: Sequence[str], lines: list[str]) -> EmailMessage:
    message = EmailMessage()
    message["From"] = sender
    message["To"] = ", ".join(to)
    message["Subject"] = subject
    message["Date"] = formatdate(localtime=False, usegmt=True)
    message["Message-ID"] = make_msgid(domain=sender.rpartition("@")[2] or None)
    message.set_content("\n".join(lines) + "\n")
    return message


FOOTER = (
    N_("You receive this as a head or delegate of the department. To decide"),
    N_(
        "Approval grants the service shown (every host of it), or the whole category when no service is shown, "
        "for the days shown; it is reviewed like every approval."
    ),
)


def request_message(request: AccessRequest, sender: str, to: Sequence[str], zone: ZoneInfo) -> EmailMessage:
    """The mail about one new request: English and Chinese, with the commands that decide it."""
    label = request.service_en or request.service or category_title(request.category, "en")
    facts = _facts(request, zone)
    lines = [
        *bilingual(N_("%(user)s asks for access to a restricted service."), user=request.user),
        "",
        *facts[:-2],
        _both(FOOTER[0]),
        *facts[-2:],
        *bilingual(FOOTER[1]),
    ]
    subject = f"Access request {request.id}: {request.user} – {label} ({request.host})"
    return _envelope(subject, sender, to, lines)


def digest_message(requests: Sequence[AccessRequest], sender: str, to: Sequence[str], zone: ZoneInfo) -> EmailMessage:
    """One mail about several new requests (the digest of an interval); one request gets `request_message`."""
    if len(requests) == 1:
        return request_message(requests[0], sender, to, zone)
    lines = [*bilingual(N_("%(count)s new access requests wait for your decision."), count=len(requests)), ""]
    lines += [_both(FOOTER[0]), ""]
    for request in requests:
        lines += ["-" * 60, *_facts(request, zone), ""]
    lines += bilingual(FOOTER[1])
    ids = ", ".join(request.id for request in requests[:10]) + (" …" if len(requests) > 10 else "")
    return _envelope(f"Access requests: {len(requests)} new ({ids})", sender, to, lines)


async def send_mail(smtp: SmtpConfig, message: EmailMessage, requests: Sequence[str], what: str = "request") -> bool:
    """Hand one message to the relay; True if it took it. Never raises: failures are logged (`{what}_mail_failed`)."""
    assert smtp.host is not None
    try:
        await aiosmtplib.send(
            message,
            hostname=smtp.host,
            port=smtp.port,
            start_tls=smtp.starttls,
            username=smtp.username,
            password=smtp.password,
            timeout=smtp.timeout,
        )
    except (aiosmtplib.SMTPException, OSError) as error:
        log.error(f"{what}_mail_failed", requests=list(requests), relay=f"{smtp.host}:{smtp.port}", error=str(error))
        count_mail(what, sent=False)
        return False
    log.info(f"{what}_mailed", requests=list(requests), to=message["To"])
    count_mail(what, sent=True)
    return True
