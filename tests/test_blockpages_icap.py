"""Block pages as Clearance sends them inside an ICAP answer, with the portal's request form."""

from __future__ import annotations

import base64
import hashlib
import html
import json
import re
from dataclasses import replace
from urllib.parse import unquote

import pytest

from icap_server.config import Config
from icap_server.service.application import Application, PortalLink, Verdict
from icap_server.service.sync import PolicyUnavailable
from policy.decision import Action, Decision, Reason
from policy.identity import Identity
from policy.state import PolicyState
from policy.tokens import verify
from tests.support.pages import (
    HOSTILE,
    NOW,
    PHRASES,
    answer,
    application,
    icap_request,
    load_config_text,
)


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

