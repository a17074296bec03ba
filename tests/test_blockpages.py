"""The block page as rendered, and as Clearance sends it inside an ICAP answer."""

from __future__ import annotations

import html
import re
from datetime import UTC, datetime

from blockpages.render import BlockPage, render_block_page
from icap_server.application import Application, FixedPolicy, Verdict
from icap_server.config import Config
from icap_server.protocol import ICAPConnection, Request
from policy.decision import Action, Decision, Reason
from policy.identity import Identity
from policy.state import PolicyState

NOW = datetime(2026, 11, 28, 9, 30, tzinfo=UTC)


def page(**changes: object) -> BlockPage:
    values: dict[str, object] = {
        "organisation_en": "Innovation Bureau",
        "organisation_zh": "創新局",
        "host": "mail.google.com",
        "category": "webmail",
        "user": "alice",
        "reason": "no-approval",
        "reference": "abc123def456",
        "time": NOW,
        "how_to_request_en": "Ask your head of department.",
        "how_to_request_zh": "請向部門主管申請。",
        "contact": "helpdesk@example.gov",
    }
    values.update(changes)
    return BlockPage(**values)  # type: ignore[arg-type]


def text_of(document: bytes) -> str:
    return html.unescape(re.sub(r"<[^>]+>", " ", document.decode("utf-8")))


def test_page_shows_the_facts_in_both_languages() -> None:
    text = text_of(render_block_page(page()))
    for fact in ("Innovation Bureau", "創新局", "mail.google.com", "alice", "abc123def456", "Personal webmail",
                 "個人網上電郵", "Access to this site is blocked", "此網站已被封鎖", "Ask your head of department.",
                 "請向部門主管申請。", "helpdesk@example.gov", "2026-11-28 09:30:00"):
        assert fact in text, fact


def test_each_reason_has_its_own_message() -> None:
    texts = {reason: text_of(render_block_page(page(reason=reason)))
             for reason in ("no-approval", "approval-expired", "approval-revoked")}
    assert "no approval" in texts["no-approval"]
    assert "expired" in texts["approval-expired"] and "到期" in texts["approval-expired"]
    assert "revoked" in texts["approval-revoked"] and "撤銷" in texts["approval-revoked"]


def test_everything_reflected_is_escaped() -> None:
    evil = '<script>alert("x")</script>'
    document = render_block_page(page(user=evil, host=evil, reference=evil)).decode()
    assert "<script>" not in document
    assert "&lt;script&gt;" in document


def test_icap_answer_is_a_403_with_exact_length_and_no_store() -> None:
    app = Application(Config(), FixedPolicy(PolicyState(version=7)))
    http = b"GET http://mail.google.com/ HTTP/1.1\r\nHost: mail.google.com\r\n\r\n"
    conn = ICAPConnection()
    conn.receive_data(
        b"REQMOD icap://h/reqmod ICAP/1.0\r\nHost: h\r\nAllow: 204\r\nEncapsulated: req-hdr=0, null-body=%d\r\n\r\n"
        % len(http) + http
    )
    request = conn.next_event()
    assert isinstance(request, Request)
    conn.next_event()
    verdict = Verdict(
        0, Identity("alice", "10.0.0.1"), "mail.google.com",
        Decision(Action.BLOCK, Reason.NO_APPROVAL, "webmail", "mail.google.com"), 7, "0123456789ab",
    )
    wire = conn.send(app.respond(request, verdict, conn.can_send_204, None, NOW))
    head, _, rest = wire.partition(b"\r\n\r\n")
    assert head.startswith(b"ICAP/1.0 200 OK") and b'ISTag: "CL-7"' in head
    offset = int(re.search(rb"res-hdr=0, res-body=(\d+)", head).group(1))  # type: ignore[union-attr]
    http_head, chunks = rest[:offset], rest[offset:]
    assert http_head.startswith(b"HTTP/1.1 403 Forbidden\r\n") and http_head.endswith(b"\r\n\r\n")
    assert b"Content-Type: text/html; charset=utf-8\r\n" in http_head
    assert b"Cache-Control: no-store\r\n" in http_head
    assert b"X-Clearance-Reference: 0123456789ab\r\n" in http_head
    size_line, _, after = chunks.partition(b"\r\n")
    body = after[: int(size_line, 16)]
    assert after[int(size_line, 16):] == b"\r\n0\r\n\r\n"
    length = int(re.search(rb"Content-Length: (\d+)", http_head).group(1))  # type: ignore[union-attr]
    assert length == len(body)
    assert "0123456789ab" in body.decode() and "此網站已被封鎖" in body.decode()
