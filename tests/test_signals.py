"""Signals like a daemon: SIGHUP reloads in place, SIGTERM loses no request, no worker outlives its supervisor.

Each test runs against real `clearance serve` processes, one worker and several, and reads the outcome from
what an operator would see: the answers on the wire (through the grammar reader), the processes in /proc, the
log lines.
"""

from __future__ import annotations

import select
import signal
import socket
import threading
import time
from pathlib import Path

import pytest

from tests.conftest import CLI, ServerHandle, StartServer
from tests.support.icap_client import read_parsed, reqmod, wait_until_synced
from tests.support.icap_grammar import ICAPResponse
from tests.support.net import free_port, peer_has_read_all, wait_for_port
from tests.support.processes import survivors_after
from tests.support.waiting import wait_until

BASE = "policy:\n  load_default_lists: false\nlogging:\n  format: json\n"
TEMPLATE = (
    '<!DOCTYPE html><html lang="{{ lang }}"><title>{{ heading }}</title><h1>Reloaded page of {{ org.name }}</h1>'
    "<p>{{ message }}</p><p>{{ page.host }} {{ page.reference }}</p>{% if form %}form{% endif %}"
)
BLOCKED = reqmod("http://mail.example/", user="alice")


def settings(workers: int, name: str = "Old Org", extra: str = "") -> str:
    return f"organisation:\n  name_en: {name}\nserver:\n  workers: {workers}\n{extra}{BASE}"


def config_path(server: ServerHandle) -> Path:
    """The file `start_icap_server` wrote this server's configuration to (serve.log goes with serve-0.yaml)."""
    name = server.log_path.stem
    return server.log_path.parent / f"{'serve-0' if name == 'serve' else name}.yaml"


def ready(server: ServerHandle, workers: int, children: int | None = None) -> set[int]:
    """The supervisor's children once every worker has said it listens (its own pid with one worker).

    `children`: how many the supervisor has (the portal's process is one more than the workers)."""

    def listening() -> set[int] | None:
        lines = server.events("listening")
        if workers == 1:
            return {server.proc.pid} if lines else None
        pids = server.worker_pids()
        indexes = {line.get("worker") for line in lines}
        return pids if len(pids) == (children or workers) and indexes >= set(range(workers)) else None

    return wait_until(listening, timeout=20, what=f"{workers} listening worker(s)")


def ask(server: ServerHandle, message: bytes) -> ICAPResponse:
    with socket.create_connection((server.host, server.port), timeout=10) as sock:
        sock.sendall(message)
        return read_parsed(sock, bytearray())


@pytest.mark.parametrize("workers", [1, 2])
def test_sighup_reloads_settings_and_templates_in_the_same_processes(
    start_icap_server: StartServer, cli: CLI, redis_url: str, tmp_path: Path, workers: int
) -> None:
    server = start_icap_server(settings(workers))
    pids = ready(server, workers)
    cli("categories", "add", "webmail", "mail.example")
    wait_until_synced(server.port, redis_url)
    held = socket.create_connection((server.host, server.port), timeout=10)  # open across the reload
    held_buffer = bytearray()
    held.sendall(BLOCKED)
    assert b"Old Org" in (read_parsed(held, held_buffer).body or b"")

    (tmp_path / "pages").mkdir()
    (tmp_path / "pages" / "block.html").write_text(TEMPLATE, encoding="utf-8")
    listen = '  listen: "127.0.0.1:1"\n'  # needs a restart: named in the log, not applied
    extra = "blockpages:\n  template_dir: pages\n"
    config_path(server).write_text(settings(workers, "New Org", extra).replace("server:\n", "server:\n" + listen))
    server.proc.send_signal(signal.SIGHUP)

    wait_until(lambda: len(server.events("reloaded")) >= workers, timeout=10, what="every worker reloaded")
    for _ in range(4 * workers):  # fresh connections, spread over every worker by the kernel
        page = ask(server, BLOCKED).body or b""
        assert b"Reloaded page of New Org" in page, page[:300]
    held.sendall(BLOCKED)  # the connection opened before the reload was not dropped
    assert read_parsed(held, held_buffer).status == 200
    held.close()
    assert server.proc.poll() is None
    assert ready(server, workers) == pids  # the same supervisor, the same workers
    (restart,) = server.events("reload_needs_restart")  # said once, by the process that checked the file
    assert restart["keys"] == ["server.listen"]

    config_path(server).write_text("server:\n  workers: -1\n" + BASE)  # unusable: the running one is kept
    server.proc.send_signal(signal.SIGHUP)
    failed = server.wait_for_log("reload_failed", timeout=10)
    assert "server.workers" in str(failed["error"])
    assert b"Reloaded page of New Org" in (ask(server, BLOCKED).body or b"")
    assert server.proc.poll() is None and len(server.events("reload_failed")) == 1


def test_a_killed_supervisor_leaves_no_worker_and_no_portal_behind(start_icap_server: StartServer) -> None:
    portal = f'portal:\n  listen: "127.0.0.1:{free_port()}"\n'
    server = start_icap_server(settings(2, extra=portal))
    ready(server, 2, children=3)  # two workers and the portal's process
    server.wait_for_log("portal_listening", timeout=10)
    server.proc.kill()  # SIGKILL: no handler runs, nothing is passed on
    server.proc.wait(timeout=5)
    left = survivors_after(server.proc, timeout=5)
    assert left == [], left


