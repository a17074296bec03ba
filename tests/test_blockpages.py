"""Block pages: rendered on their own, and as Clearance sends them inside an ICAP answer."""

from __future__ import annotations

import base64
import hashlib
import html
import json
import re
import subprocess
import sys
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import unquote

import pytest
from babel.messages.extract import DEFAULT_KEYWORDS, extract_from_dir

from blockpages.negotiate import choose_format, choose_language
from blockpages.render import (
    LOGO_MAX_BYTES,
    BlockFacts,
    BlockPageError,
    Renderer,
    RequestForm,
    load_translations,
)
from icap_server.config import BlockPagesConfig, Config, ConfigError, OrganisationConfig, load_config
from icap_server.protocol import ICAPConnection, ICAPRequest
from icap_server.service.application import Application, FixedPolicy, PortalLink, Verdict
from icap_server.service.sync import PolicyUnavailable
from policy.decision import Action, Decision, Reason
from policy.identity import Identity
from policy.state import PolicyState
from policy.tokens import verify
from tests.conftest import PROJECT_ROOT, clearance_env

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


@pytest.fixture(scope="module")
def renderer() -> Renderer:
    return Renderer(branded(contact_email="helpdesk@example.gov", policy_url="https://intranet.example/policy"))


# ---- what the page says ------------------------------------------------------------------------------------


def test_page_shows_the_facts(renderer: Renderer) -> None:
    page = renderer.render(facts(time=datetime(2026, 11, 28, 1, 30, tzinfo=UTC).astimezone(renderer.zone)),
                           "html", "en", None)
    text = text_of(page.body)
    for fact in ("Innovation Bureau", "創新局", "mail.google.com", "/mail/u/0/", "alice", "abc123def456",
                 "Personal webmail", "2026-11-28 09:30:00 HKT", "IT helpdesk x1234", "helpdesk@example.gov"):
        assert fact in text, fact
    assert 'href="https://intranet.example/policy"' in page.body.decode()
    assert 'href="mailto:helpdesk@example.gov"' in page.body.decode()
    assert "<dd>mail.google.com</dd>" in page.body.decode()  # what the Squid and c-icap tests look for
    assert "<dd>alice</dd>" in page.body.decode() and "<dd>abc123def456</dd>" in page.body.decode()


@pytest.mark.parametrize("reason", sorted(PHRASES))
def test_each_reason_has_its_own_message_in_both_languages(renderer: Renderer, reason: str) -> None:
    category = None if reason == "policy-unavailable" else "webmail"
    for language in ("en", "zh-HK"):
        text = text_of(renderer.render(facts(reason=reason, category=category), "html", language, None).body)
        assert "Access to this site is blocked" in text and "此網站已被封鎖" in text  # both headings, always
        english, chinese = PHRASES[reason]
        assert english in text and chinese in text  # the page's language, and the other one's line
        for other, (other_en, other_zh) in PHRASES.items():
            if other != reason:
                assert other_en not in text and other_zh not in text, (reason, other)


def test_the_chosen_language_leads(renderer: Renderer) -> None:
    english = renderer.render(facts(), "html", "en", None).body.decode()
    chinese = renderer.render(facts(), "html", "zh-HK", None).body.decode()
    assert '<html lang="en">' in english and "<h1>Access to this site is blocked</h1>" in english
    assert '<p class="other" lang="zh-HK"><strong>此網站已被封鎖</strong>' in english
    assert '<html lang="zh-HK">' in chinese and "<h1>此網站已被封鎖</h1>" in chinese
    assert '<p class="other" lang="en"><strong>Access to this site is blocked</strong>' in chinese
    assert "你可以怎樣做" in chinese and "What you can do" not in chinese
    assert "創新局 · " in chinese  # the organisation's Chinese name first


def test_long_paths_and_hosts_are_shortened_on_the_page_but_not_in_json(renderer: Renderer) -> None:
    path = "/files/" + "x" * 200
    host = "a" * 60 + ".very-long-subdomain-name.example.com"
    page = renderer.render(facts(path=path, host=host), "html", "en", None).body.decode()
    shown = re.search(r'title="(/files/x+)">(/files/x+…)</dd>', page)
    assert shown is not None and shown.group(1) == path and len(shown.group(2)) == 80
    assert f'title="{host}">{host[:79]}…</dd>' in page
    document = json.loads(renderer.render(facts(path=path, host=host), "json", "en", None).body)
    assert document["path"] == path and document["host"] == host


