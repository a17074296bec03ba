"""End to end: curl → real Squid 5 → Clearance (ICAP REQMOD) → local origin, with the real CLI changing policy.

One Redis, one `clearance serve`, one origin and one Squid are shared by the whole module (Squid takes a
while to start); every test starts from a flushed Redis with the same two category entries, so the tests
do not depend on each other's approvals.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.conftest import serving
from tests.support.icap_client import wait_until_synced
from tests.support.origin import OriginServer
from tests.support.requirements import require_program
from tests.support.squid import CurlResult, SquidProxy
from tests.support.waiting import wait_until

pytestmark = pytest.mark.squid

HOSTNAMES = ["mail.google.com", "drive.google.com", "example.org", "www.example.org"]
CATEGORIES = {"webmail": "mail.google.com", "cloud-storage": "drive.google.com"}
REVOKE_DEADLINE_S = 2.0
CONFIG = (
    "organisation:\n  name_en: Test Department\n  name_zh: 測試部門\n"
    "policy:\n  load_default_lists: false\n"
    "approvals:\n  require_department_head: false\n  min_justification_chars: 0\n"
    "logging:\n  format: json\n"
)


@dataclass
class Stack:
    redis_url: str
    env: dict[str, str]
    serve_log: Path
    origin: OriginServer
    squid: SquidProxy
    icap_port: int
    log_offset: int = 0  # where the current test's part of serve.log starts

    def cli(self, *args: str, check: bool = True, sync: bool = True) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [sys.executable, "-m", "icap_server", *args],
            env=self.env, capture_output=True, text=True, timeout=60,
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"clearance {' '.join(args)} exited {proc.returncode}: {proc.stderr}")
        if sync:  # changes reach the server through Redis pub/sub, a moment after the CLI returns
            wait_until_synced(self.icap_port, self.redis_url)
        return proc

    def grant(self, user: str, category: str = "webmail") -> str:
        out = self.cli(
            "approvals", "grant", "--user", user, "--category", category, "--days", "7",
            "--approver", "head", "--reason", "e2e test",
        ).stdout
        approval_id = out.strip()
        assert approval_id and "\n" not in approval_id, f"grant should print the id alone, got {out!r}"
        return approval_id

    def url(self, host: str, path: str) -> str:
        return f"http://{host}:{self.origin.port}{path}"

    def curl(self, url: str, user: str | None = "alice", **kwargs: Any) -> CurlResult:
        return self.squid.curl(url, user=user, **kwargs)

    def icap_records(self) -> list[dict[str, Any]]:
        """The server's per-transaction log lines written since the current test started."""
        records = []
        with self.serve_log.open("rb") as log:
            log.seek(self.log_offset)
            text = log.read().decode("utf-8")
        for line in text.splitlines():
            if line.startswith("{"):
                record = json.loads(line)
                if record.get("event") == "icap":
                    records.append(record)
        return records

    def wait_for_record(self, predicate: Any, timeout: float = 5.0) -> dict[str, Any]:
        """The server logs a transaction just after answering it, so allow it a moment to appear."""
        deadline = time.monotonic() + timeout
        while True:
            found = [record for record in self.icap_records() if predicate(record)]
            if found:
                assert len(found) == 1, found
                return found[0]
            if time.monotonic() > deadline:
                raise AssertionError(f"no matching log line in {self.serve_log}:\n{self.serve_log.read_text()[-3000:]}")
            time.sleep(0.05)

    def wait_until_logged_by_squid(self, path: str) -> None:
        """Squid writes its access.log line when a transaction ends: after it, nothing more is forwarded."""
        wait_until(lambda: any(path in line for line in self.squid.access_log_lines()), timeout=5, what=path)

    def diagnostics(self) -> str:
        return (
            f"--- serve.log\n{self.serve_log.read_text(encoding='utf-8')[-2000:]}\n"
            f"--- squid cache.log\n{self.squid.cache_log_text()[-2000:]}"
        )


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    require_program("squid")
    require_program("curl")
    base = tmp_path_factory.mktemp("e2e")
    config = base / "clearance.yaml"
    config.write_text(CONFIG, encoding="utf-8")
    with (
        serving(base, config, CONFIG) as served,
        OriginServer() as origin,
        SquidProxy(served.port, HOSTNAMES, base / "squid") as squid,
    ):
        yield Stack(served.redis_url, served.env, served.log, origin, squid, served.port)


@pytest.fixture
def e2e(stack: Stack) -> Stack:
    """The shared stack with fresh policy: no approvals, mail.google.com webmail, drive.google.com cloud-storage."""
    client = redis.Redis.from_url(stack.redis_url)
    client.flushall()
    client.close()
    for category, host in CATEGORIES.items():
        stack.cli("categories", "add", category, host)
    stack.origin.clear()
    stack.log_offset = stack.serve_log.stat().st_size
    return stack


