"""Tenant restrictions (issue 10): the vendor's header on requests to its hosts, and who goes without it.

The pure step `policy.tenants.restrict` on plain data (each rule, each vendor's header values), the config
section's checks (a bad value is one line naming the key and the value), and the ICAP answer byte for byte
through the real server protocol on a socket, read back by the strict grammar reader.
"""

from __future__ import annotations

import asyncio
import re
import socket
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import msgspec
import pytest

from icap_server.config import Config, ConfigError, load_config
from icap_server.runtime.server import ICAPProtocol, ICAPServer
from icap_server.service.application import Application, FixedPolicy
from icap_server.service.tenants import tenant_policy
from policy.approvals import Approval, ApprovalStatus, SubjectKind
from policy.decision import Action, Decision, DecisionSettings, Reason, RequestFacts, judge
from policy.services import Service
from policy.state import ApprovalIndex, Exemption, PolicyState, ServiceCatalogue
from policy.tenants import TenantPolicy, TenantSettings, restrict
from tests.support.icap_client import read_response, reqmod
from tests.support.icap_grammar import parse_one
from tests.support.net import free_port

NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
SETTINGS = DecisionSettings(restricted=frozenset({"webmail", "cloud-storage"}), forbidden=frozenset({"banned"}))
DIRECTORY = "72f988bf-86f1-41af-91ab-2d7cd011db47"
POLICY_ID = "0d2b8e1c-8a5f-4c3e-9b7a-1f2e3d4c5b6a"
GMAIL = Service("gmail", "Gmail", "Gmail", "webmail", web=("mail.google.com",), tenant="google")
OUTLOOK = Service("outlook", "Outlook.com", "Outlook.com", "webmail", web=("outlook.live.com",), tenant="microsoft")
PROTON = Service("proton", "Proton Mail", "Proton Mail", "webmail", web=("mail.proton.me",))
EVERY_VENDOR = TenantSettings(
    google_domains=("example.gov.hk", "dept.example.gov.hk"),
    microsoft_tenants=("contoso.onmicrosoft.com", DIRECTORY),
    microsoft_directory_id=DIRECTORY,
    microsoft_policy_id=POLICY_ID,
    microsoft_restrict_msa=True,
    dropbox_team_ids=("dbtid:AAC123", "dbtid:AAD456"),
    slack_requester="E0123ABCD",
    slack_workspaces=("E0123ABCD", "T0456EFGH"),
    zoom_policy="acct-123",
    webex_domains=("example.gov.hk",),
    youtube_mode="moderate",
)


def approval(id: str, *, service: str | None = None, category: str | None = None, status: str = "active") -> Approval:
    return Approval(
        id=id,
        subject_kind=SubjectKind.USER,
        subject="alice",
        category=category,
        host=None,
        service=service,
        department="Finance",
        approver="hfin",
        justification="Liaison with the overseas office",
        created_by="admin",
        created_at=NOW - timedelta(days=10),
        valid_from=NOW - timedelta(days=10),
        valid_until=NOW + timedelta(days=30),
        review_due=NOW + timedelta(days=20),
        status=ApprovalStatus(status),
    )


def state_with(*approvals: Approval) -> PolicyState:
    state = PolicyState(
        version=3, approvals=ApprovalIndex(approvals), services=ServiceCatalogue([GMAIL, OUTLOOK, PROTON])
    )
    state.categories.add("webmail", ["mail.google.com", "outlook.live.com", "mail.proton.me"])
    state.categories.add("banned", ["banned.google.com"])
    return state


def decided(host: str, state: PolicyState, policy: TenantPolicy | None = None, **facts: str) -> Decision:
    request = RequestFacts(host, "/", facts.get("user", "alice"), facts.get("client_ip", "10.0.0.5"))
    return restrict(
        judge(state, request, SETTINGS, NOW), request, state, policy or TenantPolicy(EVERY_VENDOR), SETTINGS, NOW
    )


# ---- the pure step ------------------------------------------------------------------------------------------


def test_a_user_without_approval_passes_a_tenant_service_with_the_header() -> None:
    decision = decided("mail.google.com", state_with())
    assert (decision.action, decision.reason, decision.tenant) == (Action.PASS, Reason.TENANT_RESTRICTED, "google")
    assert decision.service == "gmail"


@pytest.mark.parametrize("status", ["revoked", "suspended"])
def test_a_lapsed_approval_also_becomes_a_restricted_pass(status: str) -> None:
    decision = decided("mail.google.com", state_with(approval("a1", service="gmail", status=status)))
    assert (decision.reason, decision.tenant) == (Reason.TENANT_RESTRICTED, "google")