def test_every_message_has_a_chinese_translation() -> None:
    """The catalog covers every message the templates and render.py use (run `make messages` when not)."""
    keywords = {**DEFAULT_KEYWORDS, "N_": None, "alt": None}
    method_map = [("**.py", "python"), ("templates/**.html", "jinja2"), ("templates/**.txt", "jinja2")]
    options = {"templates/**": {"extensions": "jinja2.ext.i18n"}}
    found = {
        message
        for _, _, message, _, _ in extract_from_dir(
            str(PROJECT_ROOT / "blockpages"), method_map, options, keywords=keywords
        )
    }
    assert len(found) > 30
    chinese = load_translations()["zh-HK"]
    untranslated = [message for message in found if isinstance(message, str) and chinese.gettext(message) == message]
    assert untranslated == []


# ---- negotiation ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "default", "expected"),
    [
        (None, "en", "en"),
        (None, "zh-HK", "zh-HK"),
        ("zh-HK", "en", "zh-HK"),
        ("zh-TW,zh;q=0.9", "en", "zh-HK"),
        ("zh-Hant-HK", "en", "zh-HK"),
        ("zh", "en", "zh-HK"),
        ("en-GB,en;q=0.9", "zh-HK", "en"),
        ("fr-FR,fr;q=0.9", "zh-HK", "zh-HK"),  # neither: the default
        ("fr;q=1, zh-HK;q=0.5, en;q=0.8", "zh-HK", "en"),  # q-values count
        ("en;q=0.4, zh-HK;q=0.9", "en", "zh-HK"),
        ("zh-HK, en", "en", "zh-HK"),  # equal q: the header's order
        ("en, zh-HK", "zh-HK", "en"),
        ("*", "zh-HK", "zh-HK"),
        ("en;q=0, fr", "en", "zh-HK"),  # English refused
        ("en;q=bogus, zh", "en", "zh-HK"),
    ],
)
def test_language_from_accept_language(header: str | None, default: str, expected: str) -> None:
    assert choose_language(header, default) == expected  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, "html"),
        ("", "html"),
        ("*/*", "html"),  # curl
        ("text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8", "html"),
        ("application/json", "json"),
        ("application/json, text/plain, */*", "json"),  # axios
        ("text/html;q=0.5, application/json", "json"),
        ("application/json;q=0.5, text/html", "html"),
        ("text/plain", "text"),
        ("image/png", "text"),
        ("text/*", "html"),
        ("text/html;q=0, */*", "json"),
    ],
)
def test_format_from_accept(header: str | None, expected: str) -> None:
    assert choose_format(header) == expected


# ---- through the Application, as Squid gets it -------------------------------------------------------------


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


def test_icap_answer_is_a_403_with_exact_length_no_store_and_a_strict_policy() -> None:
    app = application()
    verdict = Verdict(
        0, Identity("alice", "10.0.0.1"), "mail.google.com",
        Decision(Action.BLOCK, Reason.NO_APPROVAL, "webmail", "mail.google.com"), 7, "0123456789ab",
    )
    result = answer(app, icap_request("http://mail.google.com/"), verdict)
    assert result.icap_head.startswith(b"ICAP/1.0 200 OK") and b'ISTag: "CL-7"' in result.icap_head
    assert result.http_head.startswith(b"HTTP/1.1 403 Forbidden\r\n") and result.http_head.endswith(b"\r\n\r\n")
    assert result.header("Content-Type") == "text/html; charset=utf-8"
    assert result.header("Content-Length") == str(len(result.body))
    assert result.header("Cache-Control") == "no-store"
    assert result.header("X-Content-Type-Options") == "nosniff"
    assert result.header("Referrer-Policy") == "no-referrer"
    assert result.header("X-Clearance-Reference") == "0123456789ab"
    assert result.header("Content-Language") == "en"
    policy = result.header("Content-Security-Policy") or ""
    assert policy.startswith("default-src 'none'; img-src data:; style-src 'sha256-")
    assert "form-action 'none'" in policy and "base-uri 'none'" in policy and "frame-ancestors 'none'" in policy
    # The hash is the page's own <style>: the browser applies it and nothing else.
    (style,) = re.findall(r"<style>(.*?)</style>", result.text, re.DOTALL)
    digest = base64.b64encode(hashlib.sha256(style.encode()).digest()).decode()
    assert f"'sha256-{digest}'" in policy
    assert "<script" not in result.text and " style=" not in result.text
    assert "0123456789ab" in result.text and "此網站已被封鎖" in result.text