def unique_path(label: str) -> str:
    return f"/{label}-{uuid.uuid4().hex[:12]}"


def assert_block_page(result: CurlResult, stack: Stack, host: str, user: str) -> str:
    """Check the block page in full and return its reference id."""
    assert result.status == 403, (result, stack.diagnostics())
    assert result.headers["content-type"] == "text/html; charset=utf-8"
    assert result.headers["cache-control"] == "no-store"
    reference = result.headers["x-clearance-reference"]
    assert re.fullmatch(r"[0-9a-f]+", reference), reference
    page = result.text
    assert "Access to this site is blocked" in page
    assert "此網站已被封鎖" in page
    assert f"<dd>{host}</dd>" in page
    assert f"<dd>{user}</dd>" in page
    assert f"<dd>{reference}</dd>" in page
    return reference


def assert_origin_answer(result: CurlResult, stack: Stack, host: str, path: str) -> None:
    assert result.status == 200, (result, stack.diagnostics())
    assert result.text == f"origin-ok {host}:{stack.origin.port} {path}"


def test_restricted_site_without_approval_gets_the_block_page(e2e: Stack) -> None:
    path = unique_path("inbox")
    result = e2e.curl(e2e.url("mail.google.com", path), user="alice")
    reference = assert_block_page(result, e2e, "mail.google.com", "alice")
    record = e2e.wait_for_record(lambda r: r["reference"] == reference)
    assert record["method"] == "REQMOD"
    assert record["service"] == "/reqmod"
    assert record["status"] == 200
    assert record["decision"] == "block"
    assert record["reason"] == "no-approval"
    assert record["user"] == "alice"
    assert record["client_ip"] == "127.0.0.1"
    assert record["host"] == "mail.google.com"
    assert record["category"] == "webmail"
    assert record["approval_id"] is None
    assert isinstance(record["duration_ms"], int | float)
    e2e.wait_until_logged_by_squid(path)  # had Squid forwarded it anyway, the origin would have it by now
    assert not [r for r in e2e.origin.requests if r.path == path]


def test_grant_lets_the_user_through_and_revoke_blocks_again_within_two_seconds(e2e: Stack) -> None:
    url = e2e.url("mail.google.com", "/inbox")
    assert_block_page(e2e.curl(url), e2e, "mail.google.com", "alice")

    approval_id = e2e.grant("alice")
    result = e2e.curl(url)
    assert_origin_answer(result, e2e, "mail.google.com", "/inbox")
    seen = e2e.origin.wait_for(lambda r: r.path == "/inbox")
    assert seen.host == f"mail.google.com:{e2e.origin.port}"
    record = e2e.wait_for_record(lambda r: r["decision"] == "pass" and r["host"] == "mail.google.com")
    assert (record["reason"], record["approval_id"], record["user"]) == ("approved", approval_id, "alice")

    e2e.cli("approvals", "revoke", approval_id, "--by", "head", sync=False)  # the clock starts at the write
    revoked_at = time.monotonic()
    while True:
        result = e2e.curl(url)
        elapsed = time.monotonic() - revoked_at
        if result.status == 403 or elapsed > REVOKE_DEADLINE_S:
            break
        time.sleep(0.05)
    assert result.status == 403, f"still {result.status} {elapsed:.2f}s after the revoke"
    assert elapsed <= REVOKE_DEADLINE_S, f"blocked only {elapsed:.2f}s after the revoke"
    reference = assert_block_page(result, e2e, "mail.google.com", "alice")
    record = e2e.wait_for_record(lambda r: r["reference"] == reference)
    assert (record["reason"], record["approval_id"]) == ("approval-revoked", approval_id)


def test_large_post_to_an_allowed_site_arrives_intact(e2e: Stack) -> None:
    payload = os.urandom(100 * 1024)
    path = unique_path("upload")
    result = e2e.curl(e2e.url("example.org", path), method="POST", data=payload)
    assert result.status == 200, (result, e2e.diagnostics())
    assert result.text == f"origin-ok example.org:{e2e.origin.port} {path} received={len(payload)}"
    seen = e2e.origin.wait_for(lambda r: r.path == path)
    assert seen.method == "POST"
    assert seen.body == payload


def test_large_post_to_a_restricted_site_by_an_approved_user_arrives_intact(e2e: Stack) -> None:
    e2e.grant("alice")
    payload = os.urandom(100 * 1024)
    path = unique_path("attach")
    result = e2e.curl(e2e.url("mail.google.com", path), method="POST", data=payload)
    assert result.status == 200, (result, e2e.diagnostics())
    assert result.text.endswith(f" {path} received={len(payload)}")
    assert e2e.origin.wait_for(lambda r: r.path == path).body == payload


