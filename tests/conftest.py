"""Shared fixtures: a real Redis per session (flushed per test), the clearance CLI, a running ICAP server."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from tests.support.net import free_port, wait_for_port
from tests.support.redis_server import running_redis

PROJECT_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def redis_server_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with running_redis(tmp_path_factory.mktemp("redis")) as url:
        yield url


@pytest.fixture
def redis_url(redis_server_url: str) -> Iterator[str]:
    """URL of a real, empty Redis for this test."""
    client = redis.Redis.from_url(redis_server_url)
    client.flushall()
    client.close()
    yield redis_server_url


@pytest.fixture
def sync_redis(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    yield client
    client.close()


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    """A minimal config for tests: JSON logs, default lists not auto-loaded."""
    path = tmp_path / "clearance.yaml"
    path.write_text(
        "organisation:\n  name_en: Test Department\n  name_zh: 測試部門\n"
        "policy:\n  load_default_lists: false\n"
        # Most tests grant without a directory; tests of the approval rules use their own config.
        "approvals:\n  require_department_head: false\n  min_justification_chars: 0\n"
        "logging:\n  format: json\n",
        encoding="utf-8",
    )
    return path


def clearance_env(redis_url: str, config: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["CLEARANCE_REDIS_URL"] = redis_url
    env["CLEARANCE_CONFIG"] = str(config)
    env["PYTHONPATH"] = str(PROJECT_ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


CLI = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def cli(redis_url: str, config_file: Path) -> CLI:
    """Run `clearance ARGS…` as a real subprocess against the test Redis; returns the CompletedProcess."""

    def run(*args: str, check: bool = True, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [sys.executable, "-m", "icap_server", *args],
            env=clearance_env(redis_url, config_file),
            capture_output=True,
            text=True,
            input=stdin,
            timeout=60,
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"clearance {' '.join(args)} exited {proc.returncode}: {proc.stderr}")
        return proc

    return run


class ServerHandle:
    """A running `clearance serve` subprocess."""

    def __init__(self, proc: subprocess.Popen[bytes], port: int, log_path: Path) -> None:
        self.proc = proc
        self.host = "127.0.0.1"
        self.port = port
        self.log_path = log_path

    def wait_for_log(self, event: str, timeout: float = 5.0) -> dict[str, object]:
        """The first log line with this event (servers write log lines in batches, every 0.1 s)."""
        import time

        deadline = time.monotonic() + timeout
        while True:
            for line in self.log_lines():
                if line.get("event") == event:
                    return line
            if time.monotonic() > deadline:
                raise AssertionError(f"no {event!r} in {self.log_path}:\n{self.log_path.read_text()[-2000:]}")
            time.sleep(0.05)

    def log_lines(self) -> list[dict[str, object]]:
        import json

        lines = []
        for line in self.log_path.read_text(encoding="utf-8").splitlines():
            if line.startswith("{"):
                lines.append(json.loads(line))
        return lines


StartServer = Callable[..., ServerHandle]


@pytest.fixture
def start_icap_server(redis_url: str, tmp_path: Path) -> Iterator[StartServer]:
    """Factory: start `clearance serve` with extra YAML config and/or another Redis URL; stopped at teardown."""
    started: list[ServerHandle] = []

    def start(config_text: str = "", redis: str | None = None, wait: bool = True) -> ServerHandle:
        index = len(started)
        config = tmp_path / f"serve-{index}.yaml"
        config.write_text(
            config_text or "policy:\n  load_default_lists: false\nlogging:\n  format: json\n", encoding="utf-8"
        )
        port = free_port()
        log_path = tmp_path / ("serve.log" if index == 0 else f"serve-{index}.log")
        with log_path.open("w") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "icap_server", "serve", "--listen", f"127.0.0.1:{port}"],
                env=clearance_env(redis or redis_url, config),
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        handle = ServerHandle(proc, port, log_path)
        started.append(handle)
        if wait:
            wait_for_port(port)
        return handle

    yield start
    for handle in started:
        if handle.proc.poll() is None:
            handle.proc.terminate()
            try:
                handle.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                handle.proc.kill()


@pytest.fixture
def icap_server(start_icap_server: StartServer) -> tuple[str, int]:
    """A real `clearance serve` subprocess on a free port (default lists off, JSON logs); (host, port)."""
    handle = start_icap_server()
    return (handle.host, handle.port)
