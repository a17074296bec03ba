"""Block-page test helpers: sample facts and configurations, and an ICAP request through the Application."""

from __future__ import annotations

import html
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from blockpages.render import BlockFacts
from icap_server.config import BlockPagesConfig, Config, OrganisationConfig, load_config
from icap_server.protocol import ICAPConnection, ICAPRequest
from icap_server.service.application import Application, FixedPolicy, PortalLink, Verdict
from policy.state import PolicyState

NOW = datetime(2026, 11, 28, 9, 30, tzinfo=UTC)
HOSTILE = "<script>document.title='pwned'</script>"

# One distinct phrase per reason and language; each page has its own and none of the others'.
PHRASES = {
    "no-approval": ("You have no approval to use personal webmail", "你未獲批准使用個人網上電郵"),
    "approval-expired": ("Your approval to use personal webmail has expired", "你使用個人網上電郵的批准已經到期"),
    "approval-revoked": ("Your approval to use personal webmail has been revoked", "批准已被撤銷"),
    "approval-suspended": ("is on hold because its regular review is overdue", "因定期覆核逾期而暫停"),
    "not-permitted": ("is not permitted on this network at all", "此網絡完全禁止使用個人網上電郵"),
    "policy-unavailable": ("cannot check approvals at the moment", "暫時未能核對批准紀錄"),
    "bad-request": ("cannot tell which site this request is for", "無法確定此要求前往哪個網站"),
}


def facts(**changes: object) -> BlockFacts:
    values: dict[str, object] = {
        "host": "mail.google.com",
        "path": "/mail/u/0/",
        "category": "webmail",
        "user": "alice",
        "client_ip": "10.0.0.1",
        "reason": "no-approval",
        "reference": "abc123def456",
        "time": NOW,
    }
    values.update(changes)
    return BlockFacts(**values)  # type: ignore[arg-type]


def branded(**pages: object) -> Config:
    return Config(
        organisation=OrganisationConfig(name_en="Innovation Bureau", name_zh="創新局", contact="IT helpdesk x1234"),
        blockpages=BlockPagesConfig(**pages),  # type: ignore[arg-type]
    )


def text_of(document: bytes) -> str:
    return html.unescape(re.sub(r"<[^>]+>", " ", document.decode("utf-8")))



def icap_request(url: str, user: str | None = "alice", *http_headers: str, client_ip: str = "10.0.0.1") -> ICAPRequest:
    host = url.split("://", 1)[1].split("/", 1)[0]
    http = "\r\n".join([f"GET {url} HTTP/1.1", f"Host: {host}", *http_headers]).encode() + b"\r\n\r\n"
    icap = ["REQMOD icap://h/reqmod ICAP/1.0", "Host: h", "Allow: 204", f"X-Client-IP: {client_ip}"]
    if user is not None:
        icap.append(f"X-Client-Username: {user}")
    icap.append(f"Encapsulated: req-hdr=0, null-body={len(http)}")
    conn = ICAPConnection()
    conn.receive_data(("\r\n".join(icap) + "\r\n\r\n").encode() + http)
    request = conn.next_event()
    assert isinstance(request, ICAPRequest)
    return request


@dataclass
class Answer:
    icap_head: bytes
    http_head: bytes
    body: bytes

    def header(self, name: str) -> str | None:
        found = re.search(rb"\r\n" + name.encode() + rb": ([^\r\n]*)", self.http_head, re.IGNORECASE)
        return found.group(1).decode() if found else None

    @property
    def text(self) -> str:
        return self.body.decode("utf-8")


def answer(app: Application, request: ICAPRequest, verdict: Verdict | None = None) -> Answer:
    verdict = verdict or app.evaluate(request, NOW)
    conn = _answering(request)
    wire = conn.send(app.respond(request, verdict, conn.can_send_204, None, NOW))
    head, _, rest = wire.partition(b"\r\n\r\n")
    head = re.sub(rb"\r\nDate: [^\r\n]*", b"\r\nDate: -", head)  # the wall clock's, added on the way out
    offset = int(re.search(rb"res-hdr=0, res-body=(\d+)", head).group(1))  # type: ignore[union-attr]
    http_head, chunks = rest[:offset], rest[offset:]
    size_line, _, after = chunks.partition(b"\r\n")
    body = after[: int(size_line, 16)]
    assert after[int(size_line, 16):] == b"\r\n0\r\n\r\n"
    return Answer(head, http_head, body)


def _answering(request: ICAPRequest) -> ICAPConnection:
    """A connection in the state of having read `request` (send() checks it is answering one)."""
    conn = ICAPConnection()
    http = request.http_request
    assert http is not None
    conn.receive_data(
        b"REQMOD icap://h/reqmod ICAP/1.0\r\nHost: h\r\nAllow: 204\r\nEncapsulated: req-hdr=0, null-body=%d\r\n\r\n"
        % len(http.raw) + http.raw
    )
    conn.next_event()
    conn.next_event()
    return conn


def webmail_state() -> PolicyState:
    state = PolicyState(version=7)
    state.categories.add("webmail", ["mail.google.com"])
    state.categories.add("social", ["social.example"])
    return state


def application(config: Config | None = None, portal: bool = False) -> Application:
    app = Application(config or Config(), FixedPolicy(webmail_state()))
    if portal:
        app.portal = PortalLink("https://portal.example.gov:8443", "s3cret", 1800, 90)
    return app



def load_config_text(text: str, directory: Path | None = None) -> Config:
    import tempfile

    folder = directory or Path(tempfile.mkdtemp())
    path = folder / "clearance.yaml"
    path.write_text(text, encoding="utf-8")
    return load_config(path)
