"""The approval lifecycle end to end: curl → real Squid 5 → `clearance serve` → local origin, policy changed
with the real CLI, under the real approval rules (department heads from a loaded directory).

Two serve instances share one Redis: Squid talks to the first (one worker, so its usage flushes have one
rhythm); the second (two workers) is asked directly over ICAP. One Redis, both servers, the origin and Squid
are shared by the module; each test starts from an emptied Redis.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.conftest import clearance_env
from tests.support.icap_client import exchange, reqmod, wait_until_synced
from tests.support.net import free_port, wait_for_port
from tests.support.origin import OriginServer
from tests.support.processes import stop_group
from tests.support.redis_server import running_redis
from tests.support.requirements import require_program
from tests.support.servers import fail_on_survivors, spawn_server
from tests.support.squid import CurlResult, SquidProxy

pytestmark = pytest.mark.squid

PREFIX = "clearance:"
HOSTNAMES = ["mail.google.com", "drive.google.com"]
REVOKE_DEADLINE_S = 1.0
FLUSH_INTERVAL_S = 3.0
WHY = "Exchanging documents with an overseas partner agency"

RULES = (
    "policy:\n  load_default_lists: false\n"
    "approvals:\n"
    "  require_department_head: true\n"
    "  min_justification_chars: 20\n"
    "  max_validity_days: 180\n"
    "  review_interval_days: 90\n"
    "  usage_flush_interval: {flush}\n"
    "server:\n  workers: {workers}\n"
    "logging:\n  format: json\n"
)
# The first instance (behind Squid) flushes usage every few seconds; the second one keeps its counts for the
# whole module, so its flushes never land inside the first one's write-free window (test 6), and it exempts a
# network in its config file (test 10).
CONFIG_FIRST = RULES.format(flush=FLUSH_INTERVAL_S, workers=1)
CONFIG_SECOND = RULES.format(flush=3600, workers=2) + (
    "exemptions:\n  - network: 10.99.0.0/16\n    categories: [webmail]\n    note: issued phones\n"
)

DIRECTORY = """user,name,department,groups,heads,delegates
alice,Alice Chan,Finance,finance-staff,,
bob,Bob Lee,Finance,finance-staff,,
hfin,Henry Fung,Finance,finance-staff,Finance,
"""


@dataclass
class Instance:
    port: int
    log: Path
    proc: subprocess.Popen[bytes]
    offset: int = 0  # where the current test's part of the log starts

    def records(self) -> list[dict[str, Any]]:
        with self.log.open("rb") as handle:
            handle.seek(self.offset)
            text = handle.read().decode("utf-8")
        lines = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
        return [line for line in lines if line.get("event") == "icap"]

    def wait_for_record(self, predicate: Callable[[dict[str, Any]], bool], timeout: float = 5.0) -> dict[str, Any]:
        """Servers write log lines in batches, just after answering."""
        deadline = time.monotonic() + timeout
        while True:
            found = [record for record in self.records() if predicate(record)]
            if found:
                return found[-1]
            if time.monotonic() > deadline:
                raise AssertionError(f"no matching log line in {self.log}:\n{self.log.read_text()[-3000:]}")
            time.sleep(0.05)


@dataclass
class Lab:
    redis_url: str
    env: dict[str, str]
    first: Instance
    second: Instance
    origin: OriginServer
    squid: SquidProxy
    workdir: Path

    def cli(self, *args: str, check: bool = True, sync: bool = True) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [sys.executable, "-m", "icap_server", *args], env=self.env, capture_output=True, text=True, timeout=60
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"clearance {' '.join(args)} exited {proc.returncode}: {proc.stderr}")
        if sync:
            self.wait_until_synced()
        return proc

    def wait_until_synced(self, timeout: float = 2.0) -> None:
        for instance in (self.first, self.second):
            wait_until_synced(instance.port, self.redis_url, timeout=timeout)

    def grant(self, user: str, category: str = "webmail") -> str:
        out = self.cli(
            "approvals",
            "grant",
            "--user",
            user,
            "--category",
            category,
            "--days",
            "30",
            "--approver",
            "hfin",
            "--justification",
            WHY,
        ).stdout
        approval_id = out.strip()
        assert re.fullmatch(r"A\d+", approval_id), out
        return approval_id

    def url(self, host: str, label: str) -> str:
        return f"http://{host}:{self.origin.port}/{label}-{uuid.uuid4().hex[:10]}"

    def curl(self, url: str, user: str = "alice") -> CurlResult:
        return self.squid.curl(url, user=user)

    def diagnostics(self) -> str:
        return (
            f"--- first serve log\n{self.first.log.read_text(encoding='utf-8')[-2000:]}\n"
            f"--- squid cache.log\n{self.squid.cache_log_text()[-2000:]}"
        )


def start_instance(base: Path, name: str, config_text: str, redis_url: str) -> Instance:
    config = base / f"{name}.yaml"
    config.write_text(config_text, encoding="utf-8")
    port = free_port()
    log_path = base / f"{name}.log"
    command = [sys.executable, "-m", "icap_server", "serve", "--listen", f"127.0.0.1:{port}"]  # workers: config
    return Instance(port, log_path, spawn_server(command, clearance_env(redis_url, config), log_path))


def stop_instance(instance: Instance) -> list[str]:
    """Stop the instance's whole process group; what outlived the SIGTERM ([] when it stopped cleanly)."""
    return stop_group(instance.proc)


