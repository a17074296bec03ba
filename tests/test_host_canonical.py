"""Every spelling of a listed host is blocked through a real `clearance serve`; what stays ambiguous is bad-request.

Issue 9 found that hosts the server could not canonicalise passed as "not restricted": percent-escapes,
fullwidth and ideographic dots, empty labels, two Host headers, `Host: a, b`, and other spellings of a listed
IP (decimal, hex, IPv4-mapped IPv6). Each spelling here goes over ICAP as Squid would send it (absolute-form,
origin-form with Host, CONNECT), and the answer must be an HTTP 403 whose log line gives the expected reason
(or an ICAP 400); never a 204. Unlisted hosts are the control: they still pass.
"""

from __future__ import annotations

import socket
from dataclasses import replace
from datetime import UTC, datetime

import pytest

from icap_server.config import Config
from icap_server.service.application import Application, FixedPolicy, PortalLink
from policy.approvals import Approval, SubjectKind
from policy.decision import Reason
from policy.rules import Rule, RuleIndex
from policy.state import Exemption, PolicyState
from tests.conftest import CLI, ServerHandle, StartServer
from tests.support.icap_client import read_parsed, wait_until_synced
from tests.support.icap_grammar import ICAPResponse
from tests.support.pages import answer, icap_request
from tests.support.waiting import wait_until

LISTED = "mail.google.com"
LISTED_IP = "203.0.113.7"

# Spellings of mail.google.com that a browser (WHATWG URL host parser, UTS #46) or Squid reads as that host.
NAME_SPELLINGS = [
    "mail%2egoogle%2ecom",
    "%6d%61%69%6c.google.com",
    "MAIL.Google.COM.",
    "mail.google.com..",
    "ｍａｉｌ．ｇｏｏｇｌｅ．ｃｏｍ",  # fullwidth letters and full stop
    "mail。google。com",  # ideographic full stop
    "mail｡google｡com",  # halfwidth ideographic full stop
    "ＭＡＩＬ.google.com",
    "ma\u00adil.google.com",  # a soft hyphen: UTS #46 ignores it
    "%EF%BD%8D%EF%BD%81%EF%BD%89%EF%BD%8C.google.com",  # fullwidth, percent-encoded as UTF-8
]
# Spellings of 203.0.113.7 a browser accepts (WHATWG IPv4 parser) and IPv6 forms that reach it.
IP_SPELLINGS = [
    "3405803783",
    "0xcb.0x0.0x71.0x7",
    "0xCB.0.113.7",
    "0313.0.0161.07",
    "0xcb007107",
    "203.0.28935",
    "203.28935",
    "203.0.113.7.",
    "%32%30%33.0.113.7",
    "２０３．０．１１３．７",
    "[::ffff:203.0.113.7]",
    "[::ffff:cb00:7107]",
    "[0:0:0:0:0:ffff:203.0.113.7]",
    "[64:ff9b::203.0.113.7]",
]
# Hosts with no canonical form: blocked as bad-request, whatever they resemble.
AMBIGUOUS = [
    "mail..google.com",
    ".mail.google.com",
    "mail.google.com%00",
    "mail.google.com%2f",
    "mail.google.com%3a80",
    "%zz.google.com",
    "%ff.google.com",
    "203.0.113.7.8",
    "203.0.113.256",
    "203.0.113.09",
    "mail.google.1",
    "exa_mple!.com",
]
UNLISTED = ["example.org", "203.0.113.8", "[2001:db8::7]", "0xcb.0.113.8"]

MODES = ("absolute", "origin", "connect")


def http_head(mode: str, host: str) -> bytes:
    """The HTTP request head Squid would encapsulate for this host, in one of the three target forms."""
    if mode == "absolute":
        lines = [f"GET http://{host}/inbox HTTP/1.1", f"Host: {host}"]
    elif mode == "origin":
        lines = ["GET /inbox HTTP/1.1", f"Host: {host}"]
    else:
        lines = [f"CONNECT {host}:443 HTTP/1.1", f"Host: {host}:443"]
    return head(*lines)


