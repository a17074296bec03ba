"""The running server over real sockets, against a real Redis: persistence, failures, limits, shutdown."""

from __future__ import annotations

import signal
import socket
import struct
import time

from tests.conftest import CLI, StartServer
from tests.support.icap_client import OPTIONS, exchange, read_parsed, read_response, reqmod, wait_until_synced
from tests.support.net import free_port, peer_has_read_all
from tests.support.waiting import wait_until


def status_of(response: bytes) -> int:
    return int(response.split(b" ", 2)[1])


def istag_of(response: bytes) -> str:
    for line in response.split(b"\r\n\r\n", 1)[0].split(b"\r\n"):
        if line.lower().startswith(b"istag:"):
            return line.split(b":", 1)[1].strip().decode()
    raise AssertionError("no ISTag")


def test_istag_changes_when_policy_changes(cli: CLI, icap_server: tuple[str, int], redis_url: str) -> None:
    port = icap_server[1]
    (first,) = exchange(port, OPTIONS)
    cli("categories", "add", "webmail", "mail.example")
    wait_until_synced(port, redis_url)
    (second,) = exchange(port, OPTIONS)
    approval = cli("approvals", "grant", "--user", "a", "--category", "webmail", "--days", "1",
                   "--approver", "h", "--reason", "r").stdout.strip()
    wait_until_synced(port, redis_url)
    (third,) = exchange(port, OPTIONS)
    cli("approvals", "revoke", approval, "--by", "h")
    wait_until_synced(port, redis_url)
    (fourth,) = exchange(port, OPTIONS)
    tags = [istag_of(response) for response in (first, second, third, fourth)]
    assert len(set(tags)) == 4, tags
    assert all(tag.startswith('"') and tag.endswith('"') and len(tag) <= 34 for tag in tags)


def test_decisions_over_one_persistent_connection(cli: CLI, icap_server: tuple[str, int], redis_url: str) -> None:
    cli("categories", "add", "webmail", "mail.example")
    wait_until_synced(icap_server[1], redis_url)
    responses = exchange(
        icap_server[1],
        reqmod("http://mail.example/inbox", user="alice"),
        reqmod("http://news.example/"),
        reqmod("http://mail.example:8080/", user="alice", method="CONNECT"),
        OPTIONS,
        reqmod("http://x.mail.example/upload", user="alice", method="POST", body=b"x" * 5000, preview=0),
    )
    assert [status_of(response) for response in responses] == [200, 204, 200, 200, 200]
    assert b"HTTP/1.1 403 Forbidden" in responses[0] and b"HTTP/1.1 403 Forbidden" in responses[2]
    assert b"HTTP/1.1 403" in responses[4]


def test_malformed_request_gets_400_with_istag_and_close(icap_server: tuple[str, int]) -> None:
    with socket.create_connection(icap_server, timeout=5) as sock:
        sock.sendall(b"HELLO THERE\r\n\r\n")
        response = read_response(sock, bytearray())
        assert response.startswith(b"ICAP/1.0 400 Bad Request\r\n")
        assert b"ISTag: \"" in response and b"Connection: close" in response
        assert sock.recv(100) == b""  # closed


def test_unknown_service_404_and_method_405_then_close(icap_server: tuple[str, int]) -> None:
    nosuch = OPTIONS.replace(b"/reqmod", b"/nosuch")
    req = b"GET http://a.example/ HTTP/1.1\r\nHost: a.example\r\n\r\n"
    res = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
    respmod_on_reqmod = (  # a well-formed RESPMOD (its res-hdr too), sent to the REQMOD service
        b"RESPMOD icap://127.0.0.1/reqmod ICAP/1.0\r\nHost: 127.0.0.1\r\nAllow: 204\r\n"
        b"Encapsulated: req-hdr=0, res-hdr=%d, null-body=%d\r\n\r\n%b%b" % (len(req), len(req + res), req, res)
    )
    for message, status in ((nosuch, 404), (respmod_on_reqmod, 405)):
        with socket.create_connection(icap_server, timeout=5) as sock:
            sock.sendall(message)
            response = read_response(sock, bytearray())
            assert status_of(response) == status and b"Connection: close" in response
            assert sock.recv(100) == b""


def test_stalled_client_gets_408(start_icap_server: StartServer) -> None:
    server = start_icap_server("server:\n  request_timeout: 0.5\npolicy:\n  load_default_lists: false\n")
    with socket.create_connection((server.host, server.port), timeout=5) as sock:
        sock.sendall(b"REQMOD icap://127.0.0.1/reqmod ICAP/1.0\r\nHost: x\r\n")
        started = time.monotonic()
        response = read_response(sock, bytearray())
        assert response.startswith(b"ICAP/1.0 408 Request Timeout\r\n"), response
        assert b"Connection: close" in response
        assert time.monotonic() - started >= 0.4
        assert sock.recv(100) == b""


