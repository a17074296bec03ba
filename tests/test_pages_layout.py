"""The pages' layout (issue 11, acceptance 5): the block page, the request's status page and the heads'
workspace in a real headless Chromium, through a real Squid that uses Clearance, at 1280 and 390 px.

Screenshots go under `test-artifacts/` (CLEARANCE_SCREENSHOT_DIR). What a person would see is checked in the
laid-out DOM: at 390 px the facts are stacked (each box below the one before), no fact value wraps inside a
word (a Range over each character: a line may only change at a space, a `<wbr>`, or after `.`, `/`, `-`),
the button is on one line, and nothing is wider than the screen. At 1280 px the facts stand in two columns,
so the narrow layout is the media query's doing and not the page's only shape.
"""

from __future__ import annotations

import itertools
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from blockpages.render import BlockFacts, RequestForm
from icap_server.service.pages import block_pages
from tests.conftest import serving
from tests.support.browser_stack import BrowserStack as Stack
from tests.support.net import free_port, wait_for_port
from tests.support.origin import OriginServer
from tests.support.pages import NOW, branded
from tests.support.playwright_browser import chromium_page
from tests.support.requirements import require_program
from tests.support.squid import SquidProxy

SCREENSHOTS = Path(os.environ.get("CLEARANCE_SCREENSHOT_DIR", "test-artifacts"))
WIDE, NARROW = (1280, 900), (390, 844)
BLOCKED = "mail.personal-mail-service.example"  # long enough to need somewhere to wrap on a phone
LONG_PATH = "/mail/u/0/inbox/conversation-threads/2026-12-01/attachments/quarterly-budget-report.xlsx"
PORTAL = "portal.clearance.example"
CONFIG = (
    "organisation:\n  name_en: Innovation and Technology Bureau\n  name_zh: 創新科技及工業局\n"
    "policy:\n  load_default_lists: false\n"
    "portal:\n  listen: 127.0.0.1:{port}\n  public_url: http://" + PORTAL + ":{port}\n"
    "logging:\n  format: json\n"
)
DIRECTORY = (
    "user,name,department,groups,heads,delegates\n"
    "alice,Alice Chan,Finance,,,\n"
    "bob,Bob Lee,Finance,,,\n"
    "carol,Carol Ho,Finance,,,\n"
    "hfin,Henry Fung,Finance,,Finance,\n"
)
# Squid in front of the portal tells it who the head is (the browser's own copy of the header is dropped).
PORTAL_IDENTITY = [
    f"acl clearance_portal dstdomain {PORTAL}",
    "request_header_access X-Clearance-User deny all",
    'request_header_add X-Clearance-User "%ul" clearance_portal',
]
WHY = "Liaison with the Singapore office, which only uses webmail"

# Every fact value's characters in order, each with its line box and whether a space or <wbr> came before it.
WRAPS = """(dl) => [...dl.querySelectorAll('dd')].map((dd) => {
  const chars = [];
  let soft = false;
  const walker = document.createTreeWalker(dd, NodeFilter.SHOW_TEXT | NodeFilter.SHOW_ELEMENT);
  for (let node = walker.nextNode(); node; node = walker.nextNode()) {
    if (node.nodeType === Node.ELEMENT_NODE) { soft = soft || node.tagName === 'WBR'; continue; }
    const text = node.textContent;
    for (let i = 0; i < text.length; i++) {
      const range = document.createRange();
      range.setStart(node, i);
      range.setEnd(node, i + 1);
      const box = range.getClientRects()[0];
      if (/\\s/.test(text[i]) || !box || box.width === 0) { soft = true; continue; }
      chars.push({c: text[i], top: box.top, height: box.height, soft});
      soft = false;
    }
  }
  const breaks = [];
  for (let k = 1; k < chars.length; k++) {
    const before = chars[k - 1], after = chars[k];
    if (after.top >= before.top + before.height / 2) breaks.push({before: before.c, after: after.c, soft: after.soft});
  }
  return {text: dd.textContent, breaks};
})"""
BOXES = "(dl) => [...dl.children].map((e) => { const r = e.getBoundingClientRect(); "
BOXES += "return {tag: e.tagName, top: r.top, bottom: r.bottom, left: r.left, right: r.right}; })"
BUTTON = """(b) => {
  const range = document.createRange();
  range.selectNodeContents(b);
  const middles = [...range.getClientRects()].filter((r) => r.width > 0).map((r) => (r.top + r.bottom) / 2);
  const size = parseFloat(getComputedStyle(b).fontSize);
  const box = b.getBoundingClientRect(), form = b.closest('form').getBoundingClientRect();
  return {spread: Math.max(...middles) - Math.min(...middles), size, inside: box.right <= form.right + 0.5};
}"""


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    require_program("squid")
    require_program("chromium")
    base = tmp_path_factory.mktemp("layout")
    config = base / "clearance.yaml"
    portal_port = free_port()
    config.write_text(CONFIG.format(port=portal_port), encoding="utf-8")
    directory = base / "staff.csv"
    directory.write_text(DIRECTORY, encoding="utf-8")
    with serving(base, config, config.read_text(encoding="utf-8")) as served:
        wait_for_port(portal_port)
        with (
            OriginServer() as origin,
            SquidProxy(served.port, [BLOCKED, PORTAL], base / "squid", extra_config=PORTAL_IDENTITY) as squid,
        ):
            built = Stack(served.redis_url, served.env, served.port, portal_port, origin, squid, PORTAL)
            built.cli("directory", "load", str(directory))
            built.cli("categories", "add", "webmail", BLOCKED)
            yield built


