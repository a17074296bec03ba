"""Slow clients cannot starve fast ones: deadlines from a message's first byte, and eviction at the limit.

A byte now and then used to restart the request timeout, and `max_connections` slow connections locked out
every new client (Squid included) with 503. Now each message must arrive within its deadlines however it
trickles, and a new connection at the limit is admitted by closing the idlest or slowest one.
"""

from __future__ import annotations

import contextlib
import random
import resource
import socket
import threading
import time

import pytest

from tests.conftest import StartServer
from tests.support.icap_client import OPTIONS, read_response, reqmod
from tests.support.icap_driver import http_head, icap

SLOW_HEAD = b"REQMOD icap://127.0.0.1/reqmod ICAP/1.0\r\nHost: 127.0.0.1\r\nX-Slow: "
QUIET = "policy:\n  load_default_lists: false\nlogging:\n  format: json\n"


def status_of(response: bytes) -> int:
    return int(response.split(b" ", 2)[1])


def raise_own_file_limit(wanted: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < wanted:
        resource.setrlimit(
            resource.RLIMIT_NOFILE, (wanted if hard == resource.RLIM_INFINITY else min(wanted, hard), hard)
        )


def trickle(sockets: list[socket.socket], stop: threading.Event, every: float, count: int) -> None:
    """A byte on `count` of the sockets every `every` seconds (the slow clients' whole behaviour)."""
    rng = random.Random(9)
    while not stop.wait(every):
        for sock in rng.sample(sockets, min(count, len(sockets))):
            with contextlib.suppress(OSError):  # this one was closed by the server
                sock.send(b"a")


def timed_answer(port: int, message: bytes) -> tuple[int, float]:
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(message)
        status = status_of(read_response(sock, bytearray()))
    return status, time.monotonic() - started


def test_fresh_clients_are_answered_while_1100_slow_connections_are_open(start_icap_server: StartServer) -> None:
    """Acceptance 4: max_connections at its default (1000), so the slow ones beyond it are evicted."""
    raise_own_file_limit(4096)
    server = start_icap_server("server:\n  workers: 1\n  header_timeout: 300\n  request_timeout: 300\n" + QUIET)
    server.wait_for_log("policy_loaded")  # before it, every request is a policy-unavailable block
    slow: list[socket.socket] = []
    stop = threading.Event()
    trickler = threading.Thread(target=trickle, args=(slow, stop, 0.5, 100), daemon=True)
    try:
        for _ in range(1100):
            sock = socket.create_connection((server.host, server.port), timeout=10)
            sock.sendall(SLOW_HEAD)
            slow.append(sock)
        trickler.start()
        for _ in range(5):
            status, took = timed_answer(server.port, OPTIONS)
            assert status == 200 and took < 2.0, (status, took)
            status, again = timed_answer(server.port, reqmod("http://news.example/"))
            assert status in (200, 204) and again < 2.0, (status, again)
            print(f"fresh OPTIONS {took * 1000:.1f} ms, REQMOD {again * 1000:.1f} ms")
        assert server.wait_for_log("icap_evicted")["in_message"] is True
    finally:
        stop.set()
        if trickler.is_alive():
            trickler.join(timeout=5)
        for sock in slow:
            sock.close()


def read_until_closed(sock: socket.socket) -> bytes:
    data = bytearray()
    while chunk := sock.recv(65536):
        data += chunk
    return bytes(data)


@pytest.mark.parametrize("where", ["head", "body"])
def test_a_trickle_does_not_extend_the_deadline(start_icap_server: StartServer, where: str) -> None:
    """A byte every 0.2 s: the heads still time out at header_timeout, the message at request_timeout."""
    server = start_icap_server("server:\n  header_timeout: 1\n  request_timeout: 2\n" + QUIET)
    server.wait_for_log("policy_loaded")  # a pass, so the body is streamed
    post = http_head("POST", "http://upload.example/")
    prefix = SLOW_HEAD if where == "head" else icap(req_hdr=post, body=b"100000\r\n")  # no Allow: 204: streamed
    stop = threading.Event()
    with socket.create_connection((server.host, server.port), timeout=10) as sock:
        sock.sendall(prefix)
        started = time.monotonic()
        trickler = threading.Thread(target=trickle, args=([sock], stop, 0.2, 1), daemon=True)
        trickler.start()
        try:
            answer = read_until_closed(sock)
        finally:
            stop.set()
            trickler.join(timeout=5)
        took = time.monotonic() - started
    if where == "head":
        assert answer.startswith(b"ICAP/1.0 408 Request Timeout\r\n") and 0.9 <= took < 4, (answer[:40], took)
    else:  # the echo had begun: no ICAP error can follow its head, so the connection is closed
        assert answer.startswith(b"ICAP/1.0 200 OK\r\n") and not answer.endswith(b"0\r\n\r\n")
        assert 1.9 <= took < 5, took
    assert server.wait_for_log("icap_request_timeout")["in_heads"] is (where == "head")


def test_at_the_limit_the_idlest_goes_unless_all_are_mid_request(start_icap_server: StartServer) -> None:
    # No readiness probe (its connection would count until the server notices it closed): wait for the log line.
    server = start_icap_server("server:\n  max_connections: 2\n  workers: 1\n" + QUIET, wait=False)
    server.wait_for_log("listening", timeout=15)
    server.wait_for_log("policy_loaded")  # a pass, so the uploads are streamed
    address = (server.host, server.port)
    first, second = (socket.create_connection(address, timeout=5) for _ in range(2))
    held = [first, second]
    try:
        for sock in held:  # both accepted and answered: idle now, `first` the longer
            sock.sendall(OPTIONS)
            assert status_of(read_response(sock, bytearray())) == 200
        third = socket.create_connection(address, timeout=5)
        held.append(third)
        third.sendall(OPTIONS)
        assert status_of(read_response(third, bytearray())) == 200
        assert first.recv(100) == b""  # closed to make room
        upload = icap(req_hdr=http_head("POST", "http://upload.example/"), body=b"5\r\nhello\r\n")
        for sock in (second, third):  # both mid-request: heads in, the body still arriving, the echo begun
            sock.sendall(upload)
            seen = bytearray()
            while b"hello" not in seen:
                seen += sock.recv(65536)
        with socket.create_connection(address, timeout=5) as extra:
            assert read_response(extra, bytearray()).startswith(b"ICAP/1.0 503 ")
    finally:
        for sock in held:
            sock.close()
