"""Sentinel (issue 13): `redis+sentinel://` for the workers' sync and the admin commands, through a failover.

On loopback: one master, one replica, three sentinels (tests/support/sentinel.py), `clearance serve` with two
workers and every CLI command given only the sentinel URL. A prober asks the whole time, on fresh
connections, for a listed host as alice (approved: pass) and bob (not: block); the master is SIGKILLed, the
sentinels promote the replica, and not one answer may be wrong. A grant made after the failover, again through
the sentinels, must reach every worker within 2 s. Redis Cluster is refused by name, in one line.
"""

from __future__ import annotations

import asyncio
import subprocess
import threading
import time
from collections import Counter
from pathlib import Path
from typing import ClassVar

import pytest
import redis

from icap_server.config import ConfigError, load_config
from policy.store import PolicyStore
from policy.store.errors import StoreUnavailable
from policy.store.sentinel import SentinelUrl, parse_sentinel_url
from tests.conftest import ServerHandle, StartServer, clearance_env
from tests.support.cli_zygote import run_clearance
from tests.support.icap_client import verdict as icap_verdict
from tests.support.icap_client import wait_until_synced
from tests.support.net import free_port
from tests.support.sentinel import MASTER_NAME, SentinelSetup, running_sentinels
from tests.support.servers import fail_on_survivors
from tests.support.waiting import wait_until

SERVE = (
    "server:\n  workers: 2\n"
    "policy:\n  load_default_lists: false\n"
    "approvals:\n  require_department_head: false\n  min_justification_chars: 0\n"
    "logging:\n  format: json\n"
)
HOST = "mail.sentinel-test.example"
URL = f"https://{HOST}/inbox"


def grant(user: str) -> tuple[str, ...]:
    return ("approvals", "grant", "--user", user, "--category", "webmail", "--days", "1",
            "--approver", "head", "--reason", "sentinel test")  # fmt: skip


def verdict(port: int, user: str) -> str:
    """The answer for URL: "pass", "block", or the status line of anything else (`icap_client.verdict`)."""
    return icap_verdict(port, user, URL)


class Prober:
    """Alice (approved) and bob (not) in turn, each probe on a fresh connection; anything unexpected is kept."""

    EXPECTED: ClassVar[dict[str, str]] = {"alice": "pass", "bob": "block"}

    def __init__(self, port: int) -> None:
        self.port = port
        self.seen: Counter[str] = Counter()
        self.wrong: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._probe, daemon=True)

    def _probe(self) -> None:
        while not self._stop.is_set():
            for user, expected in self.EXPECTED.items():
                try:
                    got = verdict(self.port, user)
                except (OSError, AssertionError) as error:
                    got = f"error: {error!r}"
                self.seen[f"{user} {got}"] += 1
                if got != expected:
                    self.wrong.append(f"{time.monotonic():.3f} {user}: {got}")

    def start(self) -> None:
        self._thread.start()
        wait_until(lambda: self.seen["bob block"] >= 20, timeout=10, what="the prober to run")

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=15)


