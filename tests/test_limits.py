"""Bounded memory and bounded logs for every input: the caps of the README's "Limits" table, each tested.

The protocol caps are checked on the sans-I/O core (whole and byte by byte); the streamed echo of a 300 MiB
body and the rate-limited warnings against a running `clearance serve`.
"""

from __future__ import annotations

import hashlib
import resource
import socket
import threading
from typing import Any

import pytest

from icap_server.runtime.logs import RateLimitedWarnings
from icap_server.runtime.server import FILE_LIMIT_MARGIN, raise_file_limit
from tests.conftest import StartServer
from tests.support.icap_client import OPTIONS, exchange, read_response
from tests.support.icap_driver import chunks, error_of, http_head, icap, preview_request, run_both, single
from tests.support.processes import rss_kib

# ---- header counts, preview size, a REQMOD with no HTTP head (sans-I/O) ---------------------------------

FIELDS = [(f"X-F{i}", "v") for i in range(200)]


def test_header_count_cap_on_the_icap_head() -> None:
    at_limit = icap(req_hdr=http_head(), headers=[("Allow", "204"), *FIELDS[:97]])  # + Host, Encapsulated = 100
    assert len(single(run_both(at_limit)).headers) == 100
    status, message = error_of(icap(req_hdr=http_head(), headers=[("Allow", "204"), *FIELDS[:98]]))
    assert (status, message) == (400, "more than 100 ICAP header fields")


def test_header_count_cap_on_the_http_head_and_the_trailers() -> None:
    head = http_head("GET", extra=FIELDS[:100])  # + Host = 101
    assert error_of(icap(req_hdr=head)) == (400, "more than 100 encapsulated HTTP request header fields")
    trailers = b"0\r\n" + b"".join(b"T%d: x\r\n" % i for i in range(101)) + b"\r\n"
    assert error_of(icap(req_hdr=http_head("POST"), body=trailers)) == (400, "more than 100 trailer header fields")


def test_announced_preview_beyond_the_cap_is_400() -> None:
    single(run_both(preview_request(65536, b"x" * 10, ieof=True, allow_204=True)))
    assert error_of(preview_request(65537, b"x" * 10, ieof=True)) == (400, "Preview of 65537 bytes exceeds 65536")


@pytest.mark.parametrize("value", ["req-body=0", "null-body=0"])
def test_reqmod_without_an_http_request_head_is_400(value: str) -> None:
    data = icap(encapsulated=value) + (chunks(b"x") if value.startswith("req") else b"")
    assert error_of(data) == (400, "REQMOD without an encapsulated req-hdr section")


def test_reqmod_without_an_http_request_head_is_400_from_a_running_server(icap_server: tuple[str, int]) -> None:
    data = icap(encapsulated="req-body=0", headers=[("Allow", "204")]) + chunks(b"x")
    (response,) = exchange(icap_server[1], data)
    assert response.startswith(b"ICAP/1.0 400 Bad Request\r\n") and b"Connection: close" in response


# ---- rate-limited warnings --------------------------------------------------------------------------------


class Capture:
    def __init__(self) -> None:
        self.lines: list[tuple[str, dict[str, Any]]] = []

    def warning(self, event: str, **fields: Any) -> None:
        self.lines.append((event, fields))


def test_warnings_are_limited_per_kind_then_summarised() -> None:
    now = [0.0]
    capture = Capture()
    warnings = RateLimitedWarnings(capture, "suppressed", limit=3, interval=10.0, clock=lambda: now[0])
    for _ in range(1000):
        warnings.warning("bad", status=400)
    warnings.warning("late", status=408)
    assert [event for event, _ in capture.lines] == ["bad", "bad", "bad", "late"]
    now[0] = 9.9
    warnings.tick()
    assert len(capture.lines) == 4  # the window is not over
    now[0] = 10.0
    warnings.tick()
    event, fields = capture.lines[-1]
    assert event == "suppressed" and fields["suppressed"] == {"bad": 997} and fields["total"] == 997
    warnings.warning("bad")  # a new window: shown again
    now[0] = 25.0
    warnings.tick()  # nothing held back: no summary
    assert [event for event, _ in capture.lines[-2:]] == ["suppressed", "bad"]


def test_hostile_input_logs_a_bounded_number_of_lines(start_icap_server: StartServer) -> None:
    server = start_icap_server()
    for _ in range(200):
        (response,) = exchange(server.port, b"HELLO THERE\r\n\r\n")
        assert response.startswith(b"ICAP/1.0 400 ")
    exchange(server.port, icap(req_hdr=http_head(), headers=[("Allow", "204")]))
    server.wait_for_log("icap")  # lines are written in order: every warning before it is in the file now
    # 10 a window (10 s); a slow machine may see the sending straddle two windows.
    assert 10 <= len(server.events("icap_protocol_error")) <= 20


# ---- a 300 MiB body: streamed, byte-exact, in bounded memory (acceptance 3) ---------------------------------

BODY_MIB = 300
PIECE = 1 << 20