def portal_answers(address: str) -> bool:
    host, port = address.rsplit(":", 1)
    try:
        with socket.create_connection((host, int(port)), timeout=5) as sock:
            sock.sendall(b"GET /portal.css HTTP/1.1\r\nHost: portal\r\nConnection: close\r\n\r\n")
            return sock.recv(100).startswith(b"HTTP/1.1 200 ")
    except OSError:
        return False


@pytest.mark.parametrize("workers", [1, 2])
def test_sighup_keeps_the_portal_serving(start_icap_server: StartServer, workers: int) -> None:
    """One worker: the portal restarts on its loop; several: its process is replaced. It answers throughout."""
    address = f"127.0.0.1:{free_port()}"
    server = start_icap_server(settings(workers, extra=f'portal:\n  listen: "{address}"\n'))
    before = ready(server, workers, children=workers + 1 if workers > 1 else None)
    wait_until(lambda: portal_answers(address), timeout=10, what="the portal")
    server.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: len(server.events("reloaded")) >= workers, timeout=10, what="every worker reloaded")
    if workers > 1:  # a new portal process, the same workers
        def portal_replaced() -> set[int] | None:
            now = server.worker_pids()
            return now if len(now) == 3 and now - before else None

        assert len(wait_until(portal_replaced, timeout=10, what="a new portal process") & before) == workers
    wait_until(lambda: len(server.events("portal_listening")) >= 2, timeout=10, what="the portal serving again")
    assert portal_answers(address)
    assert server.proc.poll() is None


class Client(threading.Thread):
    """Sends requests one after another on one persistent connection until the server says it closes.

    A request counts as lost if it was sent on a connection the server had not closed (no `Connection:
    close` in the last answer, no end of stream waiting to be read) and no complete, valid answer came.
    """

    def __init__(self, port: int, messages: list[bytes]) -> None:
        super().__init__(daemon=True)
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=15)
        self.messages = messages
        self.answered = 0
        self.lost: list[str] = []

    def run(self) -> None:
        buffer = bytearray()
        with self.sock:
            while not self._closed_by_server():
                self.sock.sendall(self.messages[self.answered % len(self.messages)])
                try:
                    answer = read_parsed(self.sock, buffer)
                except (OSError, AssertionError) as error:  # a reset, a truncated or malformed answer
                    self.lost.append(repr(error))
                    return
                self.answered += 1
                if "close" in answer.tokens("Connection"):
                    return

    def _closed_by_server(self) -> bool:
        readable, _, _ = select.select([self.sock], [], [], 0)
        return bool(readable) and self.sock.recv(1, socket.MSG_PEEK) == b""


@pytest.mark.parametrize("workers", [1, 2])
def test_sigterm_under_load_answers_every_request_it_received(
    start_icap_server: StartServer, cli: CLI, redis_url: str, workers: int
) -> None:
    server = start_icap_server(settings(workers))
    ready(server, workers)
    cli("categories", "add", "webmail", "mail.example")
    wait_until_synced(server.port, redis_url)
    echo = reqmod("http://a.example/form", method="POST", body=b"q" * 3000, preview=None, allow_204=False)
    messages = [BLOCKED, reqmod("http://news.example/"), echo]
    clients = [Client(server.port, messages[i % 3 :] + messages[: i % 3]) for i in range(12)]
    halfway = socket.create_connection((server.host, server.port), timeout=15)
    halfway.sendall(echo[:-500])  # a message in the middle of arriving when the stop comes
    wait_until(lambda: peer_has_read_all(halfway), timeout=5, what="the server to read the first part")
    for client in clients:
        client.start()
    wait_until(lambda: sum(client.answered for client in clients) >= 300, timeout=30, what="load")

    server.proc.send_signal(signal.SIGTERM)
    wait_until(lambda: len(server.events("shutting_down")) >= workers, timeout=10, what="the stop to begin")
    halfway.sendall(echo[-500:])
    answer = read_parsed(halfway, bytearray())
    assert answer.status == 200 and answer.body == b"q" * 3000
    halfway.close()
    for client in clients:
        client.join(timeout=20)
    assert not any(client.is_alive() for client in clients)
    assert [loss for client in clients for loss in client.lost] == []
    assert server.proc.wait(timeout=20) == 0
    assert survivors_after(server.proc, timeout=5) == []


def test_serve_listens_at_once_without_redis_and_blocks_everything(start_icap_server: StartServer) -> None:
    """Redis unreachable, the default startup_timeout (60 s): the port opens at once, and fails closed."""
    dead = f"redis://127.0.0.1:{free_port()}/0"
    started = time.monotonic()
    server = start_icap_server(BASE, redis=dead, wait=False)
    wait_for_port(server.port, timeout=2)
    assert time.monotonic() - started < 2.0
    answer = ask(server, BLOCKED)
    assert answer.status == 200 and answer.res_hdr is not None and answer.res_hdr.startswith(b"HTTP/1.1 403 ")
    record = server.wait_for_log("icap")
    assert (record["decision"], record["reason"]) == ("block", "policy-unavailable")
    assert server.proc.poll() is None
