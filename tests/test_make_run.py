"""The README's run command on a fresh clone: a working filter with the embedded Redis and default lists."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import fail_on_survivors
from tests.support.net import free_port, wait_for_port
from tests.support.processes import stop_group
from tests.support.requirements import require_program
from tests.support.waiting import wait_until

PROJECT_ROOT = Path(__file__).resolve().parent.parent
MOST_LINES_BEFORE_THE_SERVER = 15  # issue 13: a few lines (the banner), not pip's build noise


@pytest.fixture
def fresh_clone(tmp_path: Path) -> Path:
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(PROJECT_ROOT), str(clone)], check=True)
    return clone


def stop_embedded_redis(clone: Path) -> None:
    """The embedded redis-server outlives `make run` by design (a daemon of its own): stop it, and wait."""
    pid_file = clone / "var" / "redis.pid"
    if pid_file.exists():
        with contextlib.suppress(ProcessLookupError, ValueError):
            pid = int(pid_file.read_text().strip())
            os.kill(pid, signal.SIGTERM)
            wait_until(lambda: not pid_alive(pid), timeout=10, what=f"embedded redis-server {pid} to exit")


def pid_alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] not in ("Z", "X")
    except OSError:
        return False


@pytest.fixture
def make_run(fresh_clone: Path, tmp_path: Path) -> Iterator[tuple[Path, int, Path]]:
    port = free_port()
    env = {key: value for key, value in os.environ.items() if not key.startswith("CLEARANCE_")}
    # As from a shell: not a sub-make of `make test` (MAKELEVEL makes make print "Entering directory").
    for key in ("PYTHONPATH", "VIRTUAL_ENV", "MAKEFLAGS", "MAKELEVEL", "MFLAGS"):
        env.pop(key, None)
    log = (tmp_path / "make-run.log").open("w")
    proc = subprocess.Popen(
        ["make", "run", f"LISTEN=127.0.0.1:{port}"],
        cwd=fresh_clone,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        try:
            wait_for_port(port, timeout=400)  # the first run builds the virtualenv
        except TimeoutError:
            log.flush()
            raise AssertionError((tmp_path / "make-run.log").read_text()[-3000:]) from None
        yield fresh_clone, port, tmp_path / "make-run.log"
    finally:
        survivors = stop_group(proc)  # make, clearance serve and its workers: the session started here
        log.close()
        stop_embedded_redis(fresh_clone)
        fail_on_survivors({"make run": survivors})


def server_output(output: Path) -> list[str] | None:
    """The lines make run printed before the server's first log line (a JSON object with an event), once
    that line is there."""
    lines = output.read_text(errors="replace").splitlines()
    for index, line in enumerate(lines):
        with contextlib.suppress(ValueError):
            entry = json.loads(line)
            if isinstance(entry, dict) and "event" in entry:
                return lines[:index]
    return None


@pytest.mark.cicap
def test_make_run_on_a_fresh_clone_serves_with_embedded_redis(make_run: tuple[Path, int, Path]) -> None:
    client = require_program("c-icap-client")
    clone, port, output = make_run

    # A quiet start: a few lines (where it listens, the store, the squid.conf lines), then the server's own
    # log; pip's and the compiler's output went to the install log instead.
    wait_until(lambda: server_output(output) is not None, timeout=10, what="the server's first line in make's output")
    lines = server_output(output) or []
    assert len(lines) <= MOST_LINES_BEFORE_THE_SERVER, f"{len(lines)} lines:\n" + "\n".join(lines[:40])
    banner = "\n".join(lines)
    assert f"127.0.0.1:{port}" in banner and "embedded Redis in ./var" in banner, banner
    icap_service = [line.strip() for line in lines if "icap_service " in line]
    assert icap_service == [f"icap_service clearance_req reqmod_precache icap://127.0.0.1:{port}/reqmod bypass=off"]
    assert "icap_enable on" in banner and "adaptation_access clearance_req allow all" in banner, banner
    install_log = clone / ".venv" / "install.log"
    assert ".venv/install.log" in banner, banner
    assert "Successfully installed" in install_log.read_text(), install_log

    def icap(*args: str) -> str:
        result = subprocess.run(
            [client, "-i", "127.0.0.1", "-p", str(port), "-s", "reqmod", "-v", *args],
            capture_output=True, text=True, timeout=30,
        )
        return result.stdout + result.stderr

    options = icap("-method", "OPTIONS")
    assert "ICAP/1.0 200 OK" in options and "Methods: REQMOD" in options

    # The Redis behind it is the private one under ./var, run from the bundled binary, persisted with AOF.
    pid = int((clone / "var" / "redis.pid").read_text().strip())
    executable = os.readlink(f"/proc/{pid}/exe")
    assert executable.startswith(str(clone / ".venv")), executable
    assert (clone / "var" / "redis.sock").exists()
    # Valkey (and Redis 7+) keep the append-only file in appendonlydir/.
    wait_until(lambda: list((clone / "var").glob("appendonlydir/appendonly.aof*")), timeout=5, what="the AOF file")

    # Default lists were loaded on first start: webmail is blocked, an ordinary site passes.
    assert "此網站已被封鎖" in icap("-req", "http://mail.google.com/", "-x", "X-Client-Username: staff1")
    assert "ICAP/1.0 204" in icap("-req", "http://example.org/")

    # The admin commands find the same store.
    admin = subprocess.run(
        [str(clone / ".venv" / "bin" / "clearance"), "categories", "lookup", "web.whatsapp.com"],
        cwd=clone, capture_output=True, text=True, timeout=60,
        env={key: value for key, value in os.environ.items() if not key.startswith("CLEARANCE_")},
    )
    assert "web-im" in admin.stdout, admin.stderr
    wait_for_port(port)