def head(*lines: str) -> bytes:
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8")  # UTF-8 bytes, as Squid passes a non-ASCII name


def reqmod_of(http: bytes) -> bytes:
    icap = [
        "REQMOD icap://127.0.0.1/reqmod ICAP/1.0", "Host: 127.0.0.1", "Allow: 204", "X-Client-Username: alice",
        f"Encapsulated: req-hdr=0, null-body={len(http)}",
    ]
    return ("\r\n".join(icap) + "\r\n\r\n").encode() + http


# Requests whose Host headers or target leave the destination undetermined (the HTTP head as sent).
HEADER_CASES = {
    "two different Host headers": head("GET /inbox HTTP/1.1", "Host: example.org", "Host: mail.google.com"),
    "two Host headers, absolute-form": head(
        "GET http://example.org/ HTTP/1.1", "Host: example.org", "Host: mail.google.com"
    ),
    "Host: a, b": head("GET /inbox HTTP/1.1", "Host: example.org, mail.google.com"),
    "Host: a, b with absolute-form": head("GET http://example.org/ HTTP/1.1", "Host: example.org, mail.google.com"),
    "origin-form without Host": head("GET /inbox HTTP/1.1", "Accept: */*"),
    "empty Host": head("GET /inbox HTTP/1.1", "Host: "),
    "empty authority": head("GET http:///mail.google.com/ HTTP/1.1", "Host: example.org"),
    "backslash in the authority": head("GET http://example.org\\@mail.google.com/ HTTP/1.1", "Host: example.org"),
    "two @ in the authority": head("GET http://a@example.org@mail.google.com/ HTTP/1.1", "Host: example.org"),
    "target in no form": head("GET mail.google.com/inbox HTTP/1.1", "Host: example.org"),
    "scheme-like origin-form": head("GET /x://example.org/ HTTP/1.1", "Accept: */*"),
}


def _cases() -> list[object]:
    cases: list[object] = []
    for spelling in NAME_SPELLINGS + IP_SPELLINGS:
        cases += [pytest.param(http_head(mode, spelling), "no-approval", id=f"{mode}-{spelling}") for mode in MODES]
    for spelling in AMBIGUOUS:
        cases += [pytest.param(http_head(mode, spelling), "bad-request", id=f"{mode}-{spelling}") for mode in MODES]
    cases += [pytest.param(http, "bad-request", id=name) for name, http in HEADER_CASES.items()]
    cases += [pytest.param(head("GET /x://example.org/ HTTP/1.1", f"Host: {LISTED}"), "no-approval", id="origin")]
    for spelling in UNLISTED:
        cases += [pytest.param(http_head(mode, spelling), None, id=f"{mode}-unlisted-{spelling}") for mode in MODES]
    return cases


class Exchanger:
    """One ICAP connection to the server, reopened if the server closes it (as it may after a 400)."""

    def __init__(self, server: ServerHandle) -> None:
        self.server = server
        self.sock: socket.socket | None = None
        self.buffer = bytearray()

    def send(self, message: bytes) -> ICAPResponse:
        if self.sock is None:
            self.sock = socket.create_connection((self.server.host, self.server.port), timeout=10)
            self.buffer = bytearray()
        self.sock.sendall(message)
        response = read_parsed(self.sock, self.buffer)
        if response.status >= 400 or "close" in response.tokens("Connection"):
            self.close()
        return response

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None


def _http_header(http: bytes, name: str) -> str:
    for line in http.decode("latin-1").split("\r\n")[1:]:
        field, _, value = line.partition(":")
        if field.lower() == name.lower():
            return value.strip()
    raise AssertionError(f"no {name} in {http!r}")


@pytest.fixture
def table_server(start_icap_server: StartServer, cli: CLI, redis_url: str) -> ServerHandle:
    """mail.google.com and 203.0.113.7 listed as webmail (restricted by default); alice has no approval."""
    server = start_icap_server()
    cli("categories", "add", "webmail", LISTED, LISTED_IP)
    wait_until_synced(server.port, redis_url)
    return server


