"""Several workers on one port, each deciding from its in-memory policy without asking Redis."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import redis

from tests.conftest import CLI, StartServer, clearance_env
from tests.support.icap_client import OPTIONS, exchange, read_response, reqmod, wait_until_synced

WORKERS_CONFIG = "server:\n  workers: 2\npolicy:\n  load_default_lists: false\nlogging:\n  format: json\n"


def status(response: bytes) -> int:
    return int(response.split(b" ", 2)[1])


def command_calls(client: redis.Redis) -> dict[str, int]:
    stats = client.info("commandstats")
    return {name.removeprefix("cmdstat_"): int(value["calls"]) for name, value in stats.items()}


def test_steady_state_decisions_make_no_redis_calls(
    start_icap_server: StartServer, cli: CLI, redis_url: str, sync_redis: redis.Redis
) -> None:
    server = start_icap_server(WORKERS_CONFIG)
    cli("categories", "add", "webmail", "mail.example")
    cli("approvals", "grant", "--user", "alice", "--category", "webmail", "--days", "1",
        "--approver", "head", "--reason", "load test")
    wait_until_synced(server.port, redis_url)

    messages = [
        reqmod("http://mail.example/", user="alice"),
        reqmod("http://mail.example/", user="bob"),
        reqmod("http://news.example/", user="bob"),
    ]
    before = command_calls(sync_redis)
    started = time.monotonic()
    requests = 0
    for _ in range(20):  # 20 connections, spread over both workers by the kernel
        responses = exchange(server.port, *(messages * 25))
        requests += len(responses)
        assert [status(r) for r in responses[:3]] == [204, 200, 204]
    elapsed = time.monotonic() - started
    after = command_calls(sync_redis)
    delta = {name: after.get(name, 0) - before.get(name, 0) for name in after}
    used = {name: count for name, count in delta.items() if count and name != "info"}
    # Only the sync task's periodic version check (GET, every 0.5 s per worker) may touch Redis.
    assert set(used) <= {"get"}, used
    assert used.get("get", 0) <= 2 * (elapsed / 0.5 + 2), (used, elapsed)
    assert requests == 1500


def test_revoke_blocks_within_one_second_on_every_worker(
    start_icap_server: StartServer, cli: CLI, redis_url: str
) -> None:
    server = start_icap_server(WORKERS_CONFIG)
    cli("categories", "add", "webmail", "mail.example")
    approval = cli("approvals", "grant", "--user", "alice", "--category", "webmail", "--days", "1",
                   "--approver", "head", "--reason", "load test").stdout.strip()
    wait_until_synced(server.port, redis_url)
    connections = [socket.create_connection((server.host, server.port), timeout=5) for _ in range(12)]
    buffers = [bytearray() for _ in connections]
    request = reqmod("http://mail.example/inbox", user="alice")
    try:
        for sock, buffer in zip(connections, buffers, strict=True):
            sock.sendall(request)
            assert status(read_response(sock, buffer)) == 204
        cli("approvals", "revoke", approval, "--by", "head")
        revoked_at = time.monotonic()
        pending = set(range(len(connections)))
        while pending and time.monotonic() - revoked_at < 3:
            for index in list(pending):
                connections[index].sendall(request)
                if status(read_response(connections[index], buffers[index])) == 200:
                    pending.discard(index)
            time.sleep(0.01)
        elapsed = time.monotonic() - revoked_at
        assert not pending, f"{len(pending)} connections still passing after {elapsed:.2f}s"
        assert elapsed <= 1.0, f"blocked everywhere only after {elapsed:.2f}s"
    finally:
        for sock in connections:
            sock.close()
    deadline = time.monotonic() + 3  # log lines are written in batches
    while True:
        served_by = {line.get("worker") for line in server.log_lines() if line.get("event") == "icap"}
        if served_by == {0, 1} or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert served_by == {0, 1}, served_by


def test_a_dead_worker_is_replaced_and_sigterm_drains_all(start_icap_server: StartServer) -> None:
    server = start_icap_server(WORKERS_CONFIG)
    started = [line for line in server.log_lines() if line.get("event") == "worker_started"]
    assert len(started) == 2
    os.kill(int(started[0]["pid"]), signal.SIGKILL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if any(line.get("event") == "worker_died" for line in server.log_lines()) and len(
            [line for line in server.log_lines() if line.get("event") == "listening"]
        ) >= 3:
            break
        time.sleep(0.1)
    events = [line.get("event") for line in server.log_lines()]
    assert "worker_died" in events and events.count("worker_started") == 3
    for _ in range(10):
        (response,) = exchange(server.port, OPTIONS)
        assert status(response) == 200
    server.proc.send_signal(signal.SIGTERM)
    assert server.proc.wait(timeout=15) == 0
    stopped = [line for line in server.log_lines() if line.get("event") == "stopped"]
    assert {line.get("worker") for line in stopped} >= {0, 1, None}


def test_a_second_instance_on_the_same_port_is_refused(start_icap_server: StartServer, redis_url: str) -> None:
    first = start_icap_server(WORKERS_CONFIG)
    config = first.log_path.parent / "second.yaml"
    config.write_text(WORKERS_CONFIG, encoding="utf-8")
    second = subprocess.run(
        [sys.executable, "-m", "icap_server", "serve", "--listen", f"127.0.0.1:{first.port}"],
        env=clearance_env(redis_url, config),
        capture_output=True, text=True, timeout=30,
    )
    assert second.returncode == 1
    assert "cannot_listen" in second.stdout + second.stderr
