"""A tiny blocking ICAP client for tests: build requests, send them on a socket, read whole responses.

Every response read here is also checked by the strict grammar reader (`icap_grammar`), which shares no
code with this framing or with the server: a malformed answer from a running server fails the test.
"""

from __future__ import annotations

import socket

from .icap_grammar import ICAPResponse, parse_one


def reqmod(
    url: str,
    user: str | None = None,
    method: str = "GET",
    body: bytes | None = None,
    allow_204: bool = True,
    preview: int | None = 0,
    extra_headers: tuple[str, ...] = (),
) -> bytes:
    """A REQMOD as Squid sends it (absolute-form URL, Preview: 0, Allow: 204)."""
    host = url.split("://", 1)[-1].split("/", 1)[0]
    target = host if method == "CONNECT" else url
    http_lines = [f"{method} {target} HTTP/1.1", f"Host: {host}"]
    if body is not None:
        http_lines.append(f"Content-Length: {len(body)}")
    http = ("\r\n".join(http_lines) + "\r\n\r\n").encode()
    icap = ["REQMOD icap://127.0.0.1/reqmod ICAP/1.0", "Host: 127.0.0.1"]
    if allow_204:
        icap.append("Allow: 204")
    if preview is not None:
        icap.append(f"Preview: {preview}")
    if user:
        icap.append(f"X-Client-Username: {user}")
    icap.extend(extra_headers)
    if body is None:
        icap.append(f"Encapsulated: req-hdr=0, null-body={len(http)}")
        return ("\r\n".join(icap) + "\r\n\r\n").encode() + http
    icap.append(f"Encapsulated: req-hdr=0, req-body={len(http)}")
    head = ("\r\n".join(icap) + "\r\n\r\n").encode() + http
    if preview is not None:
        first = body[:preview]
        rest = body[preview:]
        chunk = (b"%x\r\n%b\r\n" % (len(first), first)) if first else b""
        if not rest:
            return head + chunk + b"0; ieof\r\n\r\n"
        return head + chunk + b"0\r\n\r\n"  # the rest follows a 100 Continue
    return head + (b"%x\r\n%b\r\n" % (len(body), body) if body else b"") + b"0\r\n\r\n"


OPTIONS = b"OPTIONS icap://127.0.0.1/reqmod ICAP/1.0\r\nHost: 127.0.0.1\r\n\r\n"


def read_response(sock: socket.socket, buffer: bytearray) -> bytes:
    """Read one complete ICAP response (head, encapsulated headers, chunked body) from sock; grammar-checked."""
    response = _read_framed(sock, buffer)
    parse_one(response)  # raises GrammarError (an AssertionError) if the bytes break RFC 3507
    return response


def read_parsed(sock: socket.socket, buffer: bytearray) -> ICAPResponse:
    """The next response from sock, as the grammar reader parsed it."""
    return parse_one(_read_framed(sock, buffer))


def _read_framed(sock: socket.socket, buffer: bytearray) -> bytes:
    """One response's bytes, framed leniently (the grammar reader judges them afterwards)."""

    def fill() -> None:
        data = sock.recv(65536)
        if not data:
            raise ConnectionError("connection closed before the response was complete")
        buffer.extend(data)

    while b"\r\n\r\n" not in buffer:
        fill()
    head_end = buffer.index(b"\r\n\r\n") + 4
    head = bytes(buffer[:head_end])
    encapsulated = ""
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"encapsulated":
            encapsulated = value.decode().strip()
    end = head_end
    if encapsulated:
        items = [item.strip().split("=") for item in encapsulated.split(",")]
        body_name, body_offset = items[-1][0], int(items[-1][1])
        end = head_end + body_offset
        while len(buffer) < end:
            fill()
        if body_name != "null-body":
            while True:
                while b"\r\n" not in buffer[end:]:
                    fill()
                line_end = buffer.index(b"\r\n", end)
                size = int(bytes(buffer[end:line_end]).split(b";")[0], 16)
                end = line_end + 2
                if size == 0:
                    while b"\r\n" not in buffer[end:]:
                        fill()
                    end = buffer.index(b"\r\n", end) + 2
                    break
                while len(buffer) < end + size + 2:
                    fill()
                end += size + 2
    response = bytes(buffer[:end])
    del buffer[:end]
    return response


def exchange(port: int, *messages: bytes) -> list[bytes]:
    """Send messages one by one on one connection; return each response."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        buffer = bytearray()
        responses = []
        for message in messages:
            sock.sendall(message)
            responses.append(read_response(sock, buffer))
        return responses


def istag(port: int) -> str:
    """The ISTag a server's OPTIONS answer carries now."""
    (response,) = exchange(port, OPTIONS)
    for line in response.split(b"\r\n\r\n", 1)[0].split(b"\r\n"):
        if line.lower().startswith(b"istag:"):
            return line.split(b":", 1)[1].strip().decode()
    raise AssertionError(f"no ISTag in {response!r}")


def wait_until_synced(port: int, redis_url: str, timeout: float = 2.0, probes: int = 8) -> float:
    """Wait until the server's ISTag shows the policy version Redis holds; return how long it took.

    Serve processes apply changes from Redis notifications, so a change made with the CLI reaches them a
    moment later; tests that act right after a change wait here, and fail if it takes over `timeout`.
    With several workers on one port, `probes` fresh connections in a row must all agree.
    """
    import time

    import redis

    client = redis.Redis.from_url(redis_url, decode_responses=True)
    started = time.monotonic()
    try:
        while True:
            expected = f'"CL-{int(client.get("clearance:policy:version") or 0)}"'
            if all(istag(port) == expected for _ in range(probes)):
                return time.monotonic() - started
            if time.monotonic() - started > timeout:
                raise AssertionError(f"server on port {port} still at {istag(port)}, Redis at {expected}")
            time.sleep(0.01)
    finally:
        client.close()


def verdict(port: int, user: str, url: str) -> str:
    """One REQMOD for `url` as `user` on a fresh connection: "pass" (ICAP 204), "block" (an HTTP 403 inside ICAP
    200), or the status line of anything else."""
    (response,) = exchange(port, reqmod(url, user=user))
    head = response.split(b"\r\n", 1)[0]
    if head.startswith(b"ICAP/1.0 204 "):
        return "pass"
    if head == b"ICAP/1.0 200 OK" and b"\r\n\r\nHTTP/1.1 403 " in response:
        return "block"
    return head.decode(errors="replace")
