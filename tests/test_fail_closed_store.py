"""Never fail open on a store problem (issue 9, acceptance 1 and the reconnect part of 8).

A prober sends REQMODs for a listed host (mail.google.com, in the shipped webmail list) as bob, who has no
approval, the whole time Redis is flushed, replaced by an empty one, or comes up empty after `serve`: not one
answer may be a pass. Afterwards the policy is back by the documented path: the worker re-initialised the
store (audited, the default lists re-seeded), and an approval granted then works.
"""

from __future__ import annotations

import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.conftest import ServerHandle, StartServer, clearance_env
from tests.support.cli_zygote import run_clearance
from tests.support.icap_client import verdict as icap_verdict
from tests.support.net import free_port, wait_for_port
from tests.support.redis_server import running_redis
from tests.support.waiting import wait_until

SERVE = (
    "policy:\n  load_default_lists: true\n"
    "approvals:\n  require_department_head: false\n  min_justification_chars: 0\n"
    "logging:\n  format: json\n"
)
LISTED = "https://mail.google.com/"
STORE_ONLY = "https://mail.store-only.example/"  # in no shipped service: only ever in the store
GRANT = ("approvals", "grant", "--user", "alice", "--category", "webmail", "--days", "1",
         "--approver", "head", "--reason", "after the reset")  # fmt: skip

pytestmark = pytest.mark.usefixtures("cli_zygote")  # `clearance()` runs in a fork of it


@pytest.fixture
def admin_config(tmp_path: Path) -> Path:
    """The admin commands' config: the same lists as the server's, so a reset or an init loads them too."""
    path = tmp_path / "admin.yaml"
    path.write_text(SERVE, encoding="utf-8")
    return path


def verdict(port: int, user: str, url: str = LISTED) -> str:
    """"pass", "block", or the status line of anything else (`icap_client.verdict`)."""
    return icap_verdict(port, user, url)


class Prober:
    """Probes continuously, each on a fresh connection, from start to stop; `seen` counts the verdicts."""

    def __init__(self, port: int, user: str = "bob") -> None:
        self.port = port
        self.user = user
        self.seen: Counter[str] = Counter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._probe, daemon=True)

    def _probe(self) -> None:
        while not self._stop.is_set():
            try:
                self.seen[verdict(self.port, self.user)] += 1
            except (OSError, AssertionError) as error:
                self.seen[f"error: {error!r}"] += 1

    def start(self) -> Counter[str]:
        self._thread.start()
        wait_until(lambda: self.seen["block"] >= 20, timeout=10, what="the prober to run")
        return self.seen

    def more(self, probes: int = 20) -> None:
        """Wait for `probes` more blocks (the probing went on after whatever just happened)."""
        target = self.seen["block"] + probes
        wait_until(lambda: self.seen["block"] >= target, timeout=10, what=f"{probes} more probes")

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=15)


@contextmanager
def probing(port: int) -> Iterator[Prober]:
    prober = Prober(port)
    prober.start()
    try:
        yield prober
    finally:
        prober.stop()


