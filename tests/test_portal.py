"""The access-request portal end to end: a real `clearance serve` with its portal, a real Redis, the real CLI.

Tokens are signed here with the secret the test configures, exactly as a block page signs them; the portal is
reached over HTTP from 127.0.0.1, a trusted proxy by default, so `X-Forwarded-For` plays the browser's address
as Squid would pass it on.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis

from policy.tokens import RequestClaim, sign
from tests.conftest import CLI, StartServer
from tests.support.icap_client import exchange, reqmod, wait_until_synced
from tests.support.net import free_port, wait_for_port
from tests.support.smtp import Inbox, smtp_sink

SECRET = "portal-test-secret"
WHY = "Exchanging documents with an overseas partner agency"
PREFIX = "clearance:"
DIRECTORY = """user,name,department,groups,heads,delegates,email
alice,Alice Chan,Finance,finance-staff,,,alice@example.gov
hfin,Henry Fung,Finance,finance-staff,Finance,,hfin@example.gov
dfin,Dora Fok,Finance,,,Finance,dfin@example.gov
carol,Carol Wong,IT,,,,
hit,Ivy Tam,IT,,IT,,
"""


def portal_yaml(
    portal_port: int, *, workers: int = 2, secret: str | None = SECRET, extra: str = "", sections: str = ""
) -> str:
    """`extra` goes into the portal section, `sections` at the top level."""
    return (
        "server:\n"
        f"  workers: {workers}\n"
        "policy:\n  load_default_lists: false\n"
        "approvals:\n  require_department_head: true\n  min_justification_chars: 20\n  max_validity_days: 180\n"
        "portal:\n"
        f"  listen: 127.0.0.1:{portal_port}\n"
        "  token_ttl_minutes: 30\n"
        + (f"  secret: {secret}\n" if secret else "")
        + extra
        + sections
        + "logging:\n  format: json\n"
    )


@dataclass
class Portal:
    """A running serve with its portal, the admin CLI on the same config, and the URL of the portal."""

    url: str
    icap_port: int
    admin: CLI
    config: Path

    def token(
        self,
        user: str = "alice",
        client_ip: str | None = "10.1.2.3",
        category: str = "webmail",
        host: str = "mail.google.com",
        ttl: int = 600,
        secret: str = SECRET,
    ) -> str:
        return sign(RequestClaim(user, client_ip, category, host, int(time.time()) + ttl), secret)

    def submit(
        self, token: str, justification: str = WHY, days: str = "30", client: str | None = "10.1.2.3"
    ) -> HTTPAnswer:
        body = urllib.parse.urlencode({"token": token, "justification": justification, "days": days}).encode()
        headers = {"Content-Type": "application/x-www-form-urlencoded"}
        if client:
            headers["X-Forwarded-For"] = f"192.0.2.99, {client}"  # the first hop is whatever the browser claimed
        return fetch(self.url + "/request", body, headers)

    def get(self, path: str) -> HTTPAnswer:
        return fetch(self.url + path)


@dataclass
class HTTPAnswer:
    status: int
    headers: dict[str, str]
    text: str

    @property
    def location(self) -> str:
        return self.headers.get("location", "")


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def fetch(url: str, body: bytes | None = None, headers: dict[str, str] | None = None) -> HTTPAnswer:
    opener = urllib.request.build_opener(NoRedirect)
    request = urllib.request.Request(url, data=body, headers=headers or {}, method="POST" if body else "GET")
    try:
        with opener.open(request, timeout=10) as response:
            headers = {k.lower(): v for k, v in response.headers.items()}
            return HTTPAnswer(response.status, headers, response.read().decode())
    except urllib.error.HTTPError as error:
        return HTTPAnswer(error.code, {k.lower(): v for k, v in error.headers.items()}, error.read().decode())


def table(output: str) -> list[dict[str, str]]:
    """`clearance requests list` as rows of {column: value} (columns separated by two or more spaces)."""
    import re

    lines = output.splitlines()
    header = re.split(r"\s{2,}", lines[0].strip())
    return [dict(zip(header, re.split(r"\s{2,}", line.strip()), strict=True)) for line in lines[1:]]


@pytest.fixture
def start_portal(start_icap_server: StartServer, cli: CLI, tmp_path: Path) -> Iterator[Any]:
    def start(**options: Any) -> Portal:
        port = free_port()
        text = portal_yaml(port, **options)
        config = tmp_path / f"portal-{port}.yaml"
        config.write_text(text, encoding="utf-8")

        def admin(*args: str, check: bool = True) -> Any:
            return cli("--config", str(config), "--actor", "it.admin", *args, check=check)

        directory = tmp_path / "directory.csv"
        directory.write_text(DIRECTORY, encoding="utf-8")
        admin("directory", "load", str(directory))
        admin("categories", "add", "webmail", "mail.google.com")
        server = start_icap_server(text)
        wait_for_port(port)
        return Portal(f"http://127.0.0.1:{port}", server.port, admin, config)

    yield start


def requests_in_redis(client: redis.Redis) -> dict[str, Any]:
    return {key: json.loads(value) for key, value in client.hgetall(PREFIX + "requests").items()}


def icap_passes(port: int, user: str) -> bool:
    (answer,) = exchange(port, reqmod("http://mail.google.com/", user=user, extra_headers=("X-Client-IP: 10.1.2.3",)))
    return answer.startswith(b"ICAP/1.0 204")


# ---- the whole path ------------------------------------------------------------------------------


def test_request_from_a_block_page_is_approved_by_the_head_and_passes_traffic(
    start_portal: Any, sync_redis: redis.Redis, redis_url: str
) -> None:
    portal: Portal = start_portal()  # two ICAP workers: the portal runs in a process of its own
    assert not icap_passes(portal.icap_port, "alice")

    answer = portal.submit(portal.token())
    assert answer.status == 303, answer.text
    path = answer.location
    assert path.startswith("/requests/Q1?key=")

    page = portal.get(path)
    assert page.status == 200
    assert "Waiting for a decision" in page.text and "等待決定" in page.text
    assert "mail.google.com" in page.text and WHY in page.text
    assert "<script" not in page.text
    assert "default-src 'none'" in page.headers["content-security-policy"]
    assert page.headers["referrer-policy"] == "no-referrer"
    assert portal.get(path.replace("key=", "key=x")).status == 404  # the key is the only way in
    assert portal.get("/requests/Q1").status == 404

    (row,) = table(portal.admin("requests", "list").stdout)
    assert row["ID"] == "Q1" and row["STATUS"] == "pending" and row["USER"] == "alice"
    assert row["CATEGORY"] == "webmail" and row["HOST"] == "mail.google.com" and row["DEPARTMENT"] == "Finance"
    (record,) = requests_in_redis(sync_redis).values()
    assert record["approvers"] == ["dfin", "hfin"] and record["client_ip"] == "10.1.2.3" and record["days"] == 30

    # A second submit (a new block page, the same user, category and host) shows the pending request.
    again = portal.submit(portal.token(), justification="Another reason for the very same access")
    assert again.status == 303 and again.location == path
    assert len(requests_in_redis(sync_redis)) == 1

    approved = portal.admin("requests", "approve", "Q1", "--by", "hfin", "--note", "for the Singapore project")
    assert approved.stdout.startswith("Q1 approved: A1 ")
    started = time.monotonic()
    wait_until_synced(portal.icap_port, redis_url, timeout=1.0)
    assert icap_passes(portal.icap_port, "alice")
    assert time.monotonic() - started < 1.0

    explained = portal.admin("explain", "http://mail.google.com/", "--user", "alice").stdout
    assert "decision:  pass" in explained and "A1 (user alice, category webmail)" in explained
    shown = portal.admin("approvals", "show", "A1").stdout
    assert "approver:       hfin" in shown and WHY in shown and "by it.admin" in shown and "ticket:         Q1" in shown

    page = portal.get(path)
    assert "Approved" in page.text and "已批准" in page.text and "for the Singapore project" in page.text
    (row,) = table(portal.admin("requests", "list", "--status", "approved").stdout)
    assert row["APPROVAL"] == "A1" and row["DECIDED BY"] == "hfin"
    assert table(portal.admin("requests", "list", "--status", "pending").stdout) == []

    audit = {entry["action"]: entry for entry in json.loads(portal.admin("audit", "--format", "json").stdout)}
    assert audit["request-submit"]["actor"] == "alice"
    assert audit["request-approve"]["actor"] == "it.admin" and audit["grant"]["target"] == "A1"
    assert audit["request-approve"]["after"]["status"] == "approved" and audit["grant"]["department"] == "Finance"
    assert "key" not in audit["request-approve"]["after"]  # the requester's key never leaves the record

    refused = portal.admin("requests", "approve", "Q1", "--by", "dfin", check=False)
    assert refused.returncode == 2 and "already approved" in refused.stderr


def test_a_denied_request_shows_the_note_and_grants_nothing(start_portal: Any, sync_redis: redis.Redis) -> None:
    portal: Portal = start_portal()
    path = portal.submit(portal.token()).location
    result = portal.admin("requests", "deny", "Q1", "--by", "dfin", "--note", "use the shared mailbox instead")
    assert result.stdout.strip() == "Q1 denied"
    page = portal.get(path)
    assert "Declined" in page.text and "不獲批准" in page.text and "use the shared mailbox instead" in page.text
    assert sync_redis.hlen(PREFIX + "approvals") == 0
    (row,) = table(portal.admin("requests", "list", "--status", "denied", "--department", "Finance").stdout)
    assert row["DECIDED BY"] == "dfin"
    # Decided, so no longer open: a new request for the same thing may be made.
    assert portal.submit(portal.token()).location.startswith("/requests/Q2?key=")


def test_the_block_page_form_carries_a_token_the_portal_accepts(start_portal: Any, sync_redis: redis.Redis) -> None:
    import html
    import re

    portal: Portal = start_portal()  # every ICAP worker signs with the portal's secret
    for _ in range(4):  # connections land on either worker
        (answer,) = exchange(
            portal.icap_port, reqmod("http://mail.google.com/", user="alice", extra_headers=("X-Client-IP: 10.1.2.3",))
        )
        page = answer.decode("utf-8", "replace")
        assert f'action="{portal.url}/request"' in page
        (field_tag,) = re.findall(r'<input[^>]*name="token"[^>]*>', page)
        token = html.unescape(re.findall(r'value="([^"]*)"', field_tag)[0])
        submitted = portal.submit(token)
        assert submitted.status == 303 and submitted.location.startswith("/requests/Q1?key=")
    (record,) = requests_in_redis(sync_redis).values()
    assert (record["user"], record["client_ip"], record["host"]) == ("alice", "10.1.2.3", "mail.google.com")


# ---- what the portal refuses ---------------------------------------------------------------------


def test_forged_altered_expired_and_foreign_tokens_are_refused_and_nothing_is_stored(
    start_portal: Any, sync_redis: redis.Redis
) -> None:
    portal: Portal = start_portal()
    forged = portal.submit(portal.token(secret="someone-elses-secret"))
    assert forged.status == 400 and "not valid" in forged.text and "無效" in forged.text

    payload, mac = portal.token().split(".")
    claim = json.loads(urllib.parse.unquote(_unb64(payload)))
    claim["user"] = "hfin"  # claim to be somebody else
    altered = portal.submit(f"{_b64(json.dumps(claim, separators=(',', ':'), sort_keys=True))}.{mac}")
    assert altered.status == 400 and "not valid" in altered.text

    expired = portal.submit(portal.token(ttl=-5))
    assert expired.status == 400 and "expired" in expired.text and "過期" in expired.text

    elsewhere = portal.submit(portal.token(), client="10.9.9.9")
    assert elsewhere.status == 403
    assert "belongs to another computer" in elsewhere.text and "另一部電腦" in elsewhere.text

    assert portal.submit("not-a-token").status == 400
    assert portal.submit(portal.token(category="news")).status == 400  # not a restricted category
    short = portal.submit(portal.token(), justification="need it")
    assert short.status == 400 and "<form" in short.text  # the form again, with what to fix
    too_long = portal.submit(portal.token(), days="181")
    assert too_long.status == 400 and "at most 180 days" in too_long.text
    assert portal.submit(portal.token(user="stranger")).status == 409  # nobody in the directory approves for them

    assert sync_redis.hlen(PREFIX + "requests") == 0
    assert table(portal.admin("requests", "list").stdout) == []


def _b64(text: str) -> str:
    import base64

    return base64.urlsafe_b64encode(text.encode()).rstrip(b"=").decode()


def _unb64(text: str) -> str:
    import base64

    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)).decode()


def test_only_another_head_or_delegate_of_the_department_may_decide(start_portal: Any) -> None:
    portal: Portal = start_portal()
    assert portal.submit(portal.token(user="hfin")).status == 303  # a head asks for himself: Q1
    own = portal.admin("requests", "approve", "Q1", "--by", "hfin", check=False)
    assert own.returncode == 2 and "may not decide it" in own.stderr
    outsider = portal.admin("requests", "approve", "Q1", "--by", "hit", check=False)
    assert outsider.returncode == 2 and "may not approve for Finance" in outsider.stderr
    colleague = portal.admin("requests", "deny", "Q1", "--by", "carol", check=False)
    assert colleague.returncode == 2 and "may not decide access requests for Finance" in colleague.stderr
    too_long = portal.admin("requests", "approve", "Q1", "--by", "dfin", "--days", "365", check=False)
    assert too_long.returncode == 2 and "exceeds the maximum" in too_long.stderr
    assert portal.admin("requests", "list", "--status", "pending").stdout.count("Q1") == 1
    assert portal.admin("requests", "approve", "Q1", "--by", "dfin", "--days", "7").returncode == 0
    assert "A1" in portal.admin("approvals", "list", "--user", "hfin").stdout
    unknown = portal.admin("requests", "approve", "Q99", "--by", "dfin", check=False)
    assert unknown.returncode == 2 and "no access request" in unknown.stderr


# ---- one worker, the secret in Redis, trusted proxies ------------------------------------------


def test_one_worker_runs_the_portal_on_its_loop_with_a_secret_kept_in_redis(
    start_portal: Any, sync_redis: redis.Redis
) -> None:
    portal: Portal = start_portal(workers=1, secret=None, extra="  trusted_proxies: []\n")
    secret = sync_redis.get(PREFIX + "portal:secret")
    assert secret and len(secret) >= 32
    assert portal.submit(portal.token(secret=SECRET)).status == 400  # not the configured one any more
    # 127.0.0.1 is not a trusted proxy here: X-Forwarded-For is ignored and the peer itself must match.
    spoofed = portal.submit(portal.token(secret=secret, client_ip="10.1.2.3"), client="10.1.2.3")
    assert spoofed.status == 403
    answer = portal.submit(portal.token(secret=secret, client_ip="127.0.0.1"), client=None)
    assert answer.status == 303
    assert "Waiting for a decision" in portal.get(answer.location).text
    assert portal.get("/").status == 200 and portal.get("/portal.css").headers["content-type"].startswith("text/css")
    form = portal.get("/request?token=" + urllib.parse.quote(portal.token(secret=secret, client_ip=None)))
    assert form.status == 200 and 'name="justification"' in form.text and "<script" not in form.text


# ---- e-mail --------------------------------------------------------------------------------------


def test_the_department_heads_and_delegates_get_an_email_with_the_details(start_portal: Any) -> None:
    inbox = Inbox()
    with smtp_sink(inbox) as smtp:
        portal: Portal = start_portal(sections=smtp)
        assert portal.submit(portal.token(), days="45").status == 303
        deadline = time.monotonic() + 10
        while not inbox.messages and time.monotonic() < deadline:
            time.sleep(0.05)
        ((recipients, message),) = inbox.messages
    assert sorted(recipients) == ["dfin@example.gov", "hfin@example.gov"]  # not the requester
    assert message["From"] == "clearance@example.gov"
    assert "Q1" in message["Subject"] and "alice" in message["Subject"]
    payload = message.get_payload(decode=True)
    assert isinstance(payload, bytes)
    body = payload.decode("utf-8")
    for detail in ("Q1", "alice", "Finance", "webmail", "mail.google.com", WHY, "45", "10.1.2.3"):
        assert detail in body, detail
    assert "clearance requests approve Q1 --by" in body