def test_an_approval_for_the_service_or_its_category_goes_without_the_header() -> None:
    for granted in (approval("a1", service="gmail"), approval("a2", category="webmail")):
        decision = decided("mail.google.com", state_with(granted))
        assert (decision.reason, decision.tenant) == (Reason.APPROVED, None), granted


def test_a_vendor_host_of_no_service_gets_the_header_unless_a_vendor_service_is_approved() -> None:
    assert decided("accounts.google.com", state_with()).tenant == "google"
    assert decided("accounts.google.com", state_with(approval("a1", service="gmail"))).tenant is None
    assert (
        decided("accounts.google.com", state_with(approval("a1", service="gmail", status="revoked"))).tenant == "google"
    )
    # an approval for a service of another vendor does not open Google sign-in
    assert decided("accounts.google.com", state_with(approval("a1", service="outlook"))).tenant == "google"


def test_exempt_requests_go_without_the_header() -> None:
    state = state_with()
    state.exemptions = (Exemption("e1", "10.9.0.0/16"),)
    decision = decided("mail.google.com", state, client_ip="10.9.1.1")
    assert (decision.reason, decision.tenant) == (Reason.EXEMPT, None)


def test_blocks_that_are_not_for_want_of_an_approval_stay_blocked() -> None:
    state = state_with()
    assert decided("banned.google.com", state).reason is Reason.NOT_PERMITTED
    proton = decided("mail.proton.me", state)  # a service with no vendor: blocked as before
    assert (proton.action, proton.reason, proton.tenant) == (Action.BLOCK, Reason.NO_APPROVAL, None)
    for reason in (Reason.BAD_REQUEST, Reason.POLICY_UNAVAILABLE):
        block = Decision(Action.BLOCK, reason, service="gmail")
        facts = RequestFacts("mail.google.com", "/", "alice")
        assert restrict(block, facts, state, TenantPolicy(EVERY_VENDOR), SETTINGS, NOW) is block


def test_a_service_whose_vendor_is_not_configured_stays_blocked() -> None:
    only_google = TenantPolicy(TenantSettings(google_domains=("example.gov.hk",)))
    decision = decided("outlook.live.com", state_with(), only_google)
    assert (decision.action, decision.reason) == (Action.BLOCK, Reason.NO_APPROVAL)


def test_hosts_outside_the_vendor_lists_are_untouched() -> None:
    state = state_with()
    for host in ("www.example.com", "google.com.evil.example", "notgoogle.com", "mail.proton.me"):
        assert decided(host, state).tenant is None, host


def test_nothing_configured_is_a_no_op() -> None:
    block = Decision(Action.BLOCK, Reason.NO_APPROVAL, service="gmail")
    facts = RequestFacts("mail.google.com")
    assert restrict(block, facts, state_with(), None, SETTINGS, NOW) is block
    empty = TenantPolicy(TenantSettings())
    assert not empty and restrict(block, facts, state_with(), empty, SETTINGS, NOW) is block


VENDOR_HEADERS = [
    ("mail.google.com", "google", [("X-GoogApps-Allowed-Domains", "example.gov.hk,dept.example.gov.hk")]),
    ("accounts.google.com", "google", [("X-GoogApps-Allowed-Domains", "example.gov.hk,dept.example.gov.hk")]),
    (
        "login.microsoftonline.com",
        "microsoft",
        [
            ("Restrict-Access-To-Tenants", f"contoso.onmicrosoft.com,{DIRECTORY}"),
            ("Restrict-Access-Context", DIRECTORY),
            ("sec-Restrict-Tenant-Access-Policy", f"{DIRECTORY}:{POLICY_ID}"),
        ],
    ),
    (
        "login.windows.net",
        "microsoft",
        [
            ("Restrict-Access-To-Tenants", f"contoso.onmicrosoft.com,{DIRECTORY}"),
            ("Restrict-Access-Context", DIRECTORY),
            ("sec-Restrict-Tenant-Access-Policy", f"{DIRECTORY}:{POLICY_ID}"),
        ],
    ),
    ("login.live.com", "microsoft", [("sec-Restrict-Tenant-Access-Policy", "restrict-msa")]),
    ("www.dropbox.com", "dropbox", [("X-Dropbox-allowed-Team-Ids", "dbtid:AAC123,dbtid:AAD456")]),
    (
        "app.slack.com",
        "slack",
        [
            ("X-Slack-Allowed-Workspaces-Requester", "E0123ABCD"),
            ("X-Slack-Allowed-Workspaces", "E0123ABCD,T0456EFGH"),
        ],
    ),
    ("us05web.zoom.com", "zoom", [("X-ZoomApps-Policy", "acct-123")]),
    ("idbroker.webex.com", "webex", [("CiscoSpark-Allowed-Domains", "example.gov.hk")]),
    ("www.youtube.com", "youtube", [("YouTube-Restrict", "Moderate")]),
]


