"""The block page, the request form, the portal and the report speak of services (issue 10, acceptance 5).

Through a real `clearance serve` with the shipped catalogue and its portal, a real Redis and the real CLI: a
blocked WhatsApp host answers a page naming WhatsApp in both languages, its form's token claims the service,
the portal records a request for it, approving that request grants `service whatsapp` (so WhatsApp's media
hosts pass too, and nothing of WeChat), and the report and the audit count the approval under WhatsApp. A
token from before services (no service in it) still makes a request, which an approval grants as the category.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import hmac
import html
import io
import json
import re
import secrets
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from policy.tokens import RequestClaim, TokenError, sign, verify
from tests.conftest import CLI, StartServer
from tests.support.icap_client import exchange, wait_until_synced
from tests.support.icap_grammar import parse_one
from tests.support.net import free_port, wait_for_port
from tests.test_portal import DIRECTORY, PREFIX, SECRET, Portal, fetch, requests_in_redis, table

CLIENT = "10.1.2.3"


def services_yaml(portal_port: int) -> str:
    """The shipped lists and catalogue on, a portal, the department-head rule."""
    return (
        "server:\n  workers: 1\n"
        "policy:\n  load_default_lists: true\n"
        "approvals:\n  require_department_head: true\n  min_justification_chars: 20\n  max_validity_days: 180\n"
        f"portal:\n  listen: 127.0.0.1:{portal_port}\n  token_ttl_minutes: 30\n  secret: {SECRET}\n"
        "logging:\n  format: json\n"
    )


@pytest.fixture
def serve(start_icap_server: StartServer, cli: CLI, tmp_path: Path) -> Iterator[Portal]:
    port = free_port()
    text = services_yaml(port)
    config = tmp_path / "services.yaml"
    config.write_text(text, encoding="utf-8")

    def admin(*args: str, check: bool = True) -> Any:
        return cli("--config", str(config), "--actor", "it.admin", *args, check=check)

    directory = tmp_path / "directory.csv"
    directory.write_text(DIRECTORY, encoding="utf-8")
    server = start_icap_server(text)
    wait_for_port(port)
    admin("directory", "load", str(directory))
    yield Portal(f"http://127.0.0.1:{port}", server.port, admin, config)


def blocked(port: int, url: str, user: str | None, *http_headers: str) -> tuple[int, str, bytes]:
    """One REQMOD as Squid sends it, with the browser's own headers: (ICAP status, HTTP head, body)."""
    host = url.split("://", 1)[1].split("/", 1)[0]
    http = "\r\n".join([f"GET {url} HTTP/1.1", f"Host: {host}", *http_headers]).encode() + b"\r\n\r\n"
    icap = ["REQMOD icap://127.0.0.1/reqmod ICAP/1.0", "Host: 127.0.0.1", "Allow: 204", f"X-Client-IP: {CLIENT}"]
    if user:
        icap.append(f"X-Client-Username: {user}")
    icap.append(f"Encapsulated: req-hdr=0, null-body={len(http)}")
    (raw,) = exchange(port, ("\r\n".join(icap) + "\r\n\r\n").encode() + http)
    response = parse_one(raw)
    head = raw.split(b"\r\n\r\n", 2)[1].decode("latin-1") if response.status == 200 else ""
    return response.status, head, response.body or b""


def passes(port: int, url: str, user: str) -> bool:
    status, _, _ = blocked(port, url, user)
    return status == 204


def form_token(page: str) -> str:
    (field_tag,) = re.findall(r'<input[^>]*name="token"[^>]*>', page)
    return html.unescape(re.findall(r'value="([^"]*)"', field_tag)[0])