def test_accept_language_picks_the_page_language() -> None:
    app = application(load_config_text("blockpages:\n  default_language: zh-HK\n"))
    chinese = answer(app, icap_request("http://mail.google.com/", "alice", "Accept-Language: zh-TW,zh;q=0.9,en;q=0.5"))
    assert chinese.header("Content-Language") == "zh-HK" and "<h1>此網站已被封鎖</h1>" in chinese.text
    english = answer(app, icap_request("http://mail.google.com/", "alice", "Accept-Language: en-GB,en;q=0.9"))
    assert english.header("Content-Language") == "en" and "<h1>Access to this site is blocked</h1>" in english.text
    default = answer(app, icap_request("http://mail.google.com/", "alice", "Accept-Language: fr"))
    assert default.header("Content-Language") == "zh-HK"  # neither named: blockpages.default_language
    assert answer(application(), icap_request("http://mail.google.com/")).header("Content-Language") == "en"


def test_json_for_clients_that_ask_for_it() -> None:
    app = application(portal=True)
    request = icap_request("http://mail.google.com/mail/u/0/?tab=inbox", "alice", "Accept: application/json")
    verdict = app.evaluate(request, NOW)
    result = answer(app, request, verdict)
    assert result.header("Content-Type") == "application/json; charset=utf-8"
    assert result.header("Content-Length") == str(len(result.body))
    assert result.header("Cache-Control") == "no-store"
    document = json.loads(result.body)
    assert document["blocked"] is True
    assert (document["host"], document["path"], document["category"]) == ("mail.google.com", "/mail/u/0/", "webmail")
    assert (document["user"], document["reason"], document["reference"]) == ("alice", "no-approval", verdict.reference)
    assert document["message"]["en"].startswith(PHRASES["no-approval"][0])
    assert document["message"]["zh-HK"].startswith(PHRASES["no-approval"][1])
    assert document["time"] == "2026-11-28T17:30:00+08:00"
    assert document["request_url"].startswith("https://portal.example.gov:8443/request?token=")
    token = unquote(document["request_url"].split("token=", 1)[1])
    assert verify(token, "s3cret", NOW).user == "alice"


def test_plain_text_for_other_clients() -> None:
    app = application()
    request = icap_request("http://mail.google.com/x", f"bob{HOSTILE}", "Accept: text/plain", "Accept-Language: zh-HK")
    result = answer(app, request)
    assert result.header("Content-Type") == "text/plain; charset=utf-8"
    assert result.header("Content-Length") == str(len(result.body))
    text = result.text
    assert text.startswith("此網站已被封鎖 · Access to this site is blocked\n")
    assert PHRASES["no-approval"][1] in text and PHRASES["no-approval"][0] in text
    assert "網站: mail.google.com" in text and "網址路徑: /x" in text
    assert f"bob{HOSTILE}".lower() in text  # text/plain with nosniff: shown as is, never parsed as HTML
    assert result.header("X-Content-Type-Options") == "nosniff"
    assert result.header("X-Clearance-Reference") in text
    assert "<" not in answer(app, icap_request("http://mail.google.com/", "a", "Accept: image/png")).text.split("\n")[0]


def test_reference_is_the_logged_one() -> None:
    app = application()
    verdict = app.evaluate(icap_request("http://mail.google.com/"), NOW)
    assert verdict.log_fields()["reference"] == verdict.reference
    result = answer(app, icap_request("http://mail.google.com/"), verdict)
    assert result.header("X-Clearance-Reference") == verdict.reference
    assert f"<dd>{verdict.reference}</dd>" in result.text


