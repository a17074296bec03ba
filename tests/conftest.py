"""Shared fixtures: a real Redis per session (flushed per test), the clearance CLI, a running ICAP server.

Every server runs in a process group of its own and is stopped as a group; a process that outlives its
SIGTERM fails the test, and a check after every test fails it if anything the suite started is still running.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
from collections.abc import Callable, Generator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.support import cli_zygote as cli_zygote_module
from tests.support.cli_zygote import ZygoteClient
from tests.support.net import free_port, wait_for_port
from tests.support.processes import Leftovers, children_of, record_spawns, stop_group
from tests.support.redis_server import running_redis
from tests.support.servers import fail_on_survivors, serve_command, spawn_server
from tests.support.waiting import wait_until

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
    path.write_text(cli_config_text(), encoding="utf-8")
    return path


def cli_config_text(load_default_lists: bool = False) -> str:
    """The tests' CLI config: JSON logs, grants without a directory; the shipped catalogue only when asked for."""
    return (
        "organisation:\n  name_en: Test Department\n  name_zh: 測試部門\n"
        f"policy:\n  load_default_lists: {'true' if load_default_lists else 'false'}\n"
        # Most tests grant without a directory; tests of the approval rules use their own config.
        "approvals:\n  require_department_head: false\n  min_justification_chars: 0\n"
        "logging:\n  format: json\n"
    )


@dataclass(frozen=True)
class Served:
    """A module's own Redis and `clearance serve` (`serving`): where they are and how to reach them."""

    redis_url: str
    env: dict[str, str]
    port: int
    log: Path


@contextmanager
def serving(base: Path, config: Path, config_text: str) -> Iterator[Served]:
    """A real Redis and a real `clearance serve` on free ports, listening before this yields; both stopped after.

    For stacks a whole module shares (Squid in front): Squid must not ask for OPTIONS before the server listens.
    """
    with running_redis(base / "redis") as redis_url:
        env = clearance_env(redis_url, config)
        port = free_port()
        log = base / "serve.log"
        server = spawn_server(serve_command(port, config_text), env, log)
        try:
            wait_for_port(port)
            yield Served(redis_url, env, port, log)
        finally:
            fail_on_survivors({"clearance serve": stop_group(server)})