def test_client_reset_mid_message_does_not_hurt_the_server(icap_server: tuple[str, int]) -> None:
    for _ in range(20):
        sock = socket.create_connection(icap_server, timeout=5)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.sendall(reqmod("http://a.example/", method="POST", body=b"y" * 100, preview=None)[:150])
        sock.close()  # RST
    (response,) = exchange(icap_server[1], OPTIONS)
    assert status_of(response) == 200


def test_no_policy_yet_fails_closed_with_a_block_page_not_a_crash(start_icap_server: StartServer) -> None:
    """Redis unreachable since start: every request is blocked, with a page that says why (not an ICAP 500)."""
    dead = f"redis://127.0.0.1:{free_port()}/0"
    server = start_icap_server("server:\n  startup_timeout: 0.5\npolicy:\n  load_default_lists: false\n", redis=dead)
    with socket.create_connection((server.host, server.port), timeout=10) as sock:
        sock.sendall(reqmod("http://example.org/", user="alice"))
        response = read_response(sock, bytearray())
    assert response.startswith(b"ICAP/1.0 200 OK\r\n")
    _, _, rest = response.partition(b"\r\n\r\n")
    assert rest.startswith(b"HTTP/1.1 403 Forbidden\r\n")
    page = rest.decode("utf-8")
    assert "The web filter cannot check approvals at the moment" in page and "暫時未能核對批准紀錄" in page
    assert "<dd>example.org</dd>" in page
    assert server.proc.poll() is None
    record = server.wait_for_log("icap")
    assert (record["status"], record["decision"], record["reason"]) == (200, "block", "policy-unavailable")
    assert record["host"] == "example.org" and record["reference"] and str(record["reference"]) in page


def test_sigterm_finishes_in_flight_work_and_exits(start_icap_server: StartServer) -> None:
    server = start_icap_server()
    with socket.create_connection((server.host, server.port), timeout=5) as sock:
        message = reqmod("http://a.example/", method="POST", body=b"z" * 1000, preview=None, allow_204=False)
        sock.sendall(message[:-200])
        wait_until(lambda: peer_has_read_all(sock), timeout=5, what="the server to read the first part")
        server.proc.send_signal(signal.SIGTERM)
        server.wait_for_log("shutting_down")  # stopping, with the request still in flight
        sock.sendall(message[-200:])
        response = read_parsed(sock, bytearray())  # the echo was streamed: its chunks are not the request's
        assert response.status == 200 and response.body == b"z" * 1000
    assert server.proc.wait(timeout=10) == 0
    events = [line.get("event") for line in server.log_lines()]
    assert "shutting_down" in events and events[-1] == "stopped"


def test_default_lists_load_on_first_start_only(start_icap_server: StartServer, cli: CLI) -> None:
    server = start_icap_server("logging:\n  format: json\n")
    assert any(line.get("event") == "default_lists_loaded" for line in server.log_lines())
    assert "webmail" in cli("categories", "lookup", "https://mail.google.com/").stdout
    assert "web-im" in cli("categories", "lookup", "web.whatsapp.com").stdout
    lines = cli("categories", "stats").stdout.splitlines()  # sources are the indented lines
    stats = dict(line.split("\t") for line in lines if not line.startswith(" "))
    assert {line.split("\t")[0].strip() for line in lines if line.startswith(" ")} == {"curated"}
    assert set(stats) == {"webmail", "cloud-storage", "web-im"} and all(int(n) >= 30 for n in stats.values())
    assert server.stop() == []
    again = start_icap_server("logging:\n  format: json\n")
    assert not any(line.get("event") == "default_lists_loaded" for line in again.log_lines())


def test_the_listening_line_names_the_quick_scan_in_use(start_icap_server: StartServer) -> None:
    """`serve` says which quick scan answers: the C one as built (with CI=true it must be), the Python twin when
    CLEARANCE_NO_SPEEDUPS hides it (`make test`'s second pass runs this file so)."""
    import os

    from icap_server.protocol import quick_scan

    handle = start_icap_server()
    line = handle.wait_for_log("listening")
    expected = "python" if os.environ.get("CLEARANCE_NO_SPEEDUPS") else quick_scan("X-Client-Username").name
    if os.environ.get("CI") == "true" and not os.environ.get("CLEARANCE_NO_SPEEDUPS"):
        expected = "c"
    assert line["quick_scan"] == expected, line
    # And it answers: a Squid-shaped GET, read by that scan, gets its 204.
    (answer,) = exchange(handle.port, reqmod("http://www.example.com/"))
    assert status_of(answer) == 204