def test_forbidden_category_gets_the_not_permitted_page_without_a_form() -> None:
    app = application(load_config_text("policy:\n  forbidden_categories: [social]\n"), portal=True)
    request = icap_request("http://social.example/feed")
    verdict = app.evaluate(request, NOW)
    assert verdict.decision is not None and verdict.decision.reason is Reason.NOT_PERMITTED
    result = answer(app, request, verdict)
    assert "is not permitted on this network at all" in result.text and "<form" not in result.text
    assert "<dd>Social</dd>" in result.text  # a category without a label is shown by name


class Unloaded:
    @property
    def state(self) -> PolicyState:
        raise PolicyUnavailable("policy not loaded yet")

    @property
    def version(self) -> int:
        return 0


def test_no_policy_yet_blocks_everything_with_a_page_saying_so() -> None:
    app = Application(Config(), Unloaded())
    app.portal = PortalLink("https://portal.example.gov", "s3cret", 1800, 90)
    request = icap_request("http://example.org/")
    verdict = app.evaluate(request, NOW)
    assert verdict.blocked and verdict.decision is not None
    assert verdict.decision.reason is Reason.POLICY_UNAVAILABLE and verdict.reference
    assert verdict.log_fields()["reason"] == "policy-unavailable"
    result = answer(app, request, verdict)
    assert result.http_head.startswith(b"HTTP/1.1 403 Forbidden")
    assert PHRASES["policy-unavailable"][0] in result.text and PHRASES["policy-unavailable"][1] in result.text
    assert "<dd>example.org</dd>" in result.text and "<form" not in result.text


# ---- the request form ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("reason", ["no-approval", "approval-expired", "approval-revoked", "approval-suspended"])
def test_request_form_carries_a_token_the_portal_accepts(reason: str) -> None:
    app = application(portal=True)
    request = icap_request("http://mail.google.com/", "Alice", client_ip="10.1.2.3")
    verdict = replace(
        app.evaluate(request, NOW),
        decision=Decision(Action.BLOCK, Reason(reason), "webmail", "mail.google.com"),
    )
    result = answer(app, request, verdict)
    page = result.text
    assert '<form method="post" action="https://portal.example.gov:8443/request">' in page
    token = re.search(r'<input type="hidden" name="token" value="([^"]+)">', page).group(1)  # type: ignore[union-attr]
    claim = verify(html.unescape(token), "s3cret", NOW)
    assert (claim.user, claim.client_ip, claim.category, claim.host) == ("alice", "10.1.2.3", "webmail",
                                                                         "mail.google.com")
    assert claim.expires_at == int(NOW.timestamp()) + 1800
    assert re.search(r'<textarea id="justification" name="justification" rows="4" required', page)
    assert '<input id="days" name="days" type="number" min="1" max="90" value="30" required>' in page
    assert '<button type="submit">' in page
    assert "Why do you need this service for your work?" in page and "你的工作為何需要使用此服務？" in page
    assert "form-action https://portal.example.gov:8443;" in (result.header("Content-Security-Policy") or "")


def test_no_form_without_a_portal_a_user_or_a_reason_a_request_can_fix() -> None:
    request = icap_request("http://mail.google.com/")
    assert "<form" not in answer(application(), request).text  # no portal configured
    assert "<form" not in answer(application(portal=True), icap_request("http://mail.google.com/", None)).text
    app = application(portal=True)
    for reason, category in (("not-permitted", "webmail"), ("policy-unavailable", None)):
        verdict = replace(app.evaluate(request, NOW), decision=Decision(Action.BLOCK, Reason(reason), category))
        assert "<form" not in answer(app, request, verdict).text, reason
    assert "<form" in answer(app, request).text


# ---- branding and safety -------------------------------------------------------------------------------------


PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
)