@pytest.mark.parametrize(("host", "vendor", "headers"), VENDOR_HEADERS)
def test_each_vendor_gets_its_documented_headers(host: str, vendor: str, headers: list[tuple[str, str]]) -> None:
    injection = TenantPolicy(EVERY_VENDOR).match(host)
    assert injection is not None and injection.vendor == vendor
    assert list(injection.headers) == headers
    assert injection.lines == "".join(f"{n}: {v}\r\n" for n, v in headers).encode()


def test_microsoft_v1_alone_and_msa_alone() -> None:
    v1 = TenantPolicy(TenantSettings(microsoft_tenants=("contoso.com",), microsoft_directory_id=DIRECTORY))
    entra = v1.match("login.microsoft.com")
    assert entra is not None and [n for n, _ in entra.headers] == [
        "Restrict-Access-To-Tenants",
        "Restrict-Access-Context",
    ]
    assert v1.match("login.live.com") is None  # nothing asked for personal accounts
    msa = TenantPolicy(TenantSettings(microsoft_restrict_msa=True))
    assert msa.match("login.microsoftonline.com") is None
    live = msa.match("login.live.com")
    assert live is not None and live.headers == (("sec-Restrict-Tenant-Access-Policy", "restrict-msa"),)


# ---- config --------------------------------------------------------------------------------------------------


def load(tmp_path: Path, text: str) -> Config:
    path = tmp_path / "config.yaml"
    path.write_text(text, encoding="utf-8")
    return load_config(path)


def test_config_builds_the_policy(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        f"""
tenant_restrictions:
  google: {{domains: [example.gov.hk]}}
  microsoft: {{tenants: [contoso.onmicrosoft.com], directory_id: {DIRECTORY}, restrict_msa: true}}
  youtube: {{mode: strict}}
""",
    )
    policy = tenant_policy(config.tenant_restrictions)
    assert policy is not None and policy.vendors == {"google", "microsoft", "youtube"}
    youtube = policy.match("m.youtube.com")
    assert youtube is not None and youtube.headers == (("YouTube-Restrict", "Strict"),)
    assert tenant_policy(load(tmp_path, "policy: {load_default_lists: false}\n").tenant_restrictions) is None


BAD_VALUES = [
    ("google: {domains: ['example.com\\r\\nX-Evil: 1']}", "tenant_restrictions.google.domains[0]", "example.com"),
    ("google: {domains: ['a.com,b.com']}", "tenant_restrictions.google.domains[0]", "a.com,b.com"),
    ("google: {domains: []}", "tenant_restrictions.google.domains", "[]"),
    (
        "microsoft: {tenants: [contoso.com], directory_id: not-a-guid}",
        "tenant_restrictions.microsoft.directory_id",
        "not-a-guid",
    ),
    ("microsoft: {tenants: [contoso.com]}", "tenant_restrictions.microsoft.directory_id", "required"),
    ("dropbox: {team_ids: ['dbtid:A B']}", "tenant_restrictions.dropbox.team_ids[0]", "dbtid:A B"),
    ("slack: {requester: 'T01;x', workspaces: [T01]}", "tenant_restrictions.slack.requester", "T01;x"),
    ("webex: {domains: ['exa mple.com']}", "tenant_restrictions.webex.domains[0]", "exa mple.com"),
    ("youtube: {mode: lax}", "tenant_restrictions.youtube.mode", "lax"),
    ('zoom: {policy: "a\\tb"}', "tenant_restrictions.zoom.policy", "a\\tb"),
    ("gmail: {domains: [example.com]}", "tenant_restrictions.gmail", "unknown key"),
]


@pytest.mark.parametrize(("section", "key", "shown"), BAD_VALUES)
def test_a_bad_value_is_one_line_naming_the_key_and_the_value(
    tmp_path: Path, section: str, key: str, shown: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, f"tenant_restrictions:\n  {section}\n")
    message = str(caught.value)
    assert "\n" not in message and "\r" not in message, message
    assert f"{key}:" in message and shown in message, message


# ---- the ICAP answer, byte for byte, through the real server protocol on a socket --------------------------