def clearance_env(redis_url: str, config: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["CLEARANCE_REDIS_URL"] = redis_url
    env["CLEARANCE_CONFIG"] = str(config)
    env["PYTHONPATH"] = str(PROJECT_ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


CLI = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture(scope="session")
def cli_zygote(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ZygoteClient]:
    """The session's fork server for CLI calls (tests/support/cli_zygote.py): the imports once, a fork per call.

    The zygote itself belongs to this fixture; what it forks belongs to the test that asked for it, so a CLI
    child (or anything it started) still running after its test fails that test.
    """
    zygote = ZygoteClient(tmp_path_factory.mktemp("cli-zygote"))
    LEFTOVERS.forkers.add(zygote.pid)
    cli_zygote_module.ACTIVE.append(zygote)
    try:
        yield zygote
    finally:
        cli_zygote_module.ACTIVE.remove(zygote)
        zygote.stop()
        LEFTOVERS.forkers.discard(zygote.pid)


@pytest.fixture
def cli(redis_url: str, config_file: Path, cli_zygote: ZygoteClient) -> CLI:
    """Run `clearance ARGS…` against the test Redis (a fork of the session's CLI zygote); the CompletedProcess."""

    def run(*args: str, check: bool = True, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        proc = cli_zygote.run(args, env=clearance_env(redis_url, config_file), input=stdin, timeout=60)
        if check and proc.returncode != 0:
            raise AssertionError(f"clearance {' '.join(args)} exited {proc.returncode}: {proc.stderr}")
        return proc

    return run


def as_actor(cli: CLI, actor: str = "alice.admin") -> CLI:
    """The CLI with `--actor ACTOR` before every command: who the audit trail names."""

    def run(*args: str, check: bool = True, stdin: str | None = None) -> Any:
        return cli("--actor", actor, *args, check=check, stdin=stdin)

    return run


class ServerHandle:
    """A running `clearance serve` subprocess, leader of a process group of its own."""

    def __init__(self, proc: subprocess.Popen[bytes], port: int, log_path: Path) -> None:
        self.proc = proc
        self.host = "127.0.0.1"
        self.port = port
        self.log_path = log_path

    def wait_for_log(self, event: str, timeout: float = 5.0) -> dict[str, object]:
        """The first log line with this event (servers write log lines in batches, every 0.1 s)."""

        def found() -> dict[str, object] | None:
            return next((line for line in self.log_lines() if line.get("event") == event), None)

        try:
            return wait_until(found, timeout, interval=0.05, what=f"{event!r} in {self.log_path}")
        except AssertionError:
            raise AssertionError(f"no {event!r} in {self.log_path}:\n{self.log_path.read_text()[-2000:]}") from None

    def log_lines(self) -> list[dict[str, object]]:
        lines = []
        for line in self.log_path.read_text(encoding="utf-8").splitlines():
            if line.startswith("{"):
                lines.append(json.loads(line))
        return lines

    def events(self, event: str) -> list[dict[str, object]]:
        return [line for line in self.log_lines() if line.get("event") == event]

    def worker_pids(self) -> set[int]:
        """The supervisor's live children, read from /proc (workers, and the portal's process if any)."""
        return children_of(self.proc.pid)

    def stop(self) -> list[str]:
        """SIGTERM the whole group and wait for it to empty; the processes that outlived that ([] = clean)."""
        return stop_group(self.proc)


StartServer = Callable[..., ServerHandle]


@pytest.fixture
def start_icap_server(redis_url: str, tmp_path: Path) -> Iterator[StartServer]:
    """Factory: start `clearance serve` with extra YAML config and/or another Redis URL; stopped at teardown."""
    started: list[ServerHandle] = []

    def start(config_text: str = "", redis: str | None = None, wait: bool = True) -> ServerHandle:
        index = len(started)
        config = tmp_path / f"serve-{index}.yaml"
        text = config_text or "policy:\n  load_default_lists: false\nlogging:\n  format: json\n"
        config.write_text(text, encoding="utf-8")
        port = free_port()
        log_path = tmp_path / ("serve.log" if index == 0 else f"serve-{index}.log")
        proc = spawn_server(serve_command(port, text), clearance_env(redis or redis_url, config), log_path)
        handle = ServerHandle(proc, port, log_path)
        started.append(handle)
        if wait:
            wait_for_port(port)
        return handle

    yield start
    fail_on_survivors({f"serve on port {handle.port}": handle.stop() for handle in started})


@pytest.fixture
def icap_server(start_icap_server: StartServer) -> tuple[str, int]:
    """A real `clearance serve` subprocess on a free port (default lists off, JSON logs); (host, port)."""
    handle = start_icap_server()
    return (handle.host, handle.port)


# ---- nothing the suite starts may outlive its test ------------------------------------------------------

LEFTOVERS = Leftovers(os.getpid())


class LeftoverChecks:
    """Hooks registered as a global plugin: a conftest's own hooks never see session-scoped fixtures."""

    @pytest.hookimpl(wrapper=True)
    def pytest_fixture_setup(
        self, fixturedef: pytest.FixtureDef[object], request: pytest.FixtureRequest
    ) -> Generator[None, object, object]:
        """Processes a module- or session-scoped fixture starts belong to it until its teardown."""
        if fixturedef.scope == "function":
            return (yield)
        before = set(LEFTOVERS.ours())
        try:
            return (yield)
        finally:
            born = LEFTOVERS.claim(before, fixturedef.argname)
            if born:
                fixturedef.addfinalizer(functools.partial(LEFTOVERS.release, born))

    @pytest.hookimpl(wrapper=True, tryfirst=True)
    def pytest_runtest_teardown(self, item: pytest.Item, nextitem: pytest.Item | None) -> Generator[None, None, None]:
        """After the teardown: anything the test (or a fixture torn down with it) started must be gone."""
        yield
        left = LEFTOVERS.check()
        if left:
            pytest.fail(f"{item.nodeid} left processes running (killed now):\n  " + "\n  ".join(left))

    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        left = LEFTOVERS.check()
        if left:
            sys.stderr.write("\nprocesses left running by the session (killed now):\n  " + "\n  ".join(left) + "\n")
            session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_configure(config: pytest.Config) -> None:
    record_spawns(LEFTOVERS)
    config.pluginmanager.register(LeftoverChecks(), "clearance-leftover-checks")