def test_every_spelling_is_blocked_or_refused_and_the_log_says_why(table_server: ServerHandle) -> None:
    """The whole table through one server: listed spellings are no-approval blocks, ambiguous ones bad-request."""
    exchanger = Exchanger(table_server)
    wrong: list[str] = []
    references: dict[str, tuple[str, str]] = {}
    try:
        for case in _cases():
            http, expected = case.values  # type: ignore[attr-defined]
            response = exchanger.send(reqmod_of(http))
            what = f"{case.id}: ICAP {response.status}"  # type: ignore[attr-defined]
            if expected is None:
                if response.status != 204:
                    wrong.append(f"{what}, expected a pass (204)")
            elif response.status == 400:
                continue  # refused outright: never passed
            elif response.status != 200 or not (response.res_hdr or b"").startswith(b"HTTP/1.1 403 "):
                wrong.append(f"{what}, expected an HTTP 403 ({expected})")
            else:
                reference = _http_header(response.res_hdr or b"", "X-Clearance-Reference")
                references[reference] = (case.id, expected)  # type: ignore[attr-defined]
    finally:
        exchanger.close()
    assert not wrong, "\n".join(wrong)

    def logged() -> dict[str, dict[str, object]] | None:
        records = {str(line.get("reference")): line for line in table_server.events("icap")}
        return records if all(reference in records for reference in references) else None

    records = wait_until(logged, 5.0, interval=0.05, what="an access-log line for every block")
    reasons = [
        f"{case_id}: logged {records[reference].get('reason')}, expected {expected}"
        for reference, (case_id, expected) in references.items()
        if records[reference].get("reason") != expected or records[reference].get("decision") != "block"
    ]
    assert not reasons, "\n".join(reasons)


NOW = datetime(2026, 11, 28, 9, 30, tzinfo=UTC)


def open_everything_state() -> PolicyState:
    """A policy where everything that can open a block does: an allow rule, an exemption, an approval."""
    state = PolicyState(version=3)
    state.categories.add("webmail", [LISTED])
    state.rules = RuleIndex([Rule(id="R1", kind="allow", host=LISTED)])
    state.exemptions = (Exemption(id="E1", network="0.0.0.0/0"),)
    state.approvals.put_many([
        Approval(
            id="A1", subject_kind=SubjectKind.USER, subject="alice", category="webmail", host=None,
            department="Finance", approver="head", justification="table", created_by="admin", created_at=NOW,
            valid_from=NOW, valid_until=NOW.replace(year=2027), review_due=NOW.replace(year=2027),
        )
    ])
    return state


def test_bad_request_is_blocked_whatever_opens_the_host_and_offers_no_request_form() -> None:
    """No allow rule, exemption or approval opens a destination nobody can name; the page says so, no form."""
    app = Application(Config(), FixedPolicy(open_everything_state()))
    app.portal = PortalLink("https://portal.example.gov", "s3cret", 1800, 90)
    assert not app.evaluate(icap_request(f"http://{LISTED}/"), NOW).blocked  # the allow rule opens the host
    request = icap_request("http://mail..google.com/")
    verdict = app.evaluate(request, NOW)
    assert verdict.blocked and verdict.decision is not None and verdict.decision.reason is Reason.BAD_REQUEST
    assert verdict.log_fields()["reason"] == "bad-request" and verdict.reference
    page = answer(app, request, verdict)
    assert page.http_head.startswith(b"HTTP/1.1 403 Forbidden")
    assert "cannot tell which site this request is for" in page.text and "無法確定此要求前往哪個網站" in page.text
    assert "<form" not in page.text and "request?token=" not in page.text


def test_a_reqmod_without_an_http_request_head_is_a_400_not_a_pass() -> None:
    """The protocol refuses such a message first; should one get through, the service refuses it too."""
    request = replace(icap_request(f"http://{LISTED}/"), http_request=None)
    app = Application(Config(), FixedPolicy(open_everything_state()))
    verdict = app.evaluate(request, NOW)
    assert verdict.status == 400 and not verdict.blocked
    assert app.respond(request, verdict, True, None, NOW).status == 400
