"""The asyncio shell around the sans-I/O protocol core: sockets, timeouts, logging, shutdown.

All protocol decisions happen in `protocol.ICAPConnection`, all policy decisions in `Application`; this
module only moves bytes between them and the network. It is an `asyncio.Protocol` rather than streams:
a decision needs no awaiting (policy is in memory), so each request is parsed, judged and answered inside
one `data_received` call, with no task, future or timer per request. Timeouts are enforced by one sweep
over all connections instead of a timer per read.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

import structlog

from icap_server.protocol import (
    BodyData,
    ConnectionClosed,
    EndOfMessage,
    EndOfPreview,
    ICAPConnection,
    ICAPRequest,
    LocalProtocolError,
    RemoteProtocolError,
)
from icap_server.runtime.logs import FLUSH_INTERVAL, flush_logs
from icap_server.service import responses
from icap_server.service.application import Application, Verdict

log = structlog.get_logger("clearance.icap")
access_log = structlog.get_logger("clearance.access")


@dataclass(slots=True)
class Transaction:
    request: ICAPRequest
    verdict: Verdict
    started: float
    keep_body: bool
    body: list[bytes] = field(default_factory=list)


class ICAPProtocol(asyncio.Protocol):
    """One client connection."""

    __slots__ = ("app", "conn", "last_activity", "server", "transport", "txn")

    def __init__(self, server: ICAPServer) -> None:
        self.server = server
        self.app = server.app
        self.conn = ICAPConnection(max_header_bytes=server.settings.max_header_bytes)
        self.transport: asyncio.Transport | None = None
        self.txn: Transaction | None = None
        self.last_activity = time.monotonic()

    # ---- asyncio callbacks ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # a stream transport (uvloop's is not a subclass)
        connections = self.server.connections
        connections.add(self)
        if len(connections) > self.server.settings.max_connections:
            self._fail(503, "too many connections")

    def data_received(self, data: bytes) -> None:
        self.last_activity = time.monotonic()
        self.conn.receive_data(data)
        self._process()

    def eof_received(self) -> bool:
        if self.transport is not None and not self.transport.is_closing():
            self.conn.receive_data(b"")
            self._process()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.connections.discard(self)
        self.transport = None

    def pause_writing(self) -> None:  # the client is not reading its answers: stop reading its requests
        if self.transport is not None:
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.transport is not None:
            self.transport.resume_reading()

    # ---- the work -----------------------------------------------------------------------------

    @property
    def busy(self) -> bool:
        return self.txn is not None or self.conn.their_message_in_progress

    def _process(self) -> None:
        conn = self.conn
        while self.transport is not None:
            try:
                event = conn.next_event()
            except RemoteProtocolError as problem:
                log.warning("icap_protocol_error", status=problem.status, error=problem.message)
                self._fail(problem.status)
                return
            kind = type(event)
            if kind is ICAPRequest:
                assert isinstance(event, ICAPRequest)
                started = time.perf_counter()
                try:
                    # No policy loaded yet is not an error here: the verdict is a policy-unavailable block.
                    verdict = self.app.evaluate(event, datetime.now(UTC))
                except Exception:
                    log.exception("icap_internal_error", method=event.method, service=event.service)
                    self._fail(500)
                    return
                self.txn = Transaction(event, verdict, started, self.app.keeps_body(event, verdict))
            elif kind is BodyData:
                txn = self.txn
                assert txn is not None and isinstance(event, BodyData)
                if txn.keep_body:
                    txn.body.append(event.data)
            elif kind is EndOfMessage or kind is EndOfPreview:
                self._answer()
                if not conn.keep_alive or self.server.stopping:
                    self._close()
                    return
            elif kind is ConnectionClosed:
                self._close()
                return
            else:  # NEED_DATA, or PAUSED (never here: every complete message is answered at once)
                return

    def _answer(self) -> None:
        txn = self.txn
        assert txn is not None and self.transport is not None
        body = b"".join(txn.body) if txn.keep_body else None
        try:
            response = self.app.respond(txn.request, txn.verdict, self.conn.can_send_204, body, datetime.now(UTC))
        except Exception:
            log.exception("icap_internal_error", method=txn.request.method, service=txn.request.service)
            self.txn = None
            self._fail(500)
            return
        # Routing errors close the connection: some clients (c-icap-client) wait for a body otherwise.
        data = self.conn.send_error(response) if txn.verdict.status else self.conn.send(response)
        self.transport.write(data)
        self.txn = None
        request = txn.request
        access_log.info(
            "icap",
            method=request.method,
            service=request.service,
            status=response.status,
            duration_ms=round((time.perf_counter() - txn.started) * 1000, 3),
            **txn.verdict.log_fields(),
        )

    def _fail(self, status: int, why: str | None = None) -> None:
        """An error answer at any point, then close."""
        if self.transport is None:
            return
        if why:
            log.warning("icap_refused", status=status, error=why)
        with contextlib.suppress(LocalProtocolError):  # it already answered and is closing: nothing to add
            self.transport.write(self.conn.send_error(responses.error(self.app.istag, status)))
        self._close()

    def _close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def sweep(self, now: float) -> None:
        """Called about once a second: 408 for a stalled message, close an idle connection."""
        settings = self.server.settings
        idle = now - self.last_activity
        if self.conn.their_message_in_progress:
            if idle > settings.request_timeout:
                log.warning("icap_request_timeout", timeout_s=settings.request_timeout)
                self._fail(408)
        elif self.txn is None and idle > settings.idle_timeout:
            self._close()


class ICAPServer:
    def __init__(self, app: Application) -> None:
        self.app = app
        self.settings = app.config.server
        self.connections: set[ICAPProtocol] = set()
        self.stopping = False
        self._server: asyncio.Server | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self._flusher: asyncio.Task[None] | None = None

    async def start(self, host: str, port: int, reuse_port: bool = False) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: ICAPProtocol(self), host, port, reuse_port=reuse_port or None, backlog=1024
        )
        self._sweeper = asyncio.create_task(self._sweep_forever())
        self._flusher = asyncio.create_task(self._flush_logs_forever())

    async def _sweep_forever(self) -> None:
        interval = min(1.0, self.settings.request_timeout / 4, self.settings.idle_timeout / 4)
        while True:
            await asyncio.sleep(interval)
            now = time.monotonic()
            for connection in list(self.connections):
                connection.sweep(now)

    async def _flush_logs_forever(self) -> None:
        while True:
            await asyncio.sleep(FLUSH_INTERVAL)
            flush_logs()

    async def stop(self, grace: float = 10.0) -> None:
        """Stop accepting, let transactions in flight finish (up to `grace` seconds), close the rest."""
        self.stopping = True
        if self._server is not None:
            self._server.close()
        for connection in list(self.connections):
            if not connection.busy:
                connection._close()
        deadline = time.monotonic() + grace
        while self.connections and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        for connection in list(self.connections):
            if connection.transport is not None:
                connection.transport.abort()
        for task in (self._sweeper, self._flusher):
            if task is not None:
                task.cancel()
        flush_logs()


async def serve(
    app: Application, host: str, port: int, ready: asyncio.Event | None = None, reuse_port: bool = False
) -> None:
    """Run until SIGTERM or SIGINT, then shut down gracefully."""
    # The handlers go in before the port opens: from the first connection on, SIGTERM means drain.
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    server = ICAPServer(app)
    await server.start(host, port, reuse_port)
    log.info("listening", address=f"{host}:{port}", policy_version=app.policy.version)
    if ready is not None:
        ready.set()
    await stop.wait()
    log.info("shutting_down")
    await server.stop()
    log.info("stopped")
    flush_logs()