def test_post_to_a_restricted_site_without_approval_is_blocked(e2e: Stack) -> None:
    path = unique_path("attach")
    result = e2e.curl(e2e.url("mail.google.com", path), user="bob", method="POST", data=os.urandom(100 * 1024))
    assert_block_page(result, e2e, "mail.google.com", "bob")
    e2e.wait_until_logged_by_squid(path)
    assert not [r for r in e2e.origin.requests if r.path == path]


def test_connect_to_a_restricted_host_is_refused(e2e: Stack) -> None:
    result = e2e.curl("https://mail.google.com/", user="alice")
    assert result.connect_status == 403, (result, e2e.diagnostics())
    assert result.status in (0, 403)
    record = e2e.wait_for_record(lambda r: r["host"] == "mail.google.com")
    assert (record["decision"], record["reason"], record["user"]) == ("block", "no-approval", "alice")


def test_connect_tunnel_to_an_unrestricted_host_passes(e2e: Stack) -> None:
    path = unique_path("tunnel")
    result = e2e.curl(e2e.url("example.org", path), extra=["--proxytunnel"])
    assert result.connect_status == 200, (result, e2e.diagnostics())
    assert_origin_answer(result, e2e, "example.org", path)


def test_approvals_are_per_user(e2e: Stack) -> None:
    e2e.grant("alice")
    url = e2e.url("mail.google.com", "/inbox")
    assert_origin_answer(e2e.curl(url, user="alice"), e2e, "mail.google.com", "/inbox")
    assert_block_page(e2e.curl(url, user="bob"), e2e, "mail.google.com", "bob")
    # an approval for one restricted category does not open another
    drive = e2e.url("drive.google.com", "/files")
    assert_block_page(e2e.curl(drive, user="alice"), e2e, "drive.google.com", "alice")


@pytest.mark.parametrize("spelling", ["CORP\\Alice", "Alice@CORP", "ALICE"])
def test_domain_and_case_variants_of_the_username_use_the_same_approval(e2e: Stack, spelling: str) -> None:
    url = e2e.url("mail.google.com", "/inbox")
    blocked = e2e.curl(url, user=spelling)
    reference = assert_block_page(blocked, e2e, "mail.google.com", "alice")
    record = e2e.wait_for_record(lambda r: r["reference"] == reference)
    assert record["user"] == "alice"

    approval_id = e2e.grant("alice")
    assert_origin_answer(e2e.curl(url, user=spelling), e2e, "mail.google.com", "/inbox")
    record = e2e.wait_for_record(lambda r: r["decision"] == "pass" and r["host"] == "mail.google.com")
    assert (record["user"], record["approval_id"]) == ("alice", approval_id)


def test_unrestricted_site_passes(e2e: Stack) -> None:
    path = unique_path("page")
    result = e2e.curl(e2e.url("www.example.org", path), user="carol")
    assert_origin_answer(result, e2e, "www.example.org", path)
    assert "x-clearance-reference" not in result.headers
    record = e2e.wait_for_record(lambda r: r["host"] == "www.example.org")
    assert (record["decision"], record["reason"], record["status"]) == ("pass", "not-restricted", 204)


def test_non_ascii_username_uses_its_approval(e2e: Stack) -> None:
    e2e.grant("山田")
    result = e2e.curl(e2e.url("mail.google.com", "/inbox"), user="山田")
    assert_origin_answer(result, e2e, "mail.google.com", "/inbox")


def test_squids_access_log_shows_clearances_decision_and_the_pages_reference(e2e: Stack) -> None:
    """The ICAP answer carries X-Clearance-Decision, -Reason, -Category, -Service and a block's -Reference, so
    Squid's own access log (README's `logformat clearance`) says what Clearance decided, for passes too."""
    blocked_path, passed_path = unique_path("logged"), unique_path("logged-pass")
    result = e2e.curl(e2e.url("mail.google.com", blocked_path), user="alice")
    reference = assert_block_page(result, e2e, "mail.google.com", "alice")
    assert_origin_answer(e2e.curl(e2e.url("www.example.org", passed_path)), e2e, "www.example.org", passed_path)
    e2e.wait_until_logged_by_squid(blocked_path)
    e2e.wait_until_logged_by_squid(passed_path)
    lines = e2e.squid.access_log_lines()
    (blocked,) = [line for line in lines if blocked_path in line]
    (passed,) = [line for line in lines if passed_path in line]
    assert blocked.split()[-5:] == ["block", "no-approval", "webmail", "-", reference], blocked
    assert passed.split()[-5:] == ["pass", "not-restricted", "-", "-", "-"], passed
    record = e2e.wait_for_record(lambda r: r["reference"] == reference)  # the same reference in Clearance's log
    assert record["host"] == "mail.google.com"
