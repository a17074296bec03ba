"""A real SMTP sink for the tests: aiosmtpd on a free port, collecting what it accepts (stopped after)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email import message_from_bytes
from email.message import Message
from typing import Any

from tests.support.net import free_port


@dataclass
class Inbox:
    """aiosmtpd's handler: keeps what it accepts; `refuse` answers every message with a temporary failure."""

    messages: list[tuple[list[str], Message]] = field(default_factory=list)
    refuse: bool = False

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.refuse:
            return "451 4.3.0 Mail system busy, try again later"
        self.messages.append((list(envelope.rcpt_tos), message_from_bytes(envelope.content)))
        return "250 OK"

    def to(self, address: str) -> list[Message]:
        return [message for rcpt, message in self.messages if rcpt == [address]]


@contextmanager
def smtp_sink(inbox: Inbox, timeout: float | None = None) -> Iterator[str]:
    """An SMTP server collecting into `inbox`; yields the config's `smtp:` section that sends to it."""
    from aiosmtpd.controller import Controller

    port = free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        section = f"smtp:\n  host: 127.0.0.1\n  port: {port}\n  sender: clearance@example.gov\n"
        yield section + (f"  timeout: {timeout:g}\n" if timeout is not None else "")
    finally:
        controller.stop()