def cli(url: str, config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    proc = run_clearance(args, clearance_env(url, config))
    assert proc.returncode == 0, f"clearance {' '.join(args)} exited {proc.returncode}: {proc.stderr}"
    return proc


def replicated(setup: SentinelSetup) -> None:
    """Every write so far has reached the replica (WAIT): a failover then loses nothing we count on."""
    client = redis.Redis.from_url(setup.master_url())
    try:
        assert int(client.execute_command("WAIT", 1, 5000)) >= 1, "the replica did not acknowledge the writes"
    finally:
        client.close()


def everyone_sees(port: int, user: str, probes: int = 8) -> bool:
    return all(verdict(port, user) == "pass" for _ in range(probes))


@pytest.mark.usefixtures("cli_zygote")
def test_failover_under_load_gives_no_wrong_decision(start_icap_server: StartServer, tmp_path: Path) -> None:
    admin = tmp_path / "admin.yaml"
    admin.write_text(SERVE, encoding="utf-8")
    with running_sentinels(tmp_path / "sentinel") as setup:
        server = start_icap_server(SERVE, redis=setup.url)
        assert len(wait_until(lambda: server.worker_pids() if len(server.worker_pids()) == 2 else None)) == 2
        cli(setup.url, admin, "categories", "add", "webmail", HOST)
        cli(setup.url, admin, *grant("alice"))
        wait_until_synced(server.port, setup.master_url(), timeout=5)
        assert everyone_sees(server.port, "alice") and verdict(server.port, "bob") == "block"
        replicated(setup)

        prober = Prober(server.port)
        prober.start()
        try:
            killed_at = time.monotonic()
            old = setup.kill_master()
            new = setup.wait_for_failover(old)
            promoted_s = time.monotonic() - killed_at
            cli(setup.url, admin, *grant("carol"))  # through the sentinels, to the promoted replica
            granted_at = time.monotonic()
            wait_until(lambda: everyone_sees(server.port, "carol"), timeout=2, interval=0.01, what="carol's grant")
            reached_s = time.monotonic() - granted_at
            wait_until_synced(server.port, setup.master_url(), timeout=2)
            # Both workers resubscribed on the new master and reloaded from it; a grant now comes by the feed.
            wait_until(lambda: reconnected(server) == {0, 1}, timeout=5, what="both workers to resync")
            loads = len(server.events("policy_loaded"))
            cli(setup.url, admin, *grant("dave"))
            fed_at = time.monotonic()
            wait_until(lambda: everyone_sees(server.port, "dave"), timeout=2, interval=0.01, what="dave's grant")
            fed_s = time.monotonic() - fed_at
            assert len(server.events("policy_loaded")) == loads, "dave's grant came by a reload, not the feed"
        finally:
            prober.stop()
        print(
            f"failover {old} -> {new}: promoted after {promoted_s:.2f} s; a grant right then reached every worker"
            f" in {reached_s:.3f} s, one after the resubscription in {fed_s:.3f} s; probes {dict(prober.seen)}"
        )
        assert not prober.wrong, f"wrong decisions during the failover: {prober.wrong[:10]}"
        assert prober.seen["alice pass"] >= 20 and prober.seen["bob block"] >= 20
        assert verdict(server.port, "bob") == "block"
        assert {line.get("worker") for line in server.events("policy_sync_interrupted")} == {0, 1}
        fail_on_survivors({"clearance serve": server.stop()})


def reconnected(server: ServerHandle) -> set[object]:
    """The workers that reloaded the policy after an interruption (from the new master)."""
    return {line.get("worker") for line in server.events("policy_loaded") if line.get("why") == "reconnect"}


def test_a_sentinel_url_is_parsed_into_its_parts() -> None:
    url = "rediss+sentinel://:s%40cret@10.0.0.1:26379,10.0.0.2:26380,[::1]:26381/mymaster/3?sentinel_password=x"
    assert parse_sentinel_url(url) == SentinelUrl(
        sentinels=(("10.0.0.1", 26379), ("10.0.0.2", 26380), ("::1", 26381)),
        master="mymaster",
        db=3,
        password="s@cret",
        sentinel_password="x",
        ssl=True,
    )
    assert parse_sentinel_url("redis+sentinel://h:1/m?ssl=true").ssl
    assert not parse_sentinel_url("redis+sentinel://h:1/m").ssl
    for bad in (
        "redis+sentinel://h/m",
        "redis+sentinel://h:1",
        "redis+sentinel://h:1/m/x",
        "redis+sentinel://h:1/m?x=1",
    ):
        with pytest.raises(ValueError):
            parse_sentinel_url(bad)


def test_the_store_asks_the_sentinels_for_the_master() -> None:
    store = PolicyStore.from_url(f"redis+sentinel://127.0.0.1:1,127.0.0.1:2/{MASTER_NAME}")
    pool = store.client.connection_pool
    assert type(pool).__name__ == "SentinelConnectionPool" and pool.service_name == MASTER_NAME
    assert len(store._sentinels) == 2


def test_no_sentinel_answering_is_one_short_line() -> None:
    ports = (free_port(), free_port())  # nothing listens there

    async def ping() -> None:
        store = PolicyStore.from_url(f"redis+sentinel://127.0.0.1:{ports[0]},127.0.0.1:{ports[1]}/{MASTER_NAME}")
        try:
            await store.client.ping()
        finally:
            await store.close()

    with pytest.raises(StoreUnavailable) as raised:
        asyncio.run(ping())
    assert str(raised.value) == (
        f"no master {MASTER_NAME!r} from the sentinels at 127.0.0.1:{ports[0]}, 127.0.0.1:{ports[1]} (ConnectionError)"
    )


@pytest.mark.parametrize(
    ("url", "message"),
    [
        (
            "redis+sentinel://:pw@h:1,h/m",
            "expected each sentinel as host:port, got 'h' in 'redis+sentinel://***@h:1,h/m'",
        ),
        ("redis+sentinel://:pw@h:1,h:2", "a sentinel URL ends with /MASTER_NAME or /MASTER_NAME/DB"),
        ("redis+sentinel://h:1/m?sentinel_pasword=x", "unknown sentinel URL option 'sentinel_pasword'"),
        ("redis+cluster://h:1,h:2", "Redis Cluster is not supported"),
    ],
)
def test_a_bad_sentinel_url_or_a_cluster_one_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, url: str, message: str
) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("logging:\n  format: json\n", encoding="utf-8")
    monkeypatch.setenv("CLEARANCE_REDIS_URL", url)
    with pytest.raises(ConfigError) as raised:
        load_config(path)
    assert message in str(raised.value) and "\n" not in str(raised.value) and "pw" not in str(raised.value)


def test_a_sentinel_url_in_the_config_file_is_accepted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CLEARANCE_REDIS_URL", raising=False)
    path = tmp_path / "config.yaml"
    url = "redis+sentinel://:pw@127.0.0.1:26379,127.0.0.1:26380/mymaster/0?sentinel_password=x&ssl=true"
    path.write_text(f"redis:\n  url: '{url}'\n", encoding="utf-8")
    assert load_config(path).redis.url == url
    path.write_text("redis:\n  url: 'redis+cluster://h:1'\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="Redis Cluster is not supported"):
        load_config(path)


def test_logs_never_show_a_sentinel_password() -> None:
    from icap_server.runtime.serve import redact

    shown = redact("redis+sentinel://:master-pw@h1:26379,h2:26379/mymaster?sentinel_password=sentinel-pw&ssl=true")
    assert "master-pw" not in shown and "sentinel-pw" not in shown
    assert shown == "redis+sentinel://***@h1:26379,h2:26379/mymaster?sentinel_password=***&ssl=true"