def test_the_block_page_names_the_service_in_both_languages_and_its_form_claims_it(
    serve: Portal, redis_url: str
) -> None:
    port = serve.icap_port
    status, head, body = blocked(port, "https://web.whatsapp.com/", "alice", "Accept-Language: en-GB")
    page = body.decode()
    assert status == 200 and "403 Forbidden" in head
    assert "You have no approval to use WhatsApp (web instant messaging)." in page
    assert re.search(r"<dt>Service .*?</dt>\s*<dd>WhatsApp</dd>", page)  # its own row, beside the category
    assert "Web instant messaging</dd>" in page
    assert "你未獲批准使用「WhatsApp」（網頁版即時通訊）" in page  # the other language's line names it too
    claim = verify(form_token(page), SECRET)
    assert (claim.user, claim.client_ip, claim.category, claim.host) == ("alice", CLIENT, "web-im", "web.whatsapp.com")
    assert (claim.service, claim.service_en, claim.service_zh) == ("whatsapp", "WhatsApp", "WhatsApp")

    _, head, body = blocked(port, "https://web.whatsapp.com/", "alice", "Accept-Language: zh-HK,zh;q=0.9")
    chinese = body.decode()
    assert "Content-Language: zh-HK" in head and "<h1>此網站已被封鎖</h1>" in chinese
    assert '<p class="message">你未獲批准使用「WhatsApp」（網頁版即時通訊）' in chinese

    # The Chinese page uses the Chinese name (WeChat is 微信), the English page the English one.
    _, _, body = blocked(port, "https://wx.qq.com/", "alice", "Accept-Language: zh-HK")
    wechat = body.decode()
    assert "你未獲批准使用「微信」" in wechat and re.search(r"<dd>微信 <span[^>]*>WeChat</span></dd>", wechat)
    assert "You have no approval to use WeChat (web instant messaging)." in wechat

    _, head, body = blocked(port, "https://mmg.whatsapp.net/d/f/x.enc", "alice", "Accept: application/json")
    document = json.loads(body)
    assert "application/json" in head and document["category"] == "web-im"
    assert document["service"] == {"id": "whatsapp", "name_en": "WhatsApp", "name_zh": "WhatsApp"}
    assert document["message"]["en"].startswith("You have no approval to use WhatsApp (web instant messaging).")
    assert "「WhatsApp」" in document["message"]["zh-HK"]
    assert verify(document["request_url"].split("token=", 1)[1].replace("%3D", "="), SECRET).service == "whatsapp"

    _, head, body = blocked(port, "https://web.whatsapp.com/", None, "Accept: text/plain")
    text = body.decode()
    assert "text/plain" in head and "Service: WhatsApp\n" in text and "Category: Web instant messaging\n" in text

    # A host of no service names none: a category the admin lists by hand.
    serve.admin("categories", "add", "webmail", "mail.example.net")
    wait_until_synced(port, redis_url)
    _, _, body = blocked(port, "http://mail.example.net/", "alice", "Accept: application/json")
    other = json.loads(body)
    assert other["category"] == "webmail" and other["service"] is None
    assert other["message"]["en"].startswith("You have no approval to use personal webmail.")


def test_a_request_for_the_service_is_approved_as_the_service_and_reported_under_it(
    serve: Portal, sync_redis: redis.Redis, redis_url: str
) -> None:
    port = serve.icap_port
    _, _, body = blocked(port, "https://web.whatsapp.com/", "alice")
    answer = serve.submit(form_token(body.decode()), client=CLIENT)
    assert answer.status == 303, answer.text
    status_page = serve.get(answer.location)
    assert status_page.status == 200 and "<dd>WhatsApp · <span" in status_page.text
    assert "Web instant messaging · <span" in status_page.text
    (record,) = requests_in_redis(sync_redis).values()
    assert (record["service"], record["service_en"], record["category"]) == ("whatsapp", "WhatsApp", "web-im")
    open_keys = sync_redis.hkeys(PREFIX + "request:open")
    assert open_keys == ["alice\tweb-im\tweb.whatsapp.com\twhatsapp"]
    (row,) = table(serve.admin("requests", "list").stdout)
    assert row["SERVICE"] == "whatsapp" and row["CATEGORY"] == "web-im"

    # The form page for the token shows the service as well.
    _, _, body = blocked(port, "https://web.whatsapp.com/", "alice")
    query = urllib.parse.urlencode({"token": form_token(body.decode())})
    form = fetch(f"{serve.url}/request?{query}", None, {"X-Forwarded-For": CLIENT})
    assert form.status == 200 and "<dd>WhatsApp · <span" in form.text

    for url in ("https://web.whatsapp.com/", "https://mmg.whatsapp.net/x", "https://wx.qq.com/"):
        assert not passes(port, url, "alice")
    approved = serve.admin("requests", "approve", "Q1", "--by", "hfin")
    assert approved.stdout.startswith("Q1 approved: A1 (user alice, service whatsapp"), approved.stdout
    wait_until_synced(port, redis_url)
    assert passes(port, "https://web.whatsapp.com/", "alice")
    assert passes(port, "https://mmg.whatsapp.net/d/f/x.enc", "alice")  # a media host: the service, not the host
    assert passes(port, "https://g.whatsapp.net/", "alice")
    assert not passes(port, "https://wx.qq.com/", "alice")  # nothing of WeChat
    assert not passes(port, "https://mail.google.com/", "alice")  # nor of Gmail
    assert not passes(port, "https://mmg.whatsapp.net/x", "carol")  # nor for anyone else
    (approval,) = (json.loads(value) for value in sync_redis.hgetall(PREFIX + "approvals").values())
    assert approval["service"] == "whatsapp" and approval["category"] is None and approval["ticket"] == "Q1"

    # A token from before services names none: its request, and the approval, are for the category.
    old = old_token({"user": "carol", "client_ip": CLIENT, "category": "web-im", "host": "web.whatsapp.com"})
    assert serve.submit(old, client=CLIENT).status == 303
    record = requests_in_redis(sync_redis)["Q2"]
    assert record["service"] == "" and record["category"] == "web-im"
    assert (
        "Q2 approved: A2 (user carol, category web-im" in serve.admin("requests", "approve", "Q2", "--by", "hit").stdout
    )

    report = serve.admin("report", "--format", "json").stdout
    departments = {item["department"]: item for item in json.loads(report)["departments"]}
    (whatsapp,) = departments["Finance"]["active_by_service"]
    assert whatsapp == {
        "service": "whatsapp", "service_name_en": "WhatsApp", "service_name_zh": "WhatsApp",
        "service_category": "web-im", "count": 1, "ids": ["A1"],
    }  # fmt: skip
    (category,) = departments["IT"]["active_by_service"]
    assert category["service"] is None and category["service_category"] == "web-im" and category["ids"] == ["A2"]
    assert [(row["person"], row["approval"]) for row in departments["Finance"]["rows"]] == [("alice", "A1")]

    rows = list(csv.DictReader(io.StringIO(serve.admin("report", "--format", "csv").stdout)))
    by_id = {row["approval"]: row for row in rows if row["section"] == "access"}
    assert (by_id["A1"]["scope_kind"], by_id["A1"]["scope"]) == ("service", "whatsapp")
    assert by_id["A1"]["service_name_en"] == "WhatsApp"
    assert by_id["A1"]["service_category"] == "web-im" and by_id["A2"]["service"] == ""

    text = serve.admin("report").stdout
    assert "Active approvals by service:" in text
    assert re.search(r"^whatsapp\s+WhatsApp\s+WhatsApp\s+web-im\s+1\s+A1$", text, re.MULTILINE), text
    assert re.search(r"^category web-im\s+-\s+-\s+web-im\s+1\s+A2$", text, re.MULTILINE), text

    serve.admin("approvals", "revoke", "A1", "--by", "hfin", "--reason", "project over")
    tallies = json.loads(serve.admin("audit", "--by-service", "--format", "json").stdout)
    assert tallies == [
        {"scope": "service whatsapp", "grants": 1, "revokes": 1},
        {"scope": "category web-im", "grants": 1, "revokes": 0},
    ]
    table_text = serve.admin("audit", "--by-service").stdout
    assert re.search(r"^service whatsapp\s+1\s+1$", table_text, re.MULTILINE), table_text
    grant = next(e for e in json.loads(serve.admin("audit", "--format", "json").stdout) if e["target"] == "A1")
    assert grant["change"].startswith("granted user alice service whatsapp until ")