@pytest.fixture(scope="module")
def shared_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    require_program("squid")
    require_program("curl")
    base = tmp_path_factory.mktemp("lifecycle-squid")
    admin_config = base / "admin.yaml"
    admin_config.write_text(CONFIG_FIRST, encoding="utf-8")
    with running_redis(base / "redis") as redis_url:
        first = start_instance(base, "first", CONFIG_FIRST, redis_url)
        second = start_instance(base, "second", CONFIG_SECOND, redis_url)
        try:
            wait_for_port(first.port)  # Squid must not ask for OPTIONS before the server listens
            wait_for_port(second.port)
            with OriginServer() as origin, SquidProxy(first.port, HOSTNAMES, base / "squid") as squid:
                yield Lab(redis_url, clearance_env(redis_url, admin_config), first, second, origin, squid, base)
        finally:
            fail_on_survivors({"first instance": stop_instance(first), "second instance": stop_instance(second)})


@pytest.fixture
def lab(shared_lab: Lab, tmp_path: Path) -> Lab:
    """The shared stack with fresh policy: the directory, mail.google.com webmail, drive.google.com cloud-storage.

    Redis is emptied, but the policy version jumps ahead (so every server reloads rather than mistake the new
    history for the one it holds) and approval numbers carry on (so a count a server flushes late for an old
    approval never lands on a new one with the same id).
    """
    client = redis.Redis.from_url(shared_lab.redis_url, decode_responses=True)
    version = int(client.get(PREFIX + "policy:version") or 0)
    sequence = int(client.get(PREFIX + "approval:seq") or 0)
    client.flushall()
    client.set(PREFIX + "approval:seq", sequence)
    client.set(PREFIX + "policy:version", version + 1000)
    client.close()
    directory = tmp_path / "directory.csv"
    directory.write_text(DIRECTORY, encoding="utf-8")
    shared_lab.cli("directory", "load", str(directory), sync=False)
    shared_lab.cli("categories", "add", "webmail", "mail.google.com", sync=False)
    shared_lab.cli("categories", "add", "cloud-storage", "drive.google.com", sync=False)
    shared_lab.wait_until_synced(timeout=5.0)
    for instance in (shared_lab.first, shared_lab.second):
        instance.offset = instance.log.stat().st_size
    shared_lab.origin.clear()
    return shared_lab


def icap_blocked(answer: bytes) -> bool:
    head = answer.split(b"\r\n", 1)[0]
    return head == b"ICAP/1.0 200 OK" and b"HTTP/1.1 403" in answer


def icap_reference(answer: bytes) -> str:
    found = re.search(rb"X-Clearance-Reference: ([0-9a-f]+)", answer, re.IGNORECASE)
    assert found, answer[:500]
    return found.group(1).decode()


# ---- 5. a revoke reaches both instances within a second ----------------------------------------


