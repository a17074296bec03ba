"""A head decides in a real browser, through a real Squid, and the person's next request follows (issue 11, 1).

Headless Chromium behind the Squid of tests/test_pages_layout.py (which names the signed-in user to the portal
with `request_header_add X-Clearance-User "%ul"`, the browser's own copy dropped): a person asks from the
block page; the head approves in the workspace and the person's next request through Squid reaches the origin;
the head revokes and it is blocked again; another request is denied in the browser. Each decision is in the
audit with the head as the actor.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from tests.support.browser_stack import BrowserStack as Stack
from tests.support.icap_client import wait_until_synced
from tests.support.playwright_browser import chromium_page
from tests.test_pages_layout import BLOCKED, WHY, stack

__all__ = ["stack"]  # the module-scoped Squid, portal and serve of the layout tests, started again for this module


def ask(stack: Stack, user: str) -> str:
    """The person asks from the block page; the request's id."""
    with chromium_page(stack.squid.url, user=user) as page:
        page.goto(stack.url(BLOCKED, "/inbox"))
        page.fill("textarea[name=justification]", WHY)
        page.click("button[type=submit]")
        page.wait_for_load_state()
        found = re.search(r"/requests/(Q\d+)", page.url)
        assert found, page.url
        return found.group(1)


def reaches_origin(stack: Stack, user: str) -> bool:
    with chromium_page(stack.squid.url, user=user) as page:
        response = page.goto(stack.url(BLOCKED, "/inbox"))
        assert response is not None
        return response.status == 200 and "Request access" not in page.content()


def decide(stack: Stack, item: str, form: str, fields: dict[str, str]) -> str:
    """hfin, signed in by Squid, fills and sends one form of one item of the workspace; the outcome line."""
    with chromium_page(stack.squid.url, user="hfin") as page:
        response = page.goto(stack.portal + "/heads")
        assert response is not None and response.status == 200
        article = page.locator(f"article#item-{item}")
        for name, value in fields.items():
            article.locator(f"form.{form} [name={name}]").fill(value)
        article.locator(f"form.{form} button[type=submit]").click()
        page.wait_for_load_state()
        outcome: str = page.inner_text("#outcome")
        return outcome


def audit(stack: Stack, action: str) -> list[dict[str, Any]]:
    records: list[dict[str, Any]] = json.loads(stack.cli("audit", "--format", "json", "--action", action))
    return records


@pytest.mark.squid
@pytest.mark.browser
def test_a_head_approves_revokes_and_denies_in_the_browser(stack: Stack) -> None:
    request = ask(stack, "alice")
    assert not reaches_origin(stack, "alice")
    outcome = decide(stack, request, "approve", {"days": "5", "note": "for the Singapore project"})
    assert f"{request} approved" in outcome, outcome
    approval = re.search(r"\b(A\d+)\b", outcome)
    assert approval, outcome
    wait_until_synced(stack.icap_port, stack.redis_url, timeout=1.0)  # every worker has it within a second
    assert reaches_origin(stack, "alice")
    assert not reaches_origin(stack, "bob")  # alice's approval is hers alone
    (granted,) = [record for record in audit(stack, "grant") if record["target"] == approval.group(1)]
    assert granted["actor"] == "portal:hfin" and granted["after"]["approver"] == "hfin"

    outcome = decide(stack, approval.group(1), "revoke", {"reason": "the project has ended"})
    assert approval.group(1) in outcome and "revoked" in outcome, outcome
    wait_until_synced(stack.icap_port, stack.redis_url, timeout=1.0)
    assert not reaches_origin(stack, "alice")

    other = ask(stack, "bob")
    outcome = decide(stack, other, "deny", {"note": "use the department's shared mailbox"})
    assert f"{other} declined" in outcome or "denied" in outcome, outcome
    assert not reaches_origin(stack, "bob")
    (denied,) = [record for record in audit(stack, "request-deny") if record["target"] == other]
    assert denied["actor"] == "portal:hfin"
