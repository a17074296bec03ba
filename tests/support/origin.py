"""A local origin HTTP/1.1 server for end-to-end tests: answers everything with 200 and records requests."""

from __future__ import annotations

import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

from .net import free_port


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the origin received it."""

    method: str
    path: str
    host: str
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    header_lines: tuple[tuple[str, str], ...] = ()  # every field line in order, repeats kept (headers merges them)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, and 100-continue handling in BaseHTTPRequestHandler
    server: _OriginHTTPServer

    # --- request bodies -------------------------------------------------------------------------------

    def _read_chunked(self) -> bytes:
        body = bytearray()
        while True:
            line = self.rfile.readline(65537)
            if not line:
                raise ConnectionError("connection closed inside a chunked body")
            size = int(line.split(b";", 1)[0].strip() or b"0", 16)
            if size == 0:
                # trailer section: lines until an empty one
                while True:
                    trailer = self.rfile.readline(65537)
                    if trailer in (b"\r\n", b"\n", b""):
                        return bytes(body)
            body += self.rfile.read(size)
            self.rfile.readline(65537)  # CRLF after the chunk data

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            return self._read_chunked()
        length = int(self.headers.get("Content-Length", "0") or "0")
        return self.rfile.read(length) if length > 0 else b""

    # --- answering ------------------------------------------------------------------------------------

    def _answer(self) -> None:
        body = self._read_body()
        host = self.headers.get("Host", "")
        self.server.record(
            RecordedRequest(
                method=self.command,
                path=self.path,
                host=host,
                headers={name: value for name, value in self.headers.items()},
                body=body,
                header_lines=tuple(self.headers.items()),
            )
        )
        text = f"origin-ok {host} {self.path}"
        if self.command in ("POST", "PUT"):
            text += f" received={len(body)}"
        payload = text.encode("utf-8")
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)
        self.wfile.flush()

    do_GET = _answer  # http.server dispatches on do_<METHOD>
    do_POST = _answer
    do_PUT = _answer
    do_HEAD = _answer

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        return


class _OriginHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, port: int) -> None:
        super().__init__(("127.0.0.1", port), _Handler)
        self.lock = threading.Lock()
        self.recorded: list[RecordedRequest] = []
        self.changed = threading.Condition(self.lock)

    def record(self, request: RecordedRequest) -> None:
        with self.changed:
            self.recorded.append(request)
            self.changed.notify_all()

    def handle_error(self, request: Any, client_address: Any) -> None:  # quiet: clients may hang up
        return


class OriginServer:
    """Threaded HTTP/1.1 origin on 127.0.0.1:<free port>.

    Every GET/POST/PUT/HEAD gets 200 text/plain `origin-ok <Host> <path>` (plus ` received=<n>` for
    POST/PUT). `.requests` is a snapshot list of RecordedRequest, safe to read from any thread.
    With `tls` (a server-side SSLContext) it speaks HTTPS; the handshake runs in the request's own thread.
    """

    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        self.port = free_port()
        self.tls = tls
        self._server: _OriginHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> OriginServer:
        self._server = _OriginHTTPServer(self.port)
        if self.tls is not None:
            self._server.socket = self.tls.wrap_socket(
                self._server.socket, server_side=True, do_handshake_on_connect=False
            )
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True,
            name=f"origin-{self.port}",
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._thread = None

    def __enter__(self) -> OriginServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def _require_server(self) -> _OriginHTTPServer:
        if self._server is None:
            raise RuntimeError("OriginServer is not started")
        return self._server

    @property
    def requests(self) -> list[RecordedRequest]:
        """A copy of every request recorded so far, oldest first."""
        server = self._require_server()
        with server.lock:
            return list(server.recorded)

    def clear(self) -> None:
        server = self._require_server()
        with server.lock:
            server.recorded.clear()

    def wait_for(
        self, predicate: Callable[[RecordedRequest], bool] = lambda _r: True, timeout: float = 10.0
    ) -> RecordedRequest:
        """The first recorded request matching predicate, waiting up to timeout seconds for one."""
        server = self._require_server()
        deadline = time.monotonic() + timeout
        with server.changed:
            while True:
                for request in server.recorded:
                    if predicate(request):
                        return request
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"origin saw no matching request in {timeout}s: {server.recorded!r}")
                server.changed.wait(remaining)
