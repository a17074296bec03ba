"""ICAPS: `server.tls_cert` / `tls_key` make the listener speak ICAP over TLS (issue 13).

A self-signed certificate for 127.0.0.1 is made with openssl; a TLS client that trusts it gets the same answers
as over plain ICAP (the quick path and the block page included); a plain connection gets nothing; a key that
cannot be loaded stops `serve` at once with one line and exit 2.
"""

from __future__ import annotations

import socket
import ssl
import subprocess
from pathlib import Path

import pytest

from tests.conftest import CLI, StartServer
from tests.support.icap_client import OPTIONS, read_response, reqmod
from tests.support.origin import OriginServer
from tests.support.requirements import require_program
from tests.support.squid import SquidProxy


def certificate(folder: Path) -> tuple[Path, Path]:
    """A self-signed certificate (and key) for 127.0.0.1, valid for a day."""
    require_program("openssl")
    cert, key = folder / "icaps.crt", folder / "icaps.key"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return cert, key


def tls_config(cert: Path, key: Path) -> str:
    return (
        "policy:\n  load_default_lists: false\nlogging:\n  format: json\n"
        f"server:\n  tls_cert: {cert}\n  tls_key: {key}\n"
    )


def ask(port: int, cafile: Path, *messages: bytes) -> list[bytes]:
    context = ssl.create_default_context(cafile=str(cafile))
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname="127.0.0.1") as sock,
    ):
        answers, buffer = [], bytearray()
        for message in messages:
            sock.sendall(message)
            answers.append(read_response(sock, buffer))  # type: ignore[arg-type]
        return answers


def test_icaps_answers_over_tls_and_nothing_in_the_clear(
    start_icap_server: StartServer, cli: CLI, tmp_path: Path
) -> None:
    cert, key = certificate(tmp_path)
    server = start_icap_server(tls_config(cert, key))
    assert server.wait_for_log("listening")["scheme"] == "icaps"
    cli("categories", "add", "webmail", "mail.example")
    options, passed, blocked = ask(
        server.port, cert, OPTIONS, reqmod("http://news.example/"), reqmod("http://mail.example/", user="bob")
    )
    assert options.startswith(b"ICAP/1.0 200 OK") and b"Methods: REQMOD" in options
    assert passed.startswith(b"ICAP/1.0 204")
    # The change may still be on its way to the worker: once it is there, a listed host is blocked over TLS too.
    for _ in range(50):
        if b"HTTP/1.1 403 Forbidden" in blocked:
            break
        (blocked,) = ask(server.port, cert, reqmod("http://mail.example/", user="bob"))
    assert b"HTTP/1.1 403 Forbidden" in blocked and b"X-Clearance-Decision: block" in blocked
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as plain:
        plain.sendall(OPTIONS)
        plain.settimeout(5)
        try:
            reply = plain.recv(100)
        except (ConnectionResetError, TimeoutError):
            reply = b""
        assert not reply.startswith(b"ICAP/1.0")  # a plain client gets no ICAP answer from a TLS listener


def test_a_key_that_cannot_be_loaded_is_one_line_and_exit_2(start_icap_server: StartServer, tmp_path: Path) -> None:
    cert, _key = certificate(tmp_path)
    wrong = tmp_path / "not-a-key.pem"
    wrong.write_text("not a key\n", encoding="utf-8")
    server = start_icap_server(tls_config(cert, wrong), wait=False)
    assert server.proc.wait(timeout=30) == 2
    (line,) = server.log_path.read_text(encoding="utf-8").strip().splitlines()
    assert line.startswith("clearance: server.tls_cert / tls_key: cannot load"), line


@pytest.mark.parametrize("keys", ["  tls_cert: a.pem\n", "  tls_key: a.key\n"])
def test_one_of_the_pair_alone_is_refused(tmp_path: Path, keys: str) -> None:
    from icap_server.config import ConfigError, load_config

    path = tmp_path / "config.yaml"
    path.write_text("server:\n" + keys, encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert "set both tls_cert and tls_key" in str(caught.value) and "\n" not in str(caught.value)


@pytest.mark.squid
def test_a_real_squid_filters_through_icaps_with_tls_cafile(
    start_icap_server: StartServer, cli: CLI, tmp_path: Path
) -> None:
    """Squid names the service `icaps://127.0.0.1:PORT/reqmod … tls-cafile=CA`: blocks and passes as over ICAP."""
    require_program("squid")
    require_program("curl")
    cert, key = certificate(tmp_path)
    cert.chmod(0o644)  # Squid, as its own user, reads the CA file
    server = start_icap_server(tls_config(cert, key))
    cli("categories", "add", "webmail", "mail.example")
    hosts = ["mail.example", "news.example"]
    with OriginServer() as origin, SquidProxy(server.port, hosts, tmp_path / "squid", icap_tls_cafile=cert) as squid:
        assert "icaps://" in squid.conf_path.read_text(encoding="utf-8")
        passed = squid.curl(f"http://news.example:{origin.port}/hello", user="alice")
        assert passed.status == 200 and passed.text == f"origin-ok news.example:{origin.port} /hello", passed
        blocked = squid.curl(f"http://mail.example:{origin.port}/inbox", user="alice")
        for _ in range(50):  # the listing may still be on its way to the worker
            if blocked.status == 403:
                break
            blocked = squid.curl(f"http://mail.example:{origin.port}/inbox", user="alice")
        assert blocked.status == 403, blocked
        assert "x-clearance-reference" in {name.lower() for name in blocked.headers}, blocked.headers