def send_body(sock: socket.socket, head: bytes, digest: Any) -> None:
    """The request head, then BODY_MIB pieces of 1 MiB, each different, generated as they go."""
    block = hashlib.shake_256(b"clearance").digest(PIECE)
    sock.sendall(head)
    for index in range(BODY_MIB):
        piece = index.to_bytes(4, "big") + block[4:]
        digest.update(piece)
        sock.sendall(b"%x\r\n%b\r\n" % (len(piece), piece))
    sock.sendall(b"0\r\n\r\n")


class ChunkedHasher:
    """Reads a streamed ICAP echo off a socket: its head, its HTTP head, then the de-chunked body into a hash."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock, self.buffer, self.digest, self.size = sock, bytearray(), hashlib.sha256(), 0

    def fill(self) -> None:
        data = self.sock.recv(1 << 20)
        if not data:
            raise ConnectionError("closed before the end of the echo")
        self.buffer += data

    def take_line(self) -> bytes:
        while (end := self.buffer.find(b"\r\n")) < 0:
            self.fill()
        line = bytes(self.buffer[:end])
        del self.buffer[: end + 2]
        return line

    def take(self, count: int) -> bytes:
        while len(self.buffer) < count:
            self.fill()
        data = bytes(self.buffer[:count])
        del self.buffer[:count]
        return data

    def read(self) -> tuple[bytes, bytes]:
        """The ICAP head and the HTTP head; the body goes to the digest."""
        head = b"\r\n".join(iter(self.take_line, b""))
        encapsulated = next(line for line in head.split(b"\r\n") if line.lower().startswith(b"encapsulated:"))
        body_offset = int(encapsulated.rsplit(b"=", 1)[1])
        http = self.take(body_offset)
        while size := int(self.take_line().split(b";")[0], 16):
            data = self.take(size)
            self.digest.update(data)
            self.size += size
            assert self.take(2) == b"\r\n"
        assert self.take_line() == b""
        return head, http


def test_a_300_mib_body_without_allow_204_or_preview_is_echoed_streaming(start_icap_server: StartServer) -> None:
    server = start_icap_server()  # one worker: the serve process itself
    server.wait_for_log("policy_loaded")  # a pass, so the body is streamed
    pid = min(server.worker_pids() or {server.proc.pid})
    http = http_head("POST", "http://upload.example/big", [("Transfer-Encoding", "chunked")])
    head = icap(req_hdr=http, body=b"")  # no Allow: 204, no Preview
    sent = hashlib.sha256()
    peak = [0]
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.05):
            peak[0] = max(peak[0], rss_kib(pid))

    with socket.create_connection((server.host, server.port), timeout=60) as sock:
        sender = threading.Thread(target=send_body, args=(sock, head, sent), daemon=True)
        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        sender.start()
        reader = ChunkedHasher(sock)
        try:
            icap_head, echoed_http = reader.read()
        finally:
            done.set()
            sender.join(timeout=60)
            sampler.join(timeout=5)
    assert icap_head.startswith(b"ICAP/1.0 200 OK") and echoed_http == http
    assert reader.size == BODY_MIB * PIECE and reader.digest.hexdigest() == sent.hexdigest()
    print(f"worker RSS peak: {peak[0] // 1024} MiB")
    assert 0 < peak[0] < 200 * 1024, f"worker RSS peaked at {peak[0] // 1024} MiB"
    with socket.create_connection((server.host, server.port), timeout=10) as again:
        again.sendall(OPTIONS)
        assert read_response(again, bytearray()).startswith(b"ICAP/1.0 200 OK")


def test_a_client_that_does_not_read_its_echo_is_paused_not_buffered(start_icap_server: StartServer) -> None:
    """Backpressure: once its answers back up, the server stops reading from it, so its sends stall."""
    server = start_icap_server()
    server.wait_for_log("policy_loaded")  # a pass, so the body is streamed
    pid = min(server.worker_pids() or {server.proc.pid})
    piece = b"%x\r\n%b\r\n" % (PIECE, b"p" * PIECE)
    sent = 0
    with socket.create_connection((server.host, server.port), timeout=10) as sock:
        sock.sendall(icap(req_hdr=http_head("POST", "http://upload.example/"), body=b""))
        sock.settimeout(3)
        with pytest.raises(TimeoutError):
            while sent < BODY_MIB * PIECE:  # never reading: the server must stop taking it long before the end
                sock.sendall(piece)
                sent += PIECE
        assert sent < 64 * PIECE and rss_kib(pid) < 200 * 1024, (sent // PIECE, rss_kib(pid) // 1024)
    (response,) = exchange(server.port, OPTIONS)
    assert response.startswith(b"ICAP/1.0 200 OK")


def test_the_file_limit_is_raised_for_max_connections() -> None:
    """Raised to what max_connections needs, never past the hard limit, never lowered (on any machine)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 1000 + FILE_LIMIT_MARGIN
    reachable = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(256, reachable), hard))
        assert raise_file_limit(wanted) == reachable
        assert resource.getrlimit(resource.RLIMIT_NOFILE) == (reachable, hard)
        assert raise_file_limit(100) == reachable  # never lowered
        if hard != resource.RLIM_INFINITY:  # past the hard limit: capped there, not an error
            assert raise_file_limit(hard + 1000) == hard
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
