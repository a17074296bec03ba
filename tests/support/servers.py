"""Starting `clearance serve` for a test, and failing the test if anything it started outlives the stop."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest


def serve_command(port: int, config_text: str) -> list[str]:
    """`clearance serve` on port; one worker unless the config chooses (workers are the subject elsewhere)."""
    command = [sys.executable, "-m", "icap_server", "serve", "--listen", f"127.0.0.1:{port}"]
    return command if "workers:" in config_text else [*command, "--workers", "1"]


def spawn_server(command: list[str], env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    """A server process in a session (and process group) of its own, its output going to log_path."""
    with log_path.open("w") as log:
        return subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def fail_on_survivors(survivors: dict[str, list[str]]) -> None:
    """Fail the test, naming every process that outlived its group's SIGTERM."""
    survivors = {name: left for name, left in survivors.items() if left}
    if survivors:
        detail = "\n".join(f"{name}:\n  " + "\n  ".join(left) for name, left in survivors.items())
        pytest.fail(f"processes outlived SIGTERM (killed since):\n{detail}")
