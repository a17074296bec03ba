"""Failover: two `clearance serve` instances on one Redis behind a real Squid, one killed under load.

Squid has one essential (bypass=off) `icap_service` per instance, grouped in `adaptation_service_set
clearance_set A B` (tests/support/squid.py `backup_icap_ports`). Four client threads send requests through
Squid (thread 0 POSTs 64 KiB to an allowed site; the others GET an approved, a blocked and an unrestricted
one); instance A's process group is SIGSTOPped (so each thread has a request open on it), then SIGKILLed.

Asserted: every answer outside the in-flight window is the expected decision (blocked stays blocked, allowed
passes); inside it only the POST whose body Squid had begun to send to A may fail, as Squid's 500 (GETs are
retried on B); no blocked request reaches the origin; both instances decided each (user, host) the same way;
Squid's access.log carries Clearance's decision for every answered request; Squid took A out of use (down
after its failed OPTIONS refresh, or suspended by a failure limit) while B carried everything.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import clearance_env
from tests.support.icap_client import wait_until_synced
from tests.support.net import free_port, wait_for_port
from tests.support.origin import OriginServer
from tests.support.processes import group_members, stop_group
from tests.support.redis_server import running_redis
from tests.support.requirements import require_program
from tests.support.servers import fail_on_survivors, serve_command, spawn_server
from tests.support.squid import SquidProxy
from tests.support.waiting import wait_until

pytestmark = pytest.mark.squid

# Squid refreshes a service's OPTIONS when they expire, but never sooner than 30 s after the last refresh (a
# hard-coded gap): with a shorter Options-TTL *both* services go stale and every request fails. 30 s makes
# A's refresh fail during the run, so the test covers A "down" (skipped) as well as A merely refusing.
OPTIONS_TTL_S = 30
CONFIG = (
    "organisation:\n  name_en: Test Department\n  name_zh: 測試部門\n"
    "policy:\n  load_default_lists: false\n"
    "approvals:\n  require_department_head: false\n  min_justification_chars: 0\n"
    "logging:\n  format: json\n"
    f"server:\n  options_ttl: {OPTIONS_TTL_S}\n"
)
HOSTNAMES = ["mail.google.com", "www.example.org"]
CLIENT_THREADS = 4
BEFORE_KILL_S = 3.0
# (squid.conf lines after the harness's own, how long the load goes on after the kill, what cache.log must say)
VARIANTS = {
    # The harness's `icap_service_failure_limit -1`: A is tried (and refused) per request until its OPTIONS refresh
    # fails, then it is "down" for icap_service_revival_delay; the load runs past that refresh.
    "no-failure-limit": (
        (),
        OPTIONS_TTL_S + 5.0 - BEFORE_KILL_S,
        "essential ICAP service is down after an options fetch failure",
    ),
    # A failure limit suspends A after a few refused connections, long before its OPTIONS are due.
    "failure-limit": (
        ("icap_service_failure_limit 3 in 10 seconds",),
        6.0,
        "suspending ICAP service for too many failures",
    ),
}
FREEZE_S = 0.5  # A is SIGSTOPped this long before its SIGKILL: every client thread's request is then open on A
PAUSE_S = 0.02  # between one thread's requests: steady load without starving the 2-core machine
REQUEST_TIMEOUT_S = 20.0

# (user, host) -> what Clearance must decide, as the client sees it and as Squid's access.log shows it
EXPECTED = {
    ("alice", "mail.google.com"): (200, "pass approved webmail"),
    ("bob", "mail.google.com"): (403, "block no-approval webmail"),
    ("carol", "www.example.org"): (200, "pass not-restricted -"),
    ("dave", "www.example.org"): (200, "pass not-restricted -"),  # dave POSTs POST_BYTES, the others GET
}
POST_USER = "dave"
POST_BYTES = 64 * 1024


@dataclass(frozen=True)
class Outcome:
    user: str
    host: str
    path: str
    started: float  # time.monotonic()
    ended: float
    status: int  # 0: no HTTP answer at all
    reference: str  # X-Clearance-Reference on a block page
    body: str
    error: str = ""

    @property
    def right(self) -> bool:
        status, _decision = EXPECTED[(self.user, self.host)]
        if self.status != status:  # 0 (no answer) or Squid's 500 error page: a client-visible error
            return False
        if status == 403:
            return "Access to this site is blocked" in self.body and bool(self.reference)
        posted = f" received={POST_BYTES}" if self.user == POST_USER else ""
        return self.body.startswith(f"origin-ok {self.host}:") and self.body.endswith(f"{self.path}{posted}")

    def overlaps(self, moment: float) -> bool:
        return self.started <= moment <= self.ended


def proxy_request(proxy_port: int, user: str, url: str) -> tuple[int, str, str]:
    """One GET (POST for POST_USER) through the proxy on a fresh connection: (status, X-Clearance-Reference, body)."""
    credentials = base64.b64encode(f"{user}:anypass".encode()).decode()
    conn = http.client.HTTPConnection("127.0.0.1", proxy_port, timeout=REQUEST_TIMEOUT_S)
    try:
        headers = {"Proxy-Authorization": f"Basic {credentials}", "Connection": "close"}
        if user == POST_USER:
            conn.request("POST", url, body=b"p" * POST_BYTES, headers=headers)
        else:
            conn.request("GET", url, headers=headers)
        response = conn.getresponse()
        body = response.read().decode("utf-8", errors="replace")
        return response.status, response.getheader("X-Clearance-Reference") or "", body
    finally:
        conn.close()


class Load:
    """CLIENT_THREADS threads cycling through EXPECTED's (user, host) pairs, each request on a unique path."""

    def __init__(self, proxy_port: int, origin_port: int) -> None:
        self.proxy_port = proxy_port
        self.origin_port = origin_port
        self.outcomes: list[Outcome] = []
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.threads = [threading.Thread(target=self._run, args=(n,), daemon=True) for n in range(CLIENT_THREADS)]

    def __enter__(self) -> Load:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopping.set()
        for thread in self.threads:
            thread.join(timeout=REQUEST_TIMEOUT_S + 5)
        assert not any(thread.is_alive() for thread in self.threads), "a client thread hung"

    def _run(self, n: int) -> None:
        """Thread 0 only POSTs (so one POST is always open on the frozen A), the others cycle the GET pairs."""
        pairs = [pair for pair in EXPECTED if (pair[0] == POST_USER) == (n == 0)]
        i = n
        while not self.stopping.is_set():
            user, host = pairs[i % len(pairs)]
            i += 1
            path = f"/fo-{user}-{uuid.uuid4().hex[:12]}"
            started = time.monotonic()
            try:
                status, reference, body = proxy_request(
                    self.proxy_port, user, f"http://{host}:{self.origin_port}{path}"
                )
                error = ""
            except (OSError, http.client.HTTPException) as exc:
                status, reference, body, error = 0, "", "", repr(exc)
            outcome = Outcome(user, host, path, started, time.monotonic(), status, reference, body[:300], error)
            with self.lock:
                self.outcomes.append(outcome)
            self.stopping.wait(PAUSE_S)

    def snapshot(self) -> list[Outcome]:
        with self.lock:
            return list(self.outcomes)


