"""Roll-out modes through a real Squid (issue 14): a department in `monitor` reaches the origin and is logged as
`would-block` with its reason, by Clearance and by Squid; another department, in `enforce`, is still blocked;
one in `caution` gets the caution page and never reaches the origin."""

from __future__ import annotations

import html
import json
import re
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import serving
from tests.support.icap_client import wait_until_synced
from tests.support.net import free_port, wait_for_port
from tests.support.origin import OriginServer
from tests.support.requirements import require_program
from tests.support.squid import SquidProxy
from tests.support.waiting import wait_until

pytestmark = pytest.mark.squid

GRACE_S = 3.0
CONFIG = (
    "policy:\n  load_default_lists: false\n"
    f"modes:\n  departments: {{finance: monitor, legal: caution}}\n  caution_grace_minutes: {GRACE_S / 60}\n"
    "portal:\n  listen: 127.0.0.1:{portal}\n  secret: modes-test-secret\n"
    "logging:\n  format: json\n"
)
PEOPLE = "user,name,department\namy,Amy,finance\ncat,Cat,legal\ndan,Dan,works\neve,Eve,legal\n"


class Stack:
    def __init__(self, env: dict[str, str], log: Path, origin: OriginServer, squid: SquidProxy, port: int, url: str):
        self.env, self.log, self.origin, self.squid, self.port, self.redis_url = env, log, origin, squid, port, url
        self.portal = 0

    def cli(self, *args: str) -> None:
        proc = subprocess.run(
            [sys.executable, "-m", "icap_server", *args], env=self.env, capture_output=True, text=True, timeout=60
        )
        assert proc.returncode == 0, proc.stderr
        wait_until_synced(self.port, self.redis_url)

    def records(self) -> list[dict[str, Any]]:
        lines = self.log.read_text(encoding="utf-8").splitlines()
        return [
            record for line in lines if line.startswith("{") and (record := json.loads(line)).get("event") == "icap"
        ]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    require_program("squid")
    base = tmp_path_factory.mktemp("modes")
    config = base / "clearance.yaml"
    text = CONFIG.replace("{portal}", str(free_port()))
    config.write_text(text, encoding="utf-8")
    people = base / "people.csv"
    people.write_text(PEOPLE, encoding="utf-8")
    with (
        serving(base, config, text) as served,
        OriginServer() as origin,
        SquidProxy(served.port, ["mail.example.com"], base / "squid") as squid,
    ):
        stack = Stack(served.env, served.log, origin, squid, served.port, served.redis_url)
        stack.cli("categories", "add", "webmail", "mail.example.com")
        stack.cli("directory", "load", str(people))
        stack.portal = int(text.split("listen: 127.0.0.1:")[1].split("\n")[0])
        wait_for_port(stack.portal)
        yield stack


def fetch(stack: Stack, user: str) -> tuple[Any, str]:
    path = f"/inbox-{user}-{uuid.uuid4().hex[:10]}"
    return stack.squid.curl(f"http://mail.example.com:{stack.origin.port}{path}", user=user), path


def test_monitor_passes_and_logs_would_block_with_the_reason(stack: Stack) -> None:
    result, path = fetch(stack, "amy")
    assert result.status == 200 and result.text.startswith("origin-ok"), result
    assert stack.origin.wait_for(lambda r: r.path == path)
    record = wait_until(lambda: [r for r in stack.records() if r.get("user") == "amy"], timeout=5, what="amy's line")[
        -1
    ]
    assert (record["decision"], record["reason"], record["category"], record["mode"]) == (
        "would-block",
        "no-approval",
        "webmail",
        "monitor",
    )
    line = wait_until(lambda: [x for x in stack.squid.access_log_lines() if path in x], timeout=5, what=path)[0]
    assert " would-block no-approval webmail " in line, line