@pytest.fixture
def tenant_server() -> Iterator[int]:
    """The real ICAPProtocol/ICAPServer on a socket, with an in-memory policy (gmail restricted, Google set)."""
    config = msgspec.convert(
        {"tenant_restrictions": {"google": {"domains": ["example.gov.hk"]}}, "policy": {"load_default_lists": False}},
        Config,
    )
    app = Application(config, FixedPolicy(state_with()))
    loop = asyncio.new_event_loop()
    port = free_port()
    server = loop.run_until_complete(loop.create_server(lambda: ICAPProtocol(ICAPServer(app)), "127.0.0.1", port))
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield port
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        server.close()
        loop.run_until_complete(server.wait_closed())
        loop.close()


def ask(port: int, message: bytes, rest: bytes | None = None) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        buffer = bytearray()
        sock.sendall(message)
        if rest is None:
            return read_response(sock, buffer)
        while b"\r\n\r\n" not in buffer:
            buffer.extend(sock.recv(65536))
        assert bytes(buffer).startswith(b"ICAP/1.0 100 Continue\r\n\r\n"), bytes(buffer)
        del buffer[: len(b"ICAP/1.0 100 Continue\r\n\r\n")]
        sock.sendall(rest)
        return read_response(sock, buffer)


def with_client_copies(message: bytes) -> bytes:
    """The same REQMOD with two client-sent copies of the header, in other cases (Encapsulated moved to match)."""
    added = b"x-googapps-allowed-domains: gmail.com\r\nAccept: */*\r\nX-GOOGAPPS-ALLOWED-DOMAINS: evil.example\r\n"
    message = message.replace(b"Host: mail.google.com\r\n", b"Host: mail.google.com\r\n" + added, 1)
    return re.sub(rb"(null-body|req-body)=(\d+)", lambda m: b"%b=%d" % (m[1], int(m[2]) + len(added)), message, count=1)


def encapsulated_http(response: bytes) -> bytes:
    _icap_head, _, rest = response.partition(b"\r\n\r\n")
    return rest


def test_get_is_answered_with_the_modified_request_and_client_copies_stripped(tenant_server: int) -> None:
    response = ask(tenant_server, with_client_copies(reqmod("https://mail.google.com/mail/u/0/", user="alice")))
    parsed = parse_one(response)
    assert parsed.status == 200
    assert re.search(rb"\r\nEncapsulated: req-hdr=0, null-body=\d+\r\n", response)
    assert encapsulated_http(response) == (
        b"GET https://mail.google.com/mail/u/0/ HTTP/1.1\r\nHost: mail.google.com\r\nAccept: */*\r\n"
        b"X-GoogApps-Allowed-Domains: example.gov.hk\r\n\r\n"
    )


@pytest.mark.parametrize("preview", [None, 0, 4, 64])
def test_a_post_body_is_echoed_with_the_modified_head_with_or_without_preview(
    tenant_server: int, preview: int | None
) -> None:
    body = b"Email=someone%40gmail.com&Passwd=x" * 3
    message = reqmod("https://mail.google.com/signin", user="alice", method="POST", body=body, preview=preview)
    rest = None
    if preview is not None and len(body) > preview:
        rest = b"%x\r\n%b\r\n0\r\n\r\n" % (len(body) - preview, body[preview:])
    response = ask(tenant_server, with_client_copies(message), rest)
    assert parse_one(response).status == 200
    http, _, chunked = encapsulated_http(response).partition(b"\r\n\r\n")
    assert http == (
        f"POST https://mail.google.com/signin HTTP/1.1\r\nHost: mail.google.com\r\nAccept: */*\r\n"
        f"Content-Length: {len(body)}\r\nX-GoogApps-Allowed-Domains: example.gov.hk".encode()
    )
    assert re.search(rb"\r\nEncapsulated: req-hdr=0, req-body=\d+\r\n", response)
    pieces, position = [], 0
    while True:
        line_end = chunked.index(b"\r\n", position)
        size = int(chunked[position:line_end], 16)
        if size == 0:
            break
        pieces.append(chunked[line_end + 2 : line_end + 2 + size])
        position = line_end + 4 + size
    assert b"".join(pieces) == body


def test_a_host_outside_the_vendor_list_is_answered_204(tenant_server: int) -> None:
    for url in ("https://www.example.com/", "https://google.com.evil.example/"):
        response = ask(tenant_server, reqmod(url, user="alice"))
        assert parse_one(response).status == 204, response


def test_without_allow_204_an_untouched_host_is_echoed_unmodified(tenant_server: int) -> None:
    message = reqmod("https://www.example.com/", user="alice", allow_204=False, preview=None)
    response = ask(tenant_server, message)
    assert encapsulated_http(response) == b"GET https://www.example.com/ HTTP/1.1\r\nHost: www.example.com\r\n\r\n"
