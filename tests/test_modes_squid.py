"""Roll-out modes through a real Squid (issue 14): a department in `monitor` reaches the origin and is logged as
`would-block` with its reason, by Clearance and by Squid; another department, in `enforce`, is still blocked;
one in `caution` gets the caution page and never reaches the origin."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import serving
from tests.support.icap_client import wait_until_synced
from tests.support.origin import OriginServer
from tests.support.requirements import require_program
from tests.support.squid import SquidProxy
from tests.support.waiting import wait_until

pytestmark = pytest.mark.squid

CONFIG = (
    "policy:\n  load_default_lists: false\n"
    "modes:\n  departments: {finance: monitor, legal: caution}\n"
    "logging:\n  format: json\n"
)
PEOPLE = "user,name,department\namy,Amy,finance\ncat,Cat,legal\ndan,Dan,works\n"


class Stack:
    def __init__(self, env: dict[str, str], log: Path, origin: OriginServer, squid: SquidProxy, port: int, url: str):
        self.env, self.log, self.origin, self.squid, self.port, self.redis_url = env, log, origin, squid, port, url

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
    config.write_text(CONFIG, encoding="utf-8")
    people = base / "people.csv"
    people.write_text(PEOPLE, encoding="utf-8")
    with (
        serving(base, config, CONFIG) as served,
        OriginServer() as origin,
        SquidProxy(served.port, ["mail.example.com"], base / "squid") as squid,
    ):
        stack = Stack(served.env, served.log, origin, squid, served.port, served.redis_url)
        stack.cli("categories", "add", "webmail", "mail.example.com")
        stack.cli("directory", "load", str(people))
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