def shoot(page: Any, name: str) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / name
    page.screenshot(path=str(path), full_page=True)
    assert path.stat().st_size > 10_000, path  # a real picture, not a blank one
    return path


def assert_stacked(boxes: list[dict[str, Any]]) -> None:
    """Each label and value below the one before it: one column."""
    for before, after in itertools.pairwise(boxes):
        assert after["top"] >= before["bottom"] - 0.5, (before, after)


def assert_two_columns(boxes: list[dict[str, Any]]) -> None:
    """Each value to the right of its label, on the same row."""
    for label, value in zip(boxes[::2], boxes[1::2], strict=True):
        assert (label["tag"], value["tag"]) == ("DT", "DD")
        assert value["left"] >= label["right"] and value["top"] < label["bottom"], (label, value)


def assert_wrapped_only_between_words(values: list[dict[str, Any]]) -> int:
    """No value breaks between two characters of a word; the number of breaks that fell at sensible places."""
    sensible = 0
    for value in values:
        for point in value["breaks"]:
            assert point["soft"] or point["before"] in "./-", f"{value['text']!r} wraps mid-word: {point}"
            sensible += 1
    return sensible


@pytest.mark.squid
@pytest.mark.browser
@pytest.mark.parametrize("size", [WIDE, NARROW], ids=["1280", "390"])
@pytest.mark.parametrize(
    ("locale", "name", "button_text"),
    [("en-GB", "en", "Send the request"), ("zh-HK", "zh-HK", "提交申請")],
    ids=["en", "zh-HK"],
)
def test_block_page_layout(stack: Stack, locale: str, name: str, button_text: str, size: tuple[int, int]) -> None:
    with chromium_page(stack.squid.url, user="alice", locale=locale, viewport=size) as page:
        response = page.goto(stack.url(BLOCKED, LONG_PATH))
        assert response is not None and response.status == 403
        shoot(page, f"block-page-{name}-{size[0]}.png")
        facts = page.query_selector("dl.facts")
        boxes = facts.evaluate(BOXES)
        assert len(boxes) >= 12  # site, address, category, user, time, reference: label and value each
        button = page.query_selector("form button[type=submit]")
        assert button_text in button.inner_text()
        shape = button.evaluate(BUTTON)
        assert shape["spread"] < shape["size"] and shape["inside"], shape  # one line, inside its form
        assert page.evaluate("document.documentElement.scrollWidth") <= size[0]  # nothing wider than the screen
        if size == WIDE:
            assert_two_columns(boxes)
            return
        assert_stacked(boxes)
        wraps = facts.evaluate(WRAPS)
        assert any(BLOCKED in value["text"] for value in wraps)
        assert assert_wrapped_only_between_words(wraps) >= 1  # the long path did wrap, and only between words


