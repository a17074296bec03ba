"""Small helpers for tests that start real servers on loopback."""

from __future__ import annotations

import socket
import time


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, host: str = "127.0.0.1", timeout: float = 15.0) -> None:
    """Block until something accepts connections on host:port, or raise TimeoutError."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listening on {host}:{port} after {timeout}s")


def _tcp_entry(local_port: int, remote_port: int) -> list[str] | None:
    """The /proc/net/tcp row of the loopback connection local_port → remote_port, if there is one."""
    with open("/proc/net/tcp", encoding="ascii") as table:
        for row in table.readlines()[1:]:
            fields = row.split()
            local, remote = fields[1], fields[2]
            if int(local.split(":")[1], 16) == local_port and int(remote.split(":")[1], 16) == remote_port:
                return fields
    return None


def peer_has_read_all(sock: socket.socket) -> bool:
    """True once the server side of sock's connection has read every byte sent on it.

    The server's end of the connection is a socket of its own in /proc/net/tcp; its receive queue is
    empty once the server process has taken the bytes in. This lets a test know that a request's head
    is "in flight" in the server without sleeping and hoping.
    """
    client_port = sock.getsockname()[1]
    server_port = sock.getpeername()[1]
    entry = _tcp_entry(server_port, client_port)
    if entry is None:
        return False
    _tx_queue, rx_queue = entry[4].split(":")
    return int(rx_queue, 16) == 0