@dataclass
class Instance:
    name: str
    port: int
    proc: subprocess.Popen[bytes]
    log: Path

    def icap_records(self) -> list[dict[str, object]]:
        records = []
        for line in self.log.read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith("{"):
                record = json.loads(line)
                if record.get("event") == "icap" and record.get("method") == "REQMOD":
                    records.append(record)
        return records


@contextlib.contextmanager
def two_instances(base: Path, env: dict[str, str]) -> Iterator[tuple[Instance, Instance]]:
    instances = []
    try:
        for name in ("a", "b"):
            port = free_port()
            log = base / f"serve-{name}.log"
            instances.append(Instance(name, port, spawn_server(serve_command(port, CONFIG), env, log), log))
        for instance in instances:
            wait_for_port(instance.port)
        yield instances[0], instances[1]
    finally:
        fail_on_survivors({f"clearance serve {i.name}": stop_group(i.proc) for i in instances})


def clearance(env: dict[str, str], *args: str) -> str:
    proc = subprocess.run(
        [sys.executable, "-m", "icap_server", *args], env=env, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, f"clearance {' '.join(args)} exited {proc.returncode}: {proc.stderr}"
    return proc.stdout


def access_log_fields(squid: SquidProxy, paths: set[str], timeout: float = 10.0) -> dict[str, list[str]]:
    """path -> its access.log line's fields, once every path has one (Squid writes a line as a transaction ends)."""
    deadline = time.monotonic() + timeout
    while True:
        found = {}
        for line in squid.access_log_lines():
            fields = line.split()
            if len(fields) > 7 and "/fo-" in fields[6]:  # %ru
                found[fields[6][fields[6].index("/fo-") :]] = fields
        if paths <= found.keys() or time.monotonic() > deadline:
            return found
        time.sleep(0.1)


def decisions(instance: Instance) -> dict[tuple[object, object], set[tuple[object, object]]]:
    """(user, host) -> every (decision, reason) the instance logged for it."""
    found: dict[tuple[object, object], set[tuple[object, object]]] = {}
    for record in instance.icap_records():
        if str(record.get("host")) in HOSTNAMES:
            found.setdefault((record["user"], record["host"]), set()).add((record["decision"], record["reason"]))
    return found


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_killing_one_of_two_instances_under_load_keeps_decisions_and_traffic(tmp_path: Path, variant: str) -> None:
    extra_config, after_kill_s, down_message = VARIANTS[variant]
    require_program("squid")
    config = tmp_path / "clearance.yaml"
    config.write_text(CONFIG, encoding="utf-8")
    with running_redis(tmp_path / "redis") as redis_url:
        env = clearance_env(redis_url, config)
        clearance(env, "categories", "add", "webmail", "mail.google.com")
        clearance(
            env,
            "approvals",
            "grant",
            "--user",
            "alice",
            "--category",
            "webmail",
            "--days",
            "7",
            "--approver",
            "head",
            "--reason",
            "failover test",
        )
        with (
            two_instances(tmp_path, env) as (a, b),
            OriginServer() as origin,
            SquidProxy(
                a.port, HOSTNAMES, tmp_path / "squid", backup_icap_ports=[b.port], extra_config=extra_config
            ) as squid,
        ):
            for instance in (a, b):
                wait_until_synced(instance.port, redis_url)
            conf = squid.conf_path.read_text()
            assert "adaptation_service_set clearance_set clearance_req clearance_req_2\n" in conf, conf
            assert f"icap://127.0.0.1:{b.port}/reqmod bypass=off" in conf, conf

            with Load(squid.port, origin.port) as load:
                time.sleep(BEFORE_KILL_S)
                served_by_a = len(a.icap_records())
                # Freeze A first, so the requests it has taken are still open on it when it dies: a known
                # in-flight window (one request per client thread) rather than whatever the kill happens to hit.
                os.killpg(a.proc.pid, signal.SIGSTOP)
                time.sleep(FREEZE_S)
                os.killpg(a.proc.pid, signal.SIGKILL)
                killed_at = time.monotonic()
                a.proc.wait(timeout=10)
                deadline = time.monotonic() + 10
                while group_members(a.proc.pid) and time.monotonic() < deadline:
                    time.sleep(0.02)
                assert not group_members(a.proc.pid), "instance A's workers outlived SIGKILL"
                time.sleep(after_kill_s)
            outcomes = load.snapshot()

            before = [o for o in outcomes if o.ended < killed_at]
            in_flight = [o for o in outcomes if o.overlaps(killed_at)]
            after = [o for o in outcomes if o.started > killed_at]
            wrong = [o for o in outcomes if not o.right]
            wrong_in_flight = [o for o in wrong if o.overlaps(killed_at)]
            summary = (
                f"requests {len(outcomes)}: before kill {len(before)}, in flight at kill {len(in_flight)}, "
                f"after {len(after)}; wrong {len(wrong)} (in flight {len(wrong_in_flight)}); "
                f"A served {served_by_a} REQMODs before the kill, B served {len(b.icap_records())} in all; "
                f"slowest after the kill {max((o.ended - o.started for o in after), default=0):.3f}s"
            )
            print(f"\nfailover: {summary}")
            for o in wrong[:10]:
                print(f"  wrong at kill{o.started - killed_at:+.3f}s: {o.user} {o.host} {o.status} {o.error}")
            if wrong:
                print(f"  last wrong at kill{wrong[-1].started - killed_at:+.3f}s")
            diagnostics = f"{summary}\n--- squid cache.log\n{squid.cache_log_text()[-3000:]}"

            assert served_by_a > 0 and len(before) > 0, diagnostics  # A (the set's first) carried the load
            assert len(after) >= 3 * CLIENT_THREADS, diagnostics  # and the load went on after the kill
            assert len(in_flight) == CLIENT_THREADS, diagnostics  # every thread was held on the frozen A
            # Errors only inside the in-flight window (requests open at the kill); everything later is right.
            assert wrong == wrong_in_flight, "\n".join([diagnostics, *map(str, wrong)])
            # Inside it, Squid retried every bodiless request on B; only a request whose body it had begun to send
            # to A (thread 0's POST) may fail, and then as Squid's error page, never passed unchecked.
            assert all(o.user == POST_USER and o.status == 500 for o in wrong_in_flight), diagnostics
            reached = {r.path for r in origin.requests}
            assert not [o.path for o in wrong if o.path in reached], diagnostics
            # A blocked request never reached the origin, not even one in flight at the kill (fail closed).
            leaked = [r.path for r in origin.requests if r.path.startswith("/fo-bob-")]
            assert not leaked, leaked
            # Squid took A out of use (down or suspended) during the run, and B still carried everything.
            assert down_message in squid.cache_log_text(), diagnostics
            # B really took over: it decided every request that started after the kill, and those held on the
            # frozen A that Squid retried on it; its log lags a moment.
            wanted = len(after) + len(in_flight) - len(wrong_in_flight)
            wait_until(lambda: len(b.icap_records()) >= wanted, timeout=5, what="B's log of the load")
            # Identical decisions: each instance decided every (user, host) pair the one way EXPECTED says.
            expected = {pair: {tuple(decision.split()[:2])} for pair, (_status, decision) in EXPECTED.items()}
            assert decisions(a) == expected, decisions(a)
            assert decisions(b) == expected, decisions(b)

            # Squid's access.log names Clearance's decision for every request, whichever instance made it.
            logged = access_log_fields(squid, {o.path for o in outcomes if o.right})
            for o in outcomes:
                if not o.right:
                    continue
                fields = logged.get(o.path)
                assert fields is not None, f"no access.log line for {o.path}\n{diagnostics}"
                status, decision = EXPECTED[(o.user, o.host)]
                assert fields[3].endswith(f"/{status}"), fields
                assert " ".join(fields[-5:-2]) == decision, fields
                assert fields[-1] == (o.reference or "-"), fields
            posts = [o for o in in_flight if o.user == POST_USER]
            print(
                f"failover ({variant}): in flight at the kill {len(in_flight)} ({len(posts)} POST), "
                f"client errors {len(wrong_in_flight)} ({[o.user for o in wrong_in_flight]})"
            )
