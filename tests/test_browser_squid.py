"""Staff's view: headless Chromium, through a real Squid that uses Clearance, meets the block page.

The restricted host is a made-up one: Chromium upgrades http:// to https:// for HSTS-preloaded names such as
mail.google.com before the proxy is even asked, and a CONNECT cannot show a page without TLS interception.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import serving
from tests.support.browser_stack import BrowserStack
from tests.support.net import free_port
from tests.support.origin import OriginServer
from tests.support.playwright_browser import chromium_page
from tests.support.requirements import require_program
from tests.support.squid import SquidProxy

pytestmark = [pytest.mark.squid, pytest.mark.browser]

SCREENSHOTS = Path(os.environ.get("CLEARANCE_SCREENSHOT_DIR", "test-artifacts"))
CONFIG = (
    "organisation:\n  name_en: Innovation and Technology Bureau\n  name_zh: 創新科技及工業局\n"
    "policy:\n  load_default_lists: false\n"
    "portal:\n  listen: 127.0.0.1:{portal_port}\n"
    "logging:\n  format: json\n"
)
DIRECTORY = (
    "user,name,department,groups,heads,delegates\n"
    "alice,Alice Chan,Finance,,,\n"
    "bob,Bob Lee,Finance,,,\n"
    "carol,Carol Ho,Finance,,,\n"
    "hfin,Henry Fung,Finance,,Finance,\n"
)
WHY = "Liaison with the Singapore office, which only uses webmail"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrowserStack]:
    require_program("squid")
    require_program("chromium")
    base = tmp_path_factory.mktemp("browser")
    config = base / "clearance.yaml"
    portal_port = free_port()
    config.write_text(CONFIG.format(portal_port=portal_port), encoding="utf-8")
    directory = base / "staff.csv"
    directory.write_text(DIRECTORY, encoding="utf-8")
    text = config.read_text(encoding="utf-8")
    with (
        serving(base, config, text) as served,
        OriginServer() as origin,
        SquidProxy(served.port, ["mail.personal-mail.example", "example.org"], base / "squid") as squid,
    ):
        built = BrowserStack(served.redis_url, served.env, served.port, portal_port, origin, squid)
        built.cli("directory", "load", str(directory))
        built.cli("categories", "add", "webmail", "mail.personal-mail.example")
        yield built


@pytest.mark.parametrize(
    ("locale", "heading"), [("en-GB", "Access to this site is blocked"), ("zh-HK", "此網站已被封鎖")]
)
def test_restricted_site_shows_the_block_page_in_the_browser(stack: BrowserStack, locale: str, heading: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    with chromium_page(stack.squid.url, user="alice", locale=locale) as page:
        response = page.goto(stack.url("mail.personal-mail.example", "/mail/u/0/"))
        assert response is not None and response.status == 403
        assert heading in page.inner_text("body")
        assert "mail.personal-mail.example" in page.inner_text("body")
        page.screenshot(path=str(SCREENSHOTS / f"block-page-{locale}.png"), full_page=True)
        # The origin never saw it.
        assert not [r for r in stack.origin.requests if r.host.startswith("mail.personal-mail.example")]


def test_an_ordinary_site_loads_in_the_browser(stack: BrowserStack) -> None:
    with chromium_page(stack.squid.url, user="alice") as page:
        response = page.goto(stack.url("example.org", "/hello"))
        assert response is not None and response.status == 200
        assert "origin-ok" in page.inner_text("body")


def request_access(page: Any, url: str, justification: str, days: int) -> str:
    """From the block page, ask for access; returns the status page's address."""
    response = page.goto(url)
    assert response is not None and response.status == 403
    page.fill("textarea[name=justification]", justification)
    page.fill("input[name=days]", str(days))
    page.click("button[type=submit]")
    page.wait_for_load_state()
    assert "/requests/Q" in page.url, page.url
    return str(page.url)


def status_of(page: Any) -> str:
    classes = page.get_attribute("section.notice", "class") or ""
    return next(word for word in classes.split() if word in {"pending", "approved", "denied"})


def test_request_access_from_the_block_page_then_the_head_approves(stack: BrowserStack) -> None:
    blocked = stack.url("mail.personal-mail.example", "/inbox")
    with chromium_page(stack.squid.url, user="alice") as page:
        status_url = request_access(page, blocked, WHY, 30)
        assert status_of(page) == "pending"
        assert WHY in page.inner_text("body") and "alice" in page.inner_text("body")
        page.screenshot(path=str(SCREENSHOTS / "request-pending.png"), full_page=True)
        request_id = status_url.split("/requests/")[1].split("?")[0]
        listed = stack.cli("requests", "list", "--status", "pending")
        assert request_id in listed and "alice" in listed

        stack.cli("requests", "approve", request_id, "--by", "hfin", "--note", "for the Singapore project")
        response = page.goto(blocked)  # reload the page that was blocked: it passes now
        assert response is not None and response.status == 200
        assert "origin-ok" in page.inner_text("body")
        page.goto(status_url)
        assert status_of(page) == "approved"
        assert "for the Singapore project" in page.inner_text("body")


def test_a_denied_request_shows_the_note_and_stays_blocked(stack: BrowserStack) -> None:
    blocked = stack.url("mail.personal-mail.example", "/compose")
    with chromium_page(stack.squid.url, user="bob") as page:
        status_url = request_access(page, blocked, "Need to send files to a supplier from home mail", 7)
        request_id = status_url.split("/requests/")[1].split("?")[0]
        stack.cli("requests", "deny", request_id, "--by", "hfin", "--note", "use the departmental mailbox")
        page.goto(status_url)
        assert status_of(page) == "denied"
        assert "use the departmental mailbox" in page.inner_text("body")
        response = page.goto(blocked)
        assert response is not None and response.status == 403


def test_hostile_justification_never_runs_on_the_status_page(stack: BrowserStack) -> None:
    payload = "<script>document.title='pwned'</script><img src=x onerror=\"document.title='pwned'\"> for work"
    blocked = stack.url("mail.personal-mail.example", "/hostile")
    with chromium_page(stack.squid.url, user="carol") as page:
        request_access(page, blocked, payload + " with the overseas partners", 5)
        assert page.title() != "pwned"
        assert payload in page.inner_text("body")  # shown as text
        assert page.locator("dd script, dd img").count() == 0  # nothing became markup