def test_logo_is_inlined_and_colours_are_used(tmp_path: Path) -> None:
    (tmp_path / "logo.png").write_bytes(PNG)
    config = load_config_text(
        "blockpages:\n  logo: logo.png\n  primary_colour: '#003366'\n  accent_colour: '#aa5500'\n"
        "  contact_phone: '+852 2345 6789'\n  contact_url: https://intranet.example/helpdesk\n",
        tmp_path,
    )
    assert config.blockpages.logo == str(tmp_path / "logo.png")  # relative to the config file
    page = Renderer(config).render(facts(), "html", "en", None).body.decode()
    assert f'src="data:image/png;base64,{base64.b64encode(PNG).decode()}"' in page
    assert "--primary: #003366; --accent: #aa5500;" in page
    assert 'href="tel:+85223456789"' in page and 'href="https://intranet.example/helpdesk"' in page
    assert "http://" not in page.replace('href="https://intranet.example/helpdesk"', "")  # nothing external


def test_svg_logo_and_bad_logos(tmp_path: Path) -> None:
    svg = tmp_path / "logo.svg"
    svg.write_text('<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"/>', encoding="utf-8")
    assert Renderer(branded(logo=str(svg))).logo.startswith("data:image/svg+xml;base64,")  # type: ignore[union-attr]
    (tmp_path / "big.png").write_bytes(PNG + b"\0" * LOGO_MAX_BYTES)
    (tmp_path / "logo.gif").write_bytes(b"GIF89a....")
    bad = (("big.png", "at most"), ("logo.gif", "not a PNG, JPEG or SVG"), ("missing.png", "cannot read"))
    for name, message in bad:
        with pytest.raises(BlockPageError, match=f"blockpages.logo: .*{name}.*{message}"):
            Renderer(branded(logo=str(tmp_path / name)))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("blockpages:\n  primary_colour: red\n", "blockpages.primary_colour: expected a colour as #rrggbb"),
        ("blockpages:\n  accent_colour: '#12345'\n", "blockpages.accent_colour: expected a colour"),
        ("blockpages:\n  accent_colour: '#123456; x: y'\n", "blockpages.accent_colour: expected a colour"),
        ("blockpages:\n  policy_url: javascript:alert(1)\n", "blockpages.policy_url: expected an http"),
        ("blockpages:\n  contact_url: 'https://x/\"onmouseover=\"'\n", "blockpages.contact_url: expected an http"),
        ("blockpages:\n  contact_email: not-an-address\n", "blockpages.contact_email: expected an e-mail"),
        ("blockpages:\n  contact_phone: call us\n", "blockpages.contact_phone: expected a phone number"),
        ("blockpages:\n  default_language: fr\n", "blockpages.default_language: expected one of en, zh-HK"),
        ("blockpages:\n  colour: '#000000'\n", "blockpages.colour: unknown key"),
        ("policy:\n  forbidden_categories: ['Bad Name']\n", "policy.forbidden_categories[0]: invalid"),
    ],
)
def test_bad_blockpages_settings_are_config_errors(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config_text(text, tmp_path)


def test_everything_reflected_is_escaped() -> None:
    renderer = Renderer(Config(organisation=OrganisationConfig(contact=HOSTILE, name_en=HOSTILE)))
    document = renderer.render(
        facts(user=HOSTILE, path="/" + HOSTILE, reference=HOSTILE), "html", "en",
        RequestForm("https://portal.example/request", '"><script>x</script>', 30),
    ).body.decode()
    assert "<script" not in document
    assert document.count("&lt;script&gt;") >= 4
    assert 'value="&#34;&gt;&lt;script&gt;x&lt;/script&gt;"' in document
    as_json = renderer.render(facts(user=HOSTILE), "json", "en", None).body.decode()
    assert "<" not in as_json and json.loads(as_json)["user"] == HOSTILE
    text = renderer.render(facts(user="eve\r\nX-Injected: 1"), "text", "en", None).body.decode()
    assert "eve\ufffd\ufffdX-Injected: 1" in text  # control characters never reach the page


# ---- the admins' own templates -------------------------------------------------------------------------------


def test_template_dir_overrides_the_built_in_templates(tmp_path: Path) -> None:
    (tmp_path / "block.html").write_text(
        "<!DOCTYPE html><html lang=\"{{ lang }}\"><title>{{ heading }}</title><h1>Custom {{ org.name }}</h1>"
        "<p>{{ message }}</p><p>{{ page.host }} {{ page.reference }}</p>{% if form %}form{% endif %}",
        encoding="utf-8",
    )
    config = load_config_text("blockpages:\n  template_dir: .\n", tmp_path)
    renderer = Renderer(config)
    page = renderer.render(facts(host="<b>x</b>"), "html", "zh-HK", None).body.decode()
    assert page.startswith('<!DOCTYPE html><html lang="zh-HK"><title>此網站已被封鎖</title><h1>Custom 貴部門</h1>')
    assert "&lt;b&gt;x&lt;/b&gt;" in page  # still autoescaped
    # block.txt was not overridden: the built-in one is used.
    assert renderer.render(facts(), "text", "en", None).body.decode().startswith("Access to this site is blocked ·")


@pytest.mark.parametrize(
    ("template", "line", "message"),
    [
        ("<p>fine</p>\n<p>{{ page.host }</p>\n", 2, "unexpected '}'"),
        ("<p>{{ heading }}</p>\n\n<p>{{ page.no_such_fact }}</p>\n", 3, "no_such_fact"),
        ("{% if form %}\n{{ form.action }}\n{% endif %}\n{{ nothing_here }}\n", 4, "'nothing_here' is undefined"),
        ("{% if page.user %}{{ page.user }}{% else %}\n{{ page.user.upper() }}{% endif %}\n", 2, "upper"),
    ],
)
def test_a_broken_template_is_named_with_its_line(tmp_path: Path, template: str, line: int, message: str) -> None:
    (tmp_path / "block.html").write_text(template, encoding="utf-8")
    with pytest.raises(BlockPageError) as caught:
        Renderer(branded(template_dir=str(tmp_path)))
    text = str(caught.value)
    assert f"{tmp_path / 'block.html'}, line {line}:" in text and message in text, text
    assert "\n" not in text


def test_a_broken_partial_template_is_found_too(tmp_path: Path) -> None:
    (tmp_path / "footer.html").write_text("{% for x in %}\n", encoding="utf-8")
    with pytest.raises(BlockPageError, match=r"footer\.html, line 1"):
        Renderer(branded(template_dir=str(tmp_path)))
    with pytest.raises(BlockPageError, match="is not a directory"):
        Renderer(branded(template_dir=str(tmp_path / "nowhere")))


def test_serve_refuses_to_start_with_a_broken_template(tmp_path: Path) -> None:
    templates = tmp_path / "pages"
    templates.mkdir()
    (templates / "block.html").write_text("<h1>{{ heading }}</h1>\n<p>{{ page.hots }}</p>\n", encoding="utf-8")
    config = tmp_path / "clearance.yaml"
    config.write_text("blockpages:\n  template_dir: pages\nlogging:\n  format: json\n", encoding="utf-8")
    env = clearance_env("redis://127.0.0.1:1/0", config)  # never reached: the check comes first
    serve = subprocess.run(
        [sys.executable, "-m", "icap_server", "serve", "--listen", "127.0.0.1:1"],
        env=env, capture_output=True, text=True, timeout=60,
    )
    assert serve.returncode == 2
    lines = serve.stderr.strip().splitlines()
    assert len(lines) == 1, serve.stderr
    assert lines[0].startswith("clearance: block-page template ")
    assert f"{templates / 'block.html'}, line 2:" in lines[0] and "hots" in lines[0]
    check = subprocess.run(
        [sys.executable, "-m", "icap_server", "blockpages", "check"],
        env=env, capture_output=True, text=True, timeout=60,
    )
    assert check.returncode == 2 and check.stderr == serve.stderr
    (templates / "block.html").write_text("<h1>{{ heading }}</h1>\n<p>{{ page.host }}</p>\n", encoding="utf-8")
    check = subprocess.run(
        [sys.executable, "-m", "icap_server", "blockpages", "check"],
        env=env, capture_output=True, text=True, timeout=60,
    )
    assert check.returncode == 0 and "block-page templates OK" in check.stdout


def test_shipped_config_and_built_in_templates_pass_the_check() -> None:
    Renderer(load_config(PROJECT_ROOT / "config.yaml"))


def load_config_text(text: str, directory: Path | None = None) -> Config:
    import tempfile

    folder = directory or Path(tempfile.mkdtemp())
    path = folder / "clearance.yaml"
    path.write_text(text, encoding="utf-8")
    return load_config(path)