@pytest.mark.squid
@pytest.mark.browser
def test_status_page_in_chinese_shows_the_days_asked_then_the_days_granted(stack: Stack) -> None:
    with chromium_page(stack.squid.url, user="bob", locale="zh-HK", viewport=NARROW) as page:
        response = page.goto(stack.url(BLOCKED, "/compose"))
        assert response is not None and response.status == 403
        advice = page.inner_text("h2 + p")
        assert "下面的表格" in advice  # "What you can do" points to the form it shows
        page.fill("textarea[name=justification]", WHY)
        page.fill("input[name=days]", "30")
        page.click("button[type=submit]")
        page.wait_for_load_state()
        assert "/requests/Q" in page.url, page.url
        status_url = page.url
        assert page.get_attribute("html", "lang") == "zh-HK"
        assert page.inner_text("h1").startswith("申請編號 Q")  # the page is Chinese; English beside it
        assert "等待決定" in page.inner_text("section.notice")
        assert "申請日數" in page.inner_text("dl.facts") and page.inner_text("dd.days") == "30"
        assert 'lang="zh-Hant"' not in page.content()
        request_id = status_url.split("/requests/")[1].split("?")[0]

        stack.cli("requests", "approve", request_id, "--by", "hfin", "--days", "7")
        response = page.goto(status_url)
        assert response is not None and response.headers["content-language"] == "zh-HK"
        assert "已批准" in page.inner_text("section.notice")
        assert "批准日數" in page.inner_text("dl.facts") and page.inner_text("dd.days") == "7"  # granted, not asked
        shoot(page, "request-approved-zh-HK-390.png")


@pytest.mark.squid
@pytest.mark.browser
@pytest.mark.parametrize("size", [WIDE, NARROW], ids=["1280", "390"])
def test_heads_workspace_through_the_proxy(stack: Stack, size: tuple[int, int]) -> None:
    """A head, named by Squid's header, sees the pending request in the block page's look."""
    listed = stack.cli("requests", "list", "--status", "pending")
    if "carol" not in listed:
        with chromium_page(stack.squid.url, user="carol", viewport=size) as page:
            page.goto(stack.url(BLOCKED, "/drafts"))
            page.fill("textarea[name=justification]", WHY)
            page.click("button[type=submit]")
            page.wait_for_load_state()
            assert "/requests/Q" in page.url, page.url
    with chromium_page(stack.squid.url, user="hfin", viewport=size) as page:
        response = page.goto(stack.portal + "/heads")
        assert response is not None and response.status == 200
        body = page.inner_text("body")
        assert "hfin" in body and "carol" in body and WHY in body
        colour = page.eval_on_selector("main", "e => getComputedStyle(e).borderTopColor")
        assert colour == "rgb(185, 28, 28)"  # the block page's primary colour: one stylesheet
        assert page.evaluate("document.documentElement.scrollWidth") <= size[0]
        shoot(page, f"heads-{size[0]}.png")


# ---- the advice agrees with the form, in both languages (no browser needed) ---------------------------------


def test_the_advice_points_to_the_form_when_there_is_one_and_to_the_head_when_not() -> None:
    renderer = block_pages(branded())
    form = RequestForm("https://portal.example/request", "t", 90)
    blocked = BlockFacts(BLOCKED, LONG_PATH, "webmail", "alice", "10.0.0.1", "no-approval", "abc123", NOW)
    for language, with_form, without in (
        ("en", "with the form below", "Ask the head of your department"),
        ("zh-HK", "下面的表格", "請向部門主管申請批准"),
    ):
        shown = advice(renderer.render(blocked, "html", language, form).body.decode())  # type: ignore[arg-type]
        assert with_form in shown and "helpdesk" not in shown.lower() and "服務台" not in shown
        plain = advice(renderer.render(blocked, "html", language, None).body.decode())  # type: ignore[arg-type]
        assert without in plain and with_form not in plain
    suspended = BlockFacts(BLOCKED, "/", "webmail", "alice", None, "approval-suspended", "abc123", NOW)
    shown = advice(renderer.render(suspended, "html", "en", form).body.decode())
    assert "review your approval" in shown and "with the form below" in shown


def advice(page: str) -> str:
    found = re.search(r"<h2>(?:What you can do|你可以怎樣做)</h2>\s*<p>(.*?)</p>", page, re.DOTALL)
    assert found is not None
    return found.group(1)