def test_enforce_in_another_department_still_blocks(stack: Stack) -> None:
    result, path = fetch(stack, "dan")
    assert result.status == 403 and "Access to this site is blocked" in result.text, result
    record = wait_until(lambda: [r for r in stack.records() if r.get("user") == "dan"], timeout=5, what="dan's line")[
        -1
    ]
    assert (record["decision"], record["mode"]) == ("block", "enforce")
    wait_until(lambda: [x for x in stack.squid.access_log_lines() if path in x], timeout=5, what=path)
    assert not [r for r in stack.origin.requests if r.path == path]


def test_caution_shows_the_bilingual_page_with_the_request_form_and_stops_the_request(stack: Stack) -> None:
    result, path = fetch(stack, "cat")
    assert result.status == 403, result
    assert "This service needs approval" in result.text and "此服務須經批准" in result.text
    record = wait_until(lambda: [r for r in stack.records() if r.get("user") == "cat"], timeout=5, what="cat's line")[
        -1
    ]
    assert (record["decision"], record["reason"], record["mode"]) == ("caution", "no-approval", "caution")
    wait_until(lambda: [x for x in stack.squid.access_log_lines() if path in x], timeout=5, what=path)
    assert not [r for r in stack.origin.requests if r.path == path]


def continue_form(page: str) -> tuple[str, str]:
    """The caution page's continue form: its action and its token."""
    found = re.search(
        r'<form method="post" action="([^"]+/continue)">\s*<h2>.*?name="token" value="([^"]+)"', page, re.S
    )
    assert found, page[-3000:]
    return html.unescape(found.group(1)), html.unescape(found.group(2))


def post_continue(action: str, token: str) -> tuple[int, str]:
    """The form post a browser makes (no redirect followed): the status and where it sends the browser."""
    request = urllib.request.Request(action, urllib.parse.urlencode({"token": token}).encode(), method="POST")

    class Stay(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args: Any) -> None:
            return None

    try:
        with urllib.request.build_opener(Stay()).open(request, timeout=10) as answer:
            return answer.status, answer.headers.get("location", "")
    except urllib.error.HTTPError as error:
        return error.code, error.headers.get("location", "") or error.read().decode("utf-8", "replace")


def test_continue_lets_that_person_through_for_the_grace_and_nobody_else(stack: Stack) -> None:
    result, path = fetch(stack, "cat")
    assert result.status == 403 and "Continue for 1 minutes" in result.text, result.text[-2000:]
    action, token = continue_form(result.text)
    payload, mac = token.split(".")
    altered = ("A" if payload[5] != "A" else "B").join((payload[:5], payload[6:])) + "." + mac
    assert post_continue(action, altered)[0] == 400  # altered: refused, nothing recorded
    assert post_continue(action, token + "x")[0] == 400  # forged signature
    status, location = post_continue(action, token)
    assert status == 303 and location.endswith(path), (status, location)
    through = wait_until(lambda: fetch(stack, "cat")[0].status == 200 or None, timeout=1.0, what="cat through")
    assert through
    record = wait_until(lambda: [r for r in stack.records() if r.get("decision") == "continued"], timeout=5, what="log")
    assert (record[-1]["user"], record[-1]["mode"]) == ("cat", "caution")
    other, _ = fetch(stack, "eve")  # another person of the same department: still the caution page
    assert other.status == 403 and "This service needs approval" in other.text
    time.sleep(GRACE_S)  # the grace runs out: the page again
    again, _ = fetch(stack, "cat")
    assert again.status == 403 and "This service needs approval" in again.text


def test_continue_is_refused_once_the_mode_is_enforce(stack: Stack) -> None:
    result, _ = fetch(stack, "eve")
    action, token = continue_form(result.text)
    stack.cli("modes", "set", "--department", "legal", "enforce")
    try:
        status, body = post_continue(action, token)
        assert status == 403 and "Continuing is no longer possible" in body, (status, body[:500])
        blocked, _ = fetch(stack, "eve")
        assert blocked.status == 403 and "Access to this site is blocked" in blocked.text
    finally:
        stack.cli("modes", "clear", "--department", "legal")
