"""Exit 0 if the ICAP service at HOST:PORT (default 127.0.0.1:1344) answers OPTIONS with 200: the container's
HEALTHCHECK, and a quick check after installing the package (`/opt/clearance/bin/python icap-options.py`)."""

from __future__ import annotations

import socket
import sys


def options_ok(host: str, port: int, timeout: float = 5.0) -> bool:
    request = f"OPTIONS icap://{host}:{port}/reqmod ICAP/1.0\r\nHost: {host}\r\n\r\n".encode()
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(request)
            answer = b""
            while b"\r\n\r\n" not in answer:
                data = sock.recv(4096)
                if not data:
                    break
                answer += data
    except OSError as error:
        print(f"icap-options: {host}:{port}: {error}", file=sys.stderr)
        return False
    status = answer.split(b"\r\n", 1)[0].decode(errors="replace")
    if not status.startswith("ICAP/1.0 200") or b"\r\nMethods: REQMOD" not in answer:
        print(f"icap-options: {host}:{port} answered {status!r}", file=sys.stderr)
        return False
    return True


def main(argv: list[str]) -> int:
    host, _, port = (argv[0] if argv else "127.0.0.1:1344").rpartition(":")
    return 0 if options_ok(host or "127.0.0.1", int(port)) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