def old_token(fields: dict[str, Any]) -> str:
    """A token as a version before services signed it: the same payload, with no service in it."""
    payload = json.dumps({"expires_at": int(time.time()) + 600, "nonce": secrets.token_urlsafe(8), **fields}).encode()
    mac = hmac.new(SECRET.encode(), payload, hashlib.sha256).digest()
    return ".".join(base64.urlsafe_b64encode(part).rstrip(b"=").decode() for part in (payload, mac))


def test_old_tokens_stay_readable_and_a_field_this_version_does_not_know_is_refused() -> None:
    fields = {"user": "alice", "client_ip": None, "category": "web-im", "host": "web.whatsapp.com"}
    claim = verify(old_token(fields), SECRET)
    assert (claim.user, claim.category, claim.service, claim.service_en) == ("alice", "web-im", "", "")
    with pytest.raises(TokenError, match="malformed token payload"):
        verify(old_token({**fields, "colour": "red"}), SECRET)
    signed = sign(RequestClaim("alice", None, "web-im", "web.whatsapp.com", int(time.time()) + 60, service="x"), SECRET)
    assert verify(signed, SECRET).service == "x"


def test_the_report_counts_host_approvals_under_their_service_and_the_mail_names_the_service() -> None:
    from zoneinfo import ZoneInfo

    from icap_server.portal.mail import request_message
    from policy.report import active_by_service, build_report
    from policy.services import shipped_catalogue
    from policy.state import ServiceCatalogue
    from tests.test_catalog import request
    from tests.test_report import NOW, make

    approvals = [
        make(1, category=None, service="whatsapp"),
        make(2, category=None, host="web.whatsapp.com"),  # a host of WhatsApp: counted under WhatsApp
        make(3, category=None, host="example.org"),  # a host of no service
        make(4),  # the whole of webmail
    ]
    (department,) = build_report(approvals, {}, NOW, NOW).departments
    catalogue = ServiceCatalogue(shipped_catalogue())
    counted = {item.key.label: (item.key.name_zh, item.ids) for item in active_by_service(department, catalogue)}
    assert counted == {
        "service whatsapp": ("WhatsApp", ("A1", "A2")),
        "category webmail": ("", ("A4",)),
        "host example.org": ("", ("A3",)),
    }
    assert next(item.key.label for item in active_by_service(department, catalogue)) == "service whatsapp"

    asked = request(host="wx.qq.com", category="web-im", service="wechat", service_en="WeChat", service_zh="微信")
    asked = type(asked).from_json(asked.to_json())  # stored and read back with its service
    message = request_message(asked, "clearance@example.gov", ["hfin@example.gov"], ZoneInfo("Asia/Hong_Kong"))
    assert message["Subject"] == "Access request Q7: alice – WeChat (wx.qq.com)"
    body = message.get_content()
    assert "Service / 服務:         WeChat / 微信 (wechat)\n" in body
    assert "Category / 類別:        Web instant messaging (web-im)\n" in body
    assert asked.scope() == "service wechat" and request().scope() == "category webmail"