def test_revoke_blocks_through_squid_and_on_a_second_instance_within_a_second(lab: Lab) -> None:
    approval_id = lab.grant("alice")
    before = lab.curl(lab.url("mail.google.com", "inbox"))
    assert before.status == 200, (before, lab.diagnostics())
    probe = reqmod(f"http://mail.google.com:{lab.origin.port}/inbox", user="alice")
    (answer,) = exchange(lab.second.port, probe)
    assert answer.startswith(b"ICAP/1.0 204"), answer[:300]

    lab.cli("approvals", "revoke", approval_id, "--by", "hfin", "--reason", "no longer needed", sync=False)
    revoked_at = time.monotonic()
    squid_blocked: tuple[float, CurlResult] | None = None
    second_blocked: tuple[float, bytes] | None = None
    blocked_in_a_row = 0  # the second instance has two workers: fresh connections reach either
    while squid_blocked is None or blocked_in_a_row < 8:
        elapsed = time.monotonic() - revoked_at
        if elapsed > REVOKE_DEADLINE_S + 2:
            break
        if squid_blocked is None:
            result = lab.curl(lab.url("mail.google.com", "after"))
            if result.status == 403:
                squid_blocked = (time.monotonic() - revoked_at, result)
            else:
                assert result.status == 200, (result, lab.diagnostics())
        if blocked_in_a_row < 8:
            (answer,) = exchange(lab.second.port, probe)
            if icap_blocked(answer):
                if blocked_in_a_row == 0:
                    second_blocked = (time.monotonic() - revoked_at, answer)
                blocked_in_a_row += 1
            else:
                assert answer.startswith(b"ICAP/1.0 204"), answer[:300]
                blocked_in_a_row, second_blocked = 0, None
        time.sleep(0.01)

    assert squid_blocked is not None, "Squid still let the request through after the revoke"
    assert squid_blocked[0] <= REVOKE_DEADLINE_S, f"blocked through Squid only {squid_blocked[0]:.2f}s after"
    assert second_blocked is not None and blocked_in_a_row >= 8, "the second instance never blocked on every worker"
    assert second_blocked[0] <= REVOKE_DEADLINE_S, f"the second instance blocked only {second_blocked[0]:.2f}s after"

    result = squid_blocked[1]
    assert "Access to this site is blocked" in result.text
    reference = result.headers["x-clearance-reference"]
    record = lab.first.wait_for_record(lambda r: r["reference"] == reference)
    assert (record["decision"], record["reason"], record["approval_id"]) == ("block", "approval-revoked", approval_id)
    assert (record["user"], record["client_ip"]) == ("alice", "127.0.0.1")
    reference = icap_reference(second_blocked[1])
    record = lab.second.wait_for_record(lambda r: r["reference"] == reference)
    assert (record["decision"], record["reason"], record["approval_id"]) == ("block", "approval-revoked", approval_id)


# ---- 6. usage is counted off the request path ---------------------------------------------------

WRITE_COUNTERS = ("hincrby", "eval", "evalsha", "hset")


def write_counters(client: redis.Redis) -> dict[str, int]:
    """Calls so far of the commands a usage flush sends, and Redis's count of changes since start."""
    stats = client.info("commandstats")
    counters = {name: int(stats.get(f"cmdstat_{name}", {}).get("calls", 0)) for name in WRITE_COUNTERS}
    counters["changes"] = int(client.info("persistence")["rdb_changes_since_last_save"])
    return counters


def usage_line(lab: Lab, approval_id: str) -> str:
    for line in lab.cli("approvals", "show", approval_id, sync=False).stdout.splitlines():
        if line.startswith("used:"):
            return line.partition(":")[2].strip()
    raise AssertionError(f"no usage line for {approval_id}")


