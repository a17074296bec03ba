"""E-mail to department heads and delegates about a new access request (config `smtp:`).

Sent with aiosmtplib on the portal's own event loop, after the requester already has their answer: a slow or
absent mail relay never holds up the portal, and a failure is logged, not shown to the requester (the
request is stored either way, and `clearance requests list` shows it).
"""

from __future__ import annotations

from collections.abc import Sequence
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from zoneinfo import ZoneInfo

import aiosmtplib
import structlog

from icap_server.config import SmtpConfig
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


def request_message(
    request: AccessRequest, sender: str, to: Sequence[str], zone: ZoneInfo, category_label: str
) -> EmailMessage:
    message = EmailMessage()
    message["From"] = sender
    message["To"] = ", ".join(to)
    message["Subject"] = f"Access request {request.id}: {request.user} – {category_label} ({request.host})"
    message["Date"] = formatdate(localtime=False, usegmt=True)
    message["Message-ID"] = make_msgid(domain=sender.rpartition("@")[2] or None)
    submitted = request.created_at.astimezone(zone).strftime("%Y-%m-%d %H:%M %Z")
    message.set_content(
        "\n".join(
            [
                f"{request.user} asks for access to a restricted service.",
                f"{request.user} 申請使用受限制的網上服務。",
                "",
                f"Request / 申請編號:     {request.id}",
                f"User / 用戶:            {request.user}",
                f"Department / 部門:      {request.department or '-'}",
                f"Category / 類別:        {category_label} ({request.category})",
                f"Host / 網站:            {request.host}",
                f"Days / 日數:            {request.days}",
                f"Client / 電腦位址:      {request.client_ip or '-'}",
                f"Submitted / 提交時間:   {submitted}",
                "",
                "Justification / 理由:",
                f"  {request.justification}",
                "",
                "You receive this as a head or delegate of the department. To decide / 你是部門主管或代理人，請決定：",
                f"  clearance requests approve {request.id} --by YOUR-NAME [--days N] [--note TEXT]",
                f"  clearance requests deny {request.id} --by YOUR-NAME --note REASON",
                "Approval grants the whole category for the days shown; it is reviewed like every approval.",
                "批准後用戶可於所示日數內使用整個類別的服務，並如其他批准一樣須定期覆核。",
            ]
        )
        + "\n"
    )
    return message


async def send_request_mail(
    smtp: SmtpConfig, request: AccessRequest, directory: Directory, zone: ZoneInfo, category_label: str
) -> bool:
    """Tell the approvers; True if the relay accepted the message. Never raises: failures are logged."""
    if smtp.host is None:
        return False
    to, missing = recipients(request, directory)
    if missing:
        log.warning("approvers_without_email", request=request.id, approvers=missing)
    if not to:
        log.warning("request_not_mailed", request=request.id, reason="no approver has an e-mail address")
        return False
    message = request_message(request, smtp.sender, to, zone, category_label)
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
        log.error("request_mail_failed", request=request.id, relay=f"{smtp.host}:{smtp.port}", error=str(error))
        return False
    log.info("request_mailed", request=request.id, to=to)
    return True
