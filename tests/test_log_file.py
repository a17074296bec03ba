"""`logging.file`: serve's lines in a file, and SIGUSR1 after a rotation (issue 13).

A real `clearance serve` with two workers writes its access and event lines to the file; the file is moved
away as logrotate does; SIGUSR1 to the main process makes every process open the path again: later lines go
to the new file, none to the old one after that, and nothing dies of the signal.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

from tests.conftest import StartServer
from tests.support.icap_client import exchange, reqmod
from tests.support.waiting import wait_until


def records(path: Path) -> list[dict[str, object]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.startswith("{")]


def served(path: Path, host: str) -> list[dict[str, object]]:
    return [line for line in records(path) if line.get("event") == "icap" and line.get("host") == host]


def test_lines_go_to_the_file_and_follow_a_rotation_on_sigusr1(start_icap_server: StartServer, tmp_path: Path) -> None:
    log_file = tmp_path / "logs" / "clearance.log"
    log_file.parent.mkdir()
    config = (
        f"server:\n  workers: 2\npolicy:\n  load_default_lists: false\nlogging:\n  format: json\n  file: {log_file}\n"
    )
    server = start_icap_server(config)
    wait_until(
        lambda: len([r for r in records(log_file) if r.get("event") == "listening"]) == 2,
        timeout=20,
        what="both workers' listening lines in the file",
    )
    for _ in range(10):  # on fresh connections, so both workers take some
        exchange(server.port, *[reqmod("http://before.example/")] * 5)
    wait_until(lambda: len(served(log_file, "before.example")) == 50, timeout=5, what="50 lines before")
    assert server.log_path.read_text(encoding="utf-8").strip() == ""  # nothing on stdout
    assert {line.get("worker") for line in served(log_file, "before.example")} == {0, 1}

    rotated = log_file.with_suffix(".log.1")
    log_file.rename(rotated)  # what logrotate does (create, not copytruncate)
    os.kill(server.proc.pid, signal.SIGUSR1)
    wait_until(lambda: log_file.exists(), timeout=5, what="the log file opened again")

    def reopened_everywhere() -> bool:
        exchange(server.port, reqmod("http://probe.example/"))
        return {line.get("worker") for line in served(log_file, "probe.example")} == {0, 1}

    wait_until(reopened_everywhere, timeout=10, interval=0.2, what="both workers writing the new file")
    exchange(server.port, *[reqmod("http://after.example/")] * 20)
    wait_until(lambda: len(served(log_file, "after.example")) == 20, timeout=5, what="20 lines after")
    assert served(rotated, "after.example") == [] and len(served(rotated, "before.example")) == 50
    assert server.proc.poll() is None and len(server.worker_pids()) == 2  # nobody died of SIGUSR1


def test_a_log_file_that_cannot_be_opened_is_one_line_and_exit_2(
    start_icap_server: StartServer, tmp_path: Path
) -> None:
    config = f"logging:\n  format: json\n  file: {tmp_path / 'missing-dir' / 'clearance.log'}\n"
    server = start_icap_server(config, wait=False)
    assert server.proc.wait(timeout=30) == 2
    (line,) = server.log_path.read_text(encoding="utf-8").strip().splitlines()
    assert line.startswith("clearance: logging.file ") and "cannot open" in line, line