def clearance(url: str, config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`clearance ARGS…`: a fork of the session's CLI zygote (these tests are about the store, not the process)."""
    return run_clearance(args, clearance_env(url, config))


def run_cli(url: str, config: Path, *args: str) -> str:
    proc = clearance(url, config, *args)
    assert proc.returncode == 0, f"clearance {' '.join(args)} exited {proc.returncode}: {proc.stderr}"
    return proc.stdout


def audit_actions(url: str) -> list[str]:
    client = redis.Redis.from_url(url, decode_responses=True)
    try:
        entries: Any = client.xrange("clearance:audit")
        return [str(fields["action"]) for _, fields in entries]
    finally:
        client.close()


def recovered(server: ServerHandle, url: str, config: Path) -> None:
    """The documented path back: re-initialised (audited, lists re-seeded), blocking, and a new grant works."""
    wait_until(lambda: verdict(server.port, "alice") == "block", timeout=10, what="the lost approval to be gone")
    assert "store-initialise" in audit_actions(url)
    assert "webmail" in run_cli(url, config, "categories", "lookup", LISTED)
    run_cli(url, config, *GRANT)
    wait_until(lambda: verdict(server.port, "alice") == "pass", timeout=2, what="a grant after the recovery")
    assert verdict(server.port, "bob") == "block"


def granted_and_probed(server: ServerHandle, url: str, config: Path) -> None:
    run_cli(url, config, *GRANT)
    wait_until(lambda: verdict(server.port, "alice") == "pass", timeout=5, what="alice's approval")
    assert verdict(server.port, "bob") == "block"


def test_flushall_under_load_never_passes_a_listed_host(
    start_icap_server: StartServer, redis_url: str, sync_redis: redis.Redis, admin_config: Path
) -> None:
    server = start_icap_server(SERVE)
    granted_and_probed(server, redis_url, admin_config)
    with probing(server.port) as prober:
        sync_redis.flushall()
        server.wait_for_log("store_reset")
        recovered(server, redis_url, admin_config)
        prober.more()
    print(f"FLUSHALL: {dict(prober.seen)} probes")
    assert set(prober.seen) == {"block"}, prober.seen
    reset = server.wait_for_log("store_reset")
    assert reset["level"] == "error" and "vanished" in str(reset["problem"])


def test_redis_replaced_by_an_empty_one_never_passes_a_listed_host(
    start_icap_server: StartServer, tmp_path: Path, admin_config: Path
) -> None:
    port = free_port()
    with running_redis(tmp_path / "first", port=port) as url:
        server = start_icap_server(SERVE, redis=url)
        granted_and_probed(server, url, admin_config)
        prober = Prober(server.port)
        prober.start()
    try:
        prober.more()  # Redis away: the last-known-good policy still blocks
        with running_redis(tmp_path / "second", port=port) as url:
            recovered(server, url, admin_config)
            prober.more()
    finally:
        prober.stop()
    print(f"Redis replaced: {dict(prober.seen)} probes")
    assert set(prober.seen) == {"block"}, prober.seen
    assert server.events("store_initialised")


def test_serve_on_a_redis_that_comes_up_empty_later_blocks_from_the_first_request(
    start_icap_server: StartServer, tmp_path: Path, admin_config: Path
) -> None:
    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"
    server = start_icap_server(SERVE + "server:\n  startup_timeout: 0.5\n", redis=url, wait=False)
    wait_for_port(server.port, timeout=30)
    with probing(server.port) as prober, running_redis(tmp_path / "late", port=port):
        wait_until(
            lambda: any(line.get("reason") == "no-approval" for line in server.events("icap")),
            timeout=15,
            what="blocks by the seeded webmail list",
        )
        assert "store-initialise" in audit_actions(url)
        prober.more()
    assert set(prober.seen) == {"block"}, prober.seen
    reasons = {line.get("reason") for line in server.events("icap")}
    assert reasons <= {"policy-unavailable", "no-approval"} and "no-approval" in reasons


def test_serve_on_an_empty_redis_blocks_from_the_first_request(start_icap_server: StartServer) -> None:
    server = start_icap_server(SERVE)
    assert verdict(server.port, "bob") == "block"
    assert server.wait_for_log("icap")["reason"] == "no-approval"


def test_a_grant_after_redis_restarts_reaches_the_worker_within_2s(
    start_icap_server: StartServer, tmp_path: Path, admin_config: Path
) -> None:
    """Redis down long enough for the back-off to reach its cap, then back with its data: a grant shows in 2 s."""
    port = free_port()
    with running_redis(tmp_path / "data", port=port, persist=True) as url:
        server = start_icap_server(SERVE, redis=url)
        assert verdict(server.port, "alice") == "block"
    wait_until(lambda: len(server.events("policy_sync_interrupted")) >= 7, timeout=90, what="the back-off to grow")
    with running_redis(tmp_path / "data", port=port, persist=True) as url:
        run_cli(url, admin_config, *GRANT)
        granted = time.monotonic()
        wait_until(lambda: verdict(server.port, "alice") == "pass", timeout=2, what="the grant after the restart")
        print(f"grant reached the worker {time.monotonic() - granted:.2f}s after the CLI returned")
        assert audit_actions(url).count("store-initialise") == 1  # the same store: never re-seeded
    delays = [float(str(line["retry_in_s"])) for line in server.events("policy_sync_interrupted")]
    assert max(delays) <= 1.0, delays


def test_store_reset_is_audited_and_the_workers_follow_it(
    start_icap_server: StartServer, redis_url: str, admin_config: Path
) -> None:
    """A deliberate wipe: the workers adopt it, the empty one too (an accident would be held, not adopted)."""
    server = start_icap_server(SERVE.replace("logging:", "server:\n  workers: 2\nlogging:"))
    granted_and_probed(server, redis_url, admin_config)
    assert "add --yes" in cli_error(redis_url, admin_config, "store", "reset")
    assert "new epoch" in run_cli(redis_url, admin_config, "store", "reset", "--yes")
    wait_until(lambda: all_say(server, "alice", "block"), timeout=2, what="both workers to drop the approval")
    assert all_say(server, "bob", "block")  # the default lists, loaded again
    run_cli(redis_url, admin_config, "categories", "add", "webmail", "mail.store-only.example")
    wait_until(lambda: all_say(server, "bob", "block", url=STORE_ONLY), timeout=2, what="the added entry")
    run_cli(redis_url, admin_config, "store", "reset", "--yes", "--no-defaults")
    wait_until(lambda: all_say(server, "bob", "pass", url=STORE_ONLY), timeout=2, what="the workers to adopt it")
    # The shipped catalogue comes with the code, not the store: it blocks whatever the store holds
    # (`policy.load_default_lists: false` is how to run without it).
    assert all_say(server, "bob", "block")
    actions = audit_actions(redis_url)
    assert actions.count("store-reset") == 2 and "grant" in actions  # the history survives a reset
    status = run_cli(redis_url, admin_config, "store", "status")
    assert "reset" in status and "no lists" in status
    resets = server.events("store_reset")
    assert resets and all(line["level"] == "warning" and line["deliberate"] for line in resets)


def all_say(server: ServerHandle, user: str, expected: str, probes: int = 8, url: str = LISTED) -> bool:
    """Fresh connections, spread over the workers by the kernel, all give the expected verdict."""
    return all(verdict(server.port, user, url) == expected for _ in range(probes))


def cli_error(url: str, config: Path, *args: str) -> str:
    proc = clearance(url, config, *args)
    assert proc.returncode == 2 and len(proc.stderr.splitlines()) == 1, (proc.returncode, proc.stderr)
    return proc.stderr
