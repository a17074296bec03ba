"""Block pages rendered on their own: what the page says, branding, and that nothing reflected is unsafe."""

from __future__ import annotations

import base64
import json
import re
from datetime import UTC, datetime
from pathlib import Path

import pytest

from blockpages.render import LOGO_MAX_BYTES, UNCATEGORISED, Renderer, RequestForm
from icap_server.config import Config, ConfigError, OrganisationConfig
from icap_server.service.pages import BlockPageError, block_pages
from tests.support.pages import (
    HOSTILE,
    PHRASES,
    branded,
    facts,
    load_config_text,
    text_of,
)


@pytest.fixture(scope="module")
def renderer() -> Renderer:
    return block_pages(branded(contact_email="helpdesk@example.gov", policy_url="https://intranet.example/policy"))


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
    category = None if reason in UNCATEGORISED else "webmail"
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
    html = renderer.render(facts(path=path, host=host), "html", "en", None).body.decode()
    assert "a.<wbr>very-<wbr>long-<wbr>subdomai…</dd>" in html  # it may wrap there, not mid-word
    page = html.replace("<wbr>", "")
    shown = re.search(r'title="(/files/x+)">(/files/x+…)</dd>', page)
    assert shown is not None and shown.group(1) == path and len(shown.group(2)) == 80
    assert f'title="{host}">{host[:79]}…</dd>' in page
    document = json.loads(renderer.render(facts(path=path, host=host), "json", "en", None).body)
    assert document["path"] == path and document["host"] == host



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
    page = block_pages(config).render(facts(), "html", "en", None).body.decode()
    assert f'src="data:image/png;base64,{base64.b64encode(PNG).decode()}"' in page
    assert "--primary: #003366; --accent: #aa5500;" in page
    assert 'href="tel:+85223456789"' in page and 'href="https://intranet.example/helpdesk"' in page
    assert "http://" not in page.replace('href="https://intranet.example/helpdesk"', "")  # nothing external


def test_svg_logo_and_bad_logos(tmp_path: Path) -> None:
    svg = tmp_path / "logo.svg"
    svg.write_text('<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"/>', encoding="utf-8")
    assert block_pages(branded(logo=str(svg))).logo.startswith("data:image/svg+xml;base64,")  # type: ignore[union-attr]
    (tmp_path / "big.png").write_bytes(PNG + b"\0" * LOGO_MAX_BYTES)
    (tmp_path / "logo.gif").write_bytes(b"GIF89a....")
    bad = (("big.png", "at most"), ("logo.gif", "not a PNG, JPEG or SVG"), ("missing.png", "cannot read"))
    for name, message in bad:
        with pytest.raises(BlockPageError, match=f"blockpages.logo: .*{name}.*{message}"):
            block_pages(branded(logo=str(tmp_path / name)))


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
    renderer = block_pages(Config(organisation=OrganisationConfig(contact=HOSTILE, name_en=HOSTILE)))
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

