"""Process plumbing for signals: dying with the supervisor, taking in the backlog on SIGTERM, SIGHUP reloads.

Kept apart from `server.py` (the connection logic) and `supervisor.py` (the process pool), which both use it.
"""

from __future__ import annotations

import array
import asyncio
import contextlib
import ctypes
import fcntl
import os
import signal
import socket
import termios
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Protocol

import structlog

from icap_server.config import ServerConfig

if TYPE_CHECKING:
    from icap_server.service.application import Application

log = structlog.get_logger("clearance.icap")
STOP_QUIET = 0.25  # seconds a connection between messages must stay quiet before a stop closes it
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>

Reload = Callable[["Application"], Awaitable["Application | None"]]


class Reloadable(Protocol):
    """What a reload swaps: the Application new connections get, and the settings the server reads."""

    app: Application
    settings: ServerConfig


def die_with_parent(parent: int, signum: int = signal.SIGTERM) -> None:
    """In a forked child: the kernel sends `signum` when the supervisor dies, however it dies (Linux).

    Checked against the parent's pid right after, to close the race of a parent that died before the call.
    Where prctl is missing the child is unguarded, as before: the supervisor's own stop is then the only one.
    """
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, int(signum), 0, 0, 0)
    if os.getppid() != parent:
        os._exit(1)  # orphaned already: nobody supervises us, and nothing of ours has started


def unread_bytes(transport: asyncio.BaseTransport) -> int:
    """Bytes the kernel holds for this connection that the loop has not read yet (FIONREAD)."""
    sock = transport.get_extra_info("socket")
    if sock is None:
        return 0
    count = array.array("i", [0])
    with contextlib.suppress(OSError):
        fcntl.ioctl(sock.fileno(), termios.FIONREAD, count)
    return count[0]


async def accept_backlog(server: asyncio.Server, protocol: Callable[[], asyncio.Protocol]) -> None:
    """Close the listening sockets, but first take in the connections already queued on them.

    Closing a listening socket resets every connection in its accept queue, requests and all (and with
    SO_REUSEPORT each worker has its own queue). Duplicates keep the sockets open while the queue is emptied.
    """
    listeners = [socket.socket(fileno=os.dup(sock.fileno())) for sock in server.sockets]
    server.close()
    loop = asyncio.get_running_loop()
    accepting = []
    for listener in listeners:
        with listener:
            listener.setblocking(False)
            while True:
                try:
                    conn, _address = listener.accept()
                except OSError:  # BlockingIOError: the queue is empty
                    break
                conn.setblocking(False)
                accepting.append(loop.create_task(loop.connect_accepted_socket(protocol, conn)))
    await asyncio.gather(*accepting, return_exceptions=True)


async def reload_on_hangup(server: Reloadable, requested: asyncio.Event, reload: Reload | None) -> None:
    """Each SIGHUP: a fresh Application for new connections (those open keep theirs until they close)."""
    while True:
        await requested.wait()
        requested.clear()
        if reload is None:
            log.warning("reload_unsupported")
            continue
        log.info("reloading", signal="SIGHUP")
        try:
            fresh = await reload(server.app)
        except Exception:  # a reload must never take the service down
            log.exception("reload_failed")
            continue
        if fresh is not None:
            server.app = fresh
            server.settings = fresh.config.server
