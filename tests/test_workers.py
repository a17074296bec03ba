"""Several workers on one port, each deciding from its in-memory policy without asking Redis.

Worker life cycle is checked on real conditions: the supervisor's children as /proc lists them, the
port answering, log lines. A SIGTERM to the supervisor at any moment (right after the port opens, right
after a worker was replaced) must stop the whole process group, with no survivor.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import redis

from tests.conftest import CLI, ServerHandle, StartServer, clearance_env
from tests.support.icap_client import OPTIONS, exchange, read_parsed, read_response, reqmod, wait_until_synced
from tests.support.net import peer_has_read_all
from tests.support.processes import survivors_after
from tests.support.waiting import wait_until

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
    running_workers(server)  # both loaded and listening: a worker still starting would count its own load
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
        assert [status(r) for r in responses] == [204, 200, 204] * 25
    elapsed = time.monotonic() - started
    after = command_calls(sync_redis)
    delta = {name: after.get(name, 0) - before.get(name, 0) for name in after}
    used = {name: count for name, count in delta.items() if count and name != "info"}
    # Only the sync task's periodic check of the store's epoch and version (MGET, every 0.5 s per worker).
    assert set(used) <= {"mget"}, used
    assert used.get("mget", 0) <= 2 * (elapsed / 0.5 + 2), (used, elapsed)
    assert requests == 1500


def test_revoke_blocks_within_one_second_on_every_worker(
    start_icap_server: StartServer, cli: CLI, redis_url: str
) -> None:
    server = start_icap_server(WORKERS_CONFIG)
    running_workers(server)  # both loaded and listening, so both are measured
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
    # Log lines are written in batches: wait for both workers' to appear.
    wait_until(lambda: served_by(server) == {0, 1}, timeout=3, what="icap lines from both workers")


def served_by(server: ServerHandle) -> set[object]:
    return {line.get("worker") for line in server.events("icap")}


def running_workers(server: ServerHandle, count: int = 2) -> set[int]:
    """The supervisor's children once there are `count` of them, each having said it listens."""

    def ready() -> set[int] | None:
        pids = server.worker_pids()
        listening = {line.get("worker") for line in server.events("listening")}
        return pids if len(pids) == count and listening >= set(range(count)) else None

    return wait_until(ready, timeout=20, what="two listening workers")


def replace_worker(server: ServerHandle, pids: set[int]) -> tuple[int, set[int]]:
    """SIGKILL worker 0; wait until /proc shows the supervisor's replacement. (killed pid, new pid set)."""
    started = {int(str(line["pid"])): line["worker"] for line in server.events("worker_started")}
    victim = next(pid for pid, index in started.items() if index == 0 and pid in pids)
    os.kill(victim, signal.SIGKILL)

    def replaced() -> set[int] | None:
        now = server.worker_pids()
        return now if victim not in now and len(now) == 2 else None

    return victim, wait_until(replaced, timeout=10, what=f"a replacement for worker pid {victim}")


def test_a_dead_worker_is_replaced_and_the_replacement_serves(start_icap_server: StartServer) -> None:
    server = start_icap_server(WORKERS_CONFIG)
    victim, pids = replace_worker(server, running_workers(server))
    assert len(pids - {victim}) == 2 and server.events("worker_died")
    # Nothing was asked before the kill, so an icap line from worker 0 now comes from the replacement.
    answers = []

    def replacement_served() -> bool:
        (response,) = exchange(server.port, OPTIONS)  # a fresh connection each time: the kernel spreads them
        answers.append(status(response))
        return 0 in served_by(server)

    wait_until(replacement_served, timeout=10, interval=0.05, what="the replacement worker to serve")
    assert answers and set(answers) == {200}, answers


def test_sigterm_drains_a_request_in_flight_on_every_worker(start_icap_server: StartServer) -> None:
    server = start_icap_server(WORKERS_CONFIG)
    running_workers(server)
    message = reqmod("http://a.example/", method="POST", body=b"z" * 1000, preview=None, allow_204=False)
    with socket.create_connection((server.host, server.port), timeout=10) as sock:
        sock.sendall(message[:-200])  # the head and part of the body: a transaction in flight
        wait_until(lambda: peer_has_read_all(sock), timeout=5, what="the worker to read the first part")
        server.proc.send_signal(signal.SIGTERM)  # the supervisor only; it passes the signal on
        stopping = {0, 1}
        wait_until(lambda: {line.get("worker") for line in server.events("shutting_down")} >= stopping, timeout=10)
        sock.sendall(message[-200:])
        answer = read_parsed(sock, bytearray())  # the echo may be streamed in several chunks
        assert answer.status == 200 and answer.body == b"z" * 1000
    assert server.proc.wait(timeout=15) == 0
    assert survivors_after(server.proc, timeout=5) == []
    stopped = server.events("stopped")
    assert {line.get("worker") for line in stopped} >= {0, 1, None}


def test_sigterm_right_after_the_port_opens_stops_the_whole_group(start_icap_server: StartServer) -> None:
    """The race that once left two orphan workers: a worker still starting must not swallow the SIGTERM."""
    for _ in range(3):
        server = start_icap_server(WORKERS_CONFIG)  # returns as soon as the port accepts a connection
        server.proc.send_signal(signal.SIGTERM)
        assert survivors_after(server.proc, timeout=30) == [], server.log_path.read_text()[-2000:]
        assert server.proc.returncode == 0


def test_sigterm_right_after_a_worker_is_replaced_stops_the_whole_group(start_icap_server: StartServer) -> None:
    server = start_icap_server(WORKERS_CONFIG)
    replace_worker(server, running_workers(server))
    server.proc.send_signal(signal.SIGTERM)  # the replacement may not have installed its handlers yet
    assert survivors_after(server.proc, timeout=30) == [], server.log_path.read_text()[-2000:]
    assert server.proc.returncode == 0


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