def test_usage_is_counted_in_memory_and_written_later_in_one_flush(lab: Lab) -> None:
    requests = 5
    measured = lab.grant("alice")
    pacer = lab.grant("bob")
    client = redis.Redis.from_url(lab.redis_url, decode_responses=True)
    try:
        # Find the flush rhythm of the instance behind Squid: a pass on `pacer` shows up at its next flush.
        assert lab.curl(lab.url("mail.google.com", "pace"), user="bob").status == 200
        deadline = time.monotonic() + FLUSH_INTERVAL_S + 3
        while client.hget(PREFIX + "usage:count", pacer) is None:
            assert time.monotonic() < deadline, "the pacing request was never counted"
            time.sleep(0.01)
        flushed_at = time.monotonic()  # the next flush is about FLUSH_INTERVAL_S from here
        before = write_counters(client)

        for _ in range(requests):
            result = lab.curl(lab.url("mail.google.com", "counted"))
            assert result.status == 200, (result, lab.diagnostics())
        # The answers came back, yet nothing was written: the requests did not wait for Redis.
        assert usage_line(lab, measured) == "0 times, last -"
        assert client.hget(PREFIX + "usage:count", measured) is None
        assert write_counters(client) == before, "a Redis write happened on the request path"
        window = time.monotonic() - flushed_at
        assert window < FLUSH_INTERVAL_S - 0.3, f"the checks took {window:.1f}s, longer than the flush interval"
        assert len([r for r in lab.origin.requests if r.path.startswith("/counted")]) == requests

        deadline = time.monotonic() + FLUSH_INTERVAL_S + 3
        while (line := usage_line(lab, measured)).startswith("0 times"):
            assert time.monotonic() < deadline, f"usage never flushed: {line}"
            time.sleep(0.2)
        assert line.startswith(f"{requests} times, last "), line
        assert re.fullmatch(rf"{requests} times, last \d{{4}}-\d\d-\d\d \d\d:\d\d", line), line
        last = datetime.fromisoformat(str(client.hget(PREFIX + "usage:last", measured)))
        assert datetime.now(UTC) - timedelta(seconds=30) < last <= datetime.now(UTC)
        after = write_counters(client)
        assert after["hincrby"] > before["hincrby"] and after["changes"] > before["changes"]
        assert usage_line(lab, pacer).startswith("1 times")
        listing = lab.cli("approvals", "list", "--user", "alice", sync=False).stdout.splitlines()
        (row,) = [line for line in listing if line.startswith(measured + " ")]
        assert row.split()[-1] == str(requests)
    finally:
        client.close()


# ---- 10. exempt networks ----------------------------------------------------------------------


def test_request_from_an_exempt_network_passes_without_approval_and_is_logged_as_exempt(lab: Lab) -> None:
    blocked = lab.curl(lab.url("mail.google.com", "before"), user="bob")
    assert blocked.status == 403, (blocked, lab.diagnostics())
    record = lab.first.wait_for_record(lambda r: r["reference"] == blocked.headers["x-clearance-reference"])
    assert (record["reason"], record["exemption_id"]) == ("no-approval", None)

    exemption_id = lab.cli("exemptions", "add", "--network", "127.0.0.0/8", "--note", "test lab").stdout.strip()
    assert re.fullmatch(r"E\d+", exemption_id), exemption_id
    url = lab.url("mail.google.com", "exempt")
    result = lab.curl(url, user="bob")
    assert result.status == 200, (result, lab.diagnostics())
    path = url.split(str(lab.origin.port), 1)[1]
    assert lab.origin.wait_for(lambda r: r.path == path).method == "GET"
    record = lab.first.wait_for_record(lambda r: r["decision"] == "pass" and r["host"] == "mail.google.com")
    assert (record["reason"], record["exemption_id"], record["approval_id"]) == ("exempt", exemption_id, None)
    assert (record["user"], record["client_ip"], record["category"]) == ("bob", "127.0.0.1", "webmail")
    assert record["status"] == 204

    # an exemption limited to one category opens that one only
    lab.cli("exemptions", "remove", exemption_id)
    lab.cli("exemptions", "add", "--network", "127.0.0.0/8", "--category", "cloud-storage")
    assert lab.curl(lab.url("mail.google.com", "limited"), user="bob").status == 403
    assert lab.curl(lab.url("drive.google.com", "limited"), user="bob").status == 200

    # an exemption from the config file (the second instance's), as the proxy reports the client address
    def ask(client_ip: str) -> bytes:
        message = reqmod("http://mail.google.com/inbox", user="carol", extra_headers=(f"X-Client-IP: {client_ip}",))
        (answer,) = exchange(lab.second.port, message)
        return answer

    assert ask("10.99.1.2").startswith(b"ICAP/1.0 204")
    record = lab.second.wait_for_record(lambda r: r["client_ip"] == "10.99.1.2")
    assert (record["decision"], record["reason"], record["exemption_id"]) == ("pass", "exempt", "C1")
    assert icap_blocked(ask("10.98.1.2"))
