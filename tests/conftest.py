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


@pytest.fixture
def icap_server(redis_url: str, config_file: Path, tmp_path: Path) -> Iterator[tuple[str, int]]:
    """A real `clearance serve` subprocess on a free port; yields (host, port)."""
    port = free_port()
    log = (tmp_path / "serve.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "icap_server", "serve", "--listen", f"127.0.0.1:{port}"],
        env=clearance_env(redis_url, config_file),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_for_port(port)
        yield ("127.0.0.1", port)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
