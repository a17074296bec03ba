"""The asyncio shell around the sans-I/O protocol core: sockets, timeouts, logging, shutdown.

All protocol decisions happen in `protocol.ICAPConnection`, all policy decisions in `Application`; this
module only moves bytes between them and the network.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

import structlog

from . import responses
from .application import Application, Verdict
from .protocol import (
    NEED_DATA,
    PAUSED,
    BodyData,
    ConnectionClosed,
    EndOfMessage,
    EndOfPreview,
    ICAPConnection,
    RemoteProtocolError,
    Request,
)

log = structlog.get_logger("clearance.icap")
READ_SIZE = 65536


@dataclass(slots=True)
class Transaction:
    request: Request
    verdict: Verdict
    started: float
    keep_body: bool
    body: list[bytes] = field(default_factory=list)


class ICAPServer:
    def __init__(self, app: Application) -> None:
        self.app = app
        self.settings = app.config.server
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()
        self._busy: set[asyncio.Task[None]] = set()  # connections in the middle of a transaction
        self._stopping = False

    async def start(self, host: str, port: int, reuse_port: bool = False) -> None:
        self._server = await asyncio.start_server(
            self._on_connect, host, port, limit=READ_SIZE, reuse_port=reuse_port or None
        )

    @property
    def sockets(self) -> list[tuple[str, int]]:
        assert self._server is not None
        return [sock.getsockname()[:2] for sock in self._server.sockets]

    async def stop(self, grace: float = 10.0) -> None:
        """Stop accepting, let transactions in flight finish (up to `grace` seconds), close the rest."""
        self._stopping = True
        if self._server is not None:
            self._server.close()
        for task in self._connections - self._busy:
            task.cancel()
        if self._busy:
            await asyncio.wait(self._busy, timeout=grace)
        for task in self._connections:
            task.cancel()
        await asyncio.gather(*self._connections, return_exceptions=True)

    async def _on_connect(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        try:
            if len(self._connections) > self.settings.max_connections:
                writer.write(ICAPConnection().send_error(responses.error(self.app.istag, 503)))
                await writer.drain()
                return
            await self._serve_connection(reader, writer, task)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass  # the client reset the connection; nothing to answer
        except asyncio.CancelledError:
            pass
        finally:
            self._connections.discard(task)
            self._busy.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _serve_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, task: asyncio.Task[None]
    ) -> None:
        conn = ICAPConnection(max_header_bytes=self.settings.max_header_bytes)
        txn: Transaction | None = None
        while True:
            try:
                event = conn.next_event()
            except RemoteProtocolError as problem:
                log.warning("icap_protocol_error", status=problem.status, error=problem.message)
                writer.write(conn.send_error(responses.error(self.app.istag, problem.status)))
                await writer.drain()
                return
            if event is NEED_DATA:
                in_progress = conn.their_message_in_progress
                if in_progress:
                    self._busy.add(task)
                elif self._stopping:
                    return
                timeout = self.settings.request_timeout if in_progress else self.settings.idle_timeout
                try:
                    data = await asyncio.wait_for(reader.read(READ_SIZE), timeout)
                except TimeoutError:
                    if in_progress:
                        log.warning("icap_request_timeout", timeout_s=timeout)
                        writer.write(conn.send_error(responses.error(self.app.istag, 408)))
                        await writer.drain()
                    return
                conn.receive_data(data)
                continue
            if isinstance(event, ConnectionClosed) or event is PAUSED:
                return
            if isinstance(event, Request):
                self._busy.add(task)
                started = time.perf_counter()
                now = datetime.now(UTC)
                try:
                    verdict = self.app.evaluate(event, now)
                except Exception:
                    log.exception("icap_internal_error", method=event.method, service=event.service)
                    writer.write(conn.send_error(responses.error(self.app.istag, 500)))
                    await writer.drain()
                    return
                txn = Transaction(event, verdict, started, self.app.keeps_body(event, verdict))
            elif isinstance(event, BodyData):
                assert txn is not None
                if txn.keep_body:
                    txn.body.append(event.data)
            elif isinstance(event, EndOfPreview | EndOfMessage):
                assert txn is not None
                body = b"".join(txn.body) if txn.keep_body else None
                response = self.app.respond(txn.request, txn.verdict, conn.can_send_204, body, datetime.now(UTC))
                # Routing errors close the connection: some clients (c-icap-client) wait for a body otherwise.
                writer.write(conn.send_error(response) if txn.verdict.status else conn.send(response))
                await writer.drain()
                self._log(txn, response.status)
                txn = None
                self._busy.discard(task)
                if not conn.keep_alive or self._stopping:
                    return

    def _log(self, txn: Transaction, status: int) -> None:
        log.info(
            "icap",
            method=txn.request.method,
            service=txn.request.service,
            status=status,
            duration_ms=round((time.perf_counter() - txn.started) * 1000, 3),
            **txn.verdict.log_fields(),
        )


async def serve(
    app: Application, host: str, port: int, ready: asyncio.Event | None = None, reuse_port: bool = False
) -> None:
    """Run until SIGTERM or SIGINT, then shut down gracefully."""
    server = ICAPServer(app)
    await server.start(host, port, reuse_port)
    log.info("listening", address=f"{host}:{port}", policy_version=app.policy.version)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    if ready is not None:
        ready.set()
    await stop.wait()
    log.info("shutting_down")
    await server.stop()
    log.info("stopped")
