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
import resource
import ssl
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
    QuickRequest,
    RemoteProtocolError,
    quick_scan,
)
from icap_server.runtime.logs import FLUSH_INTERVAL, RateLimitedWarnings, access_log, flush_logs
from icap_server.runtime.metrics import PolicyView, WorkerMetrics
from icap_server.runtime.signals import STOP_QUIET, accept_backlog, unread_bytes
from icap_server.service import responses
from icap_server.service.application import Application, Verdict

log = structlog.get_logger("clearance.icap")

# Lines per kind of protocol warning (errors, refusals, timeouts, evictions) per 10 s, then a summary.
WARNINGS_PER_INTERVAL = 10
# File descriptors beyond max_connections: the listening socket, Redis, logs, the one being admitted.
FILE_LIMIT_MARGIN = 256


def raise_file_limit(wanted: int) -> int:
    """Raise the soft RLIMIT_NOFILE to `wanted` if the hard limit allows (the default soft limit is often
    1024, fewer than max_connections needs); the limit now in force, logged if still short."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        soft = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        if soft < wanted:
            log.warning("file_limit_low", limit=soft, wanted=wanted)
    return soft


@dataclass(slots=True)
class Transaction:
    """One request from its head on. A pass without `Allow: 204` is echoed: streamed as its body arrives
    (`streaming`), or, after a preview, from the preview kept in `body` (at most `max_preview_bytes`)."""

    request: ICAPRequest
    verdict: Verdict
    started: float
    keep_body: bool
    streaming: bool = False
    body: list[bytes] = field(default_factory=list)


class ICAPProtocol(asyncio.Protocol):
    """One client connection.

    Deadlines run from the first byte of each message, not from the last byte seen, so a client that
    trickles cannot hold a connection: the heads must be in within `header_timeout`, the whole message
    within `request_timeout` (longer for a body arriving at `min_body_rate` or faster).
    """

    __slots__ = ("app", "body_bytes", "conn", "last_activity", "message_started", "server", "transport", "txn")

    def __init__(self, server: ICAPServer) -> None:
        self.server = server
        self.app = server.app
        settings = server.settings
        self.conn = ICAPConnection(
            max_header_bytes=settings.max_header_bytes,
            max_header_fields=settings.max_header_fields,
            max_preview_bytes=settings.max_preview_bytes,
            quick=server.quick,
        )
        self.transport: asyncio.Transport | None = None
        self.txn: Transaction | None = None
        self.last_activity = time.monotonic()
        self.message_started: float | None = None  # the first byte of the message in progress, if any
        self.body_bytes = 0  # of the message in progress

    # ---- asyncio callbacks ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # a stream transport (uvloop's is not a subclass)
        connections = self.server.connections
        if len(connections) >= self.server.settings.max_connections and not self.server.make_room():
            self._fail(503, "too many connections")
            return
        connections.add(self)

    def data_received(self, data: bytes) -> None:
        now = self.last_activity = time.monotonic()
        quick = self.conn.quick(data) if not self.server.stopping else None
        if quick is not None and self._answer_quick(quick, data):
            return
        if self.message_started is None:
            self.message_started = now
        answered = self.conn.transactions
        self.conn.receive_data(data)
        self._process()
        if not self.conn.their_message_in_progress:
            self.message_started = None
            self.body_bytes = 0
        elif self.conn.transactions != answered:  # one message answered, the next one begun in the same read
            self.message_started = now
            self.body_bytes = 0

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
                self.server.warnings.warning("icap_protocol_error", status=problem.status, error=problem.message)
                if self.server.metrics is not None:
                    self.server.metrics.protocol_error()
                self._fail(problem.status)
                return
            kind = type(event)
            if kind is ICAPRequest:
                assert isinstance(event, ICAPRequest)
                if not self._begin(event):
                    return
            elif kind is BodyData:
                txn = self.txn
                assert txn is not None and isinstance(event, BodyData)
                self.body_bytes += len(event.data)
                if txn.streaming:
                    self.transport.write(conn.send_body(event.data))
                elif txn.keep_body:
                    txn.body.append(event.data)
            elif kind is EndOfMessage or kind is EndOfPreview:
                if kind is EndOfPreview and self._stream_rest():
                    if self.txn is None:  # it failed, and closed
                        return
                    continue
                self._answer()
                if not conn.keep_alive or self.server.stopping:
                    self._close()
                    return
            elif kind is ConnectionClosed:
                self._close()
                return
            else:  # NEED_DATA, or PAUSED (never here: every complete message is answered at once)
                return

    def _answer_quick(self, request: QuickRequest, data: bytes) -> bool:
        """A whole common message the quick scan read (`data`), judged and answered at once, as `_begin` and
        `_answer` would; False (nothing done) for what the reference path must answer."""
        started = time.perf_counter()
        app = self.app
        assert self.transport is not None
        try:
            now = datetime.now(UTC)
            verdict = app.evaluate_quick(request, now)
            if verdict is None:
                return False
            response = app.respond_quick(request, data, verdict, now)
        except Exception:
            log.exception("icap_internal_error", method=request.method, service=request.service)
            self._fail(500)
            return True
        self.transport.write(self.conn.send_quick(response))
        self._log(request.method, request.service, response.status, started, verdict)
        return True

    def _begin(self, request: ICAPRequest) -> bool:
        """Judge a request as soon as its heads are in; a pass to echo starts its answer at once."""
        started = time.perf_counter()
        try:
            # No policy loaded yet is not an error here: the verdict is a policy-unavailable block.
            verdict = self.app.evaluate(request, datetime.now(UTC))
        except Exception:
            log.exception("icap_internal_error", method=request.method, service=request.service)
            self._fail(500)
            return False
        echo = request.method != "OPTIONS" and self.app.keeps_body(request, verdict)
        streaming = echo and request.has_body and request.preview is None
        self.txn = Transaction(request, verdict, started, keep_body=echo and not streaming, streaming=streaming)
        if streaming:
            assert self.transport is not None
            try:
                head = self.app.echo_head(request, verdict)
            except Exception:
                log.exception("icap_internal_error", method=request.method, service=request.service)
                self.txn = None
                self._fail(500)
                return False
            self.transport.write(self.conn.send_head(head))
        return True

    def _stream_rest(self) -> bool:
        """A tenant-restricted pass after a preview needs the whole body with its modified head: 100 Continue,
        then the head and the preview at once, and the rest streamed as it arrives (bounded memory)."""
        txn = self.txn
        assert txn is not None and self.transport is not None
        if not txn.keep_body or not self.app.modifies(txn.verdict):
            return False
        try:
            head = self.app.echo_head(txn.request, txn.verdict)
        except Exception:
            log.exception("icap_internal_error", method=txn.request.method, service=txn.request.service)
            self.txn = None
            self._fail(500)
            return True
        conn = self.conn
        self.transport.write(conn.send_continue() + conn.send_head(head) + conn.send_body(b"".join(txn.body)))
        txn.body.clear()
        txn.keep_body, txn.streaming = False, True
        return True

    def _answer(self) -> None:
        txn = self.txn
        assert txn is not None and self.transport is not None
        if txn.streaming:
            self.transport.write(self.conn.send_end())
            self._logged(txn, 200)
            return
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
        self._logged(txn, response.status)

    def _logged(self, txn: Transaction, status: int) -> None:
        """The transaction is answered: its access-log line."""
        self.txn = None
        self._log(txn.request.method, txn.request.service, status, txn.started, txn.verdict)

    def _log(self, method: str, service: str, status: int, started: float, verdict: Verdict) -> None:
        seconds = time.perf_counter() - started
        access_log.info(
            "icap",
            {
                "method": method,
                "service": service,
                "status": status,
                "duration_ms": round(seconds * 1000, 3),
                **verdict.log_fields(),
            },
        )
        metrics = self.server.metrics
        if metrics is not None:
            metrics.transaction(method, status, verdict.decision, seconds)

    def _fail(self, status: int, why: str | None = None) -> None:
        """An error answer at any point, then close (only close, once a streamed answer has begun)."""
        if self.transport is None:
            return
        if why:
            self.server.warnings.warning("icap_refused", status=status, error=why)
        with contextlib.suppress(LocalProtocolError):  # it already answered, or began to: nothing to add
            self.transport.write(self.conn.send_error(responses.error(self.app.istag, status)))
        self._close()

    def _close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def deadline(self) -> float | None:
        """When the message in progress runs out of time (None between messages)."""
        started = self.message_started
        if started is None:
            return None
        settings = self.server.settings
        whole = started + max(settings.request_timeout, self.body_bytes / settings.min_body_rate)
        if self.txn is None:  # still in its heads
            return min(whole, started + settings.header_timeout)
        return whole

    def sweep(self, now: float) -> None:
        """Called about once a second: 408 for a message past its deadline, close an idle connection."""
        deadline = self.deadline()
        if deadline is not None:
            if now > deadline:
                self.server.warnings.warning("icap_request_timeout", in_heads=self.txn is None)
                self._fail(408)
        elif self.txn is None and now - self.last_activity > self.server.settings.idle_timeout:
            self._close()

    def evict(self) -> None:
        """Make room for a new connection: an idle one just closes, one stuck in a partial head gets 503."""
        self.server.connections.discard(self)
        self.server.warnings.warning("icap_evicted", in_message=self.message_started is not None)
        if self.message_started is None:
            self._close()
        else:
            self._fail(503)


class ICAPServer:
    """The listening socket and its connections: the connection limit, one deadline sweep, drain on stop.

    At `max_connections` a new connection is admitted by closing another, so slow or idle clients cannot
    lock fast ones out: the connection idle longest goes first, else the one longest in a partial head. Only
    when every connection is in the middle of a request whose heads are in (its body arriving, its answer
    being written) does the new one get 503.
    """

    def __init__(self, app: Application, quick: bool = True, metrics: WorkerMetrics | None = None) -> None:
        self.app = app
        self.metrics = metrics  # counts for /metrics (runtime.metrics), None when metrics.listen is off
        self.settings = app.config.server
        # The quick scan for Squid's common messages (None: every message through the reference parser).
        self.quick = quick_scan(app.config.identity.username_header) if quick else None
        self.connections: set[ICAPProtocol] = set()
        self.warnings = RateLimitedWarnings(log, "icap_protocol_errors_suppressed", WARNINGS_PER_INTERVAL)
        self.stopping = False
        self._server: asyncio.Server | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self._flusher: asyncio.Task[None] | None = None

    def make_room(self) -> bool:
        """Close one connection to admit a new one (see the class); False if none may be closed."""
        idle: ICAPProtocol | None = None
        slow: ICAPProtocol | None = None
        slow_since = float("inf")
        for connection in self.connections:
            started = connection.message_started
            if connection.txn is not None:
                continue
            if started is None:
                if idle is None or connection.last_activity < idle.last_activity:
                    idle = connection
            elif started < slow_since:
                slow, slow_since = connection, started
        victim = idle or slow
        if victim is None:
            return False
        victim.evict()
        return True

    async def start(self, host: str, port: int, reuse_port: bool = False, tls: ssl.SSLContext | None = None) -> None:
        """Listen (`tls`: ICAPS, TLS around each connection; the protocol sees the same bytes)."""
        raise_file_limit(self.settings.max_connections + FILE_LIMIT_MARGIN)
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: ICAPProtocol(self), host, port, reuse_port=reuse_port or None, backlog=1024, ssl=tls
        )
        self._sweeper = asyncio.create_task(self._sweep_forever())
        self._flusher = asyncio.create_task(self._flush_logs_forever())

    async def _sweep_forever(self) -> None:
        settings = self.settings
        interval = min(1.0, settings.header_timeout / 4, settings.request_timeout / 4, settings.idle_timeout / 4)
        while True:
            await asyncio.sleep(interval)
            now = time.monotonic()
            for connection in list(self.connections):
                connection.sweep(now)

    async def _flush_logs_forever(self) -> None:
        while True:
            await asyncio.sleep(FLUSH_INTERVAL)
            self.warnings.tick()
            flush_logs()
            if self.metrics is not None:
                policy = self.app.policy
                self.metrics.flush(len(self.connections), policy if isinstance(policy, PolicyView) else None)

    async def stop(self, grace: float = 10.0, quiet: float = STOP_QUIET) -> None:
        """Stop accepting, answer every request received, close each connection after its answer (`grace` s).

        Connections still waiting in the listen backlog are accepted first (closing the socket would reset
        them). Each answer from now on carries `Connection: close`, so a client never sends again on a
        connection about to close. One between messages is closed once nothing has come on it for `quiet`
        seconds and nothing waits unread in its socket: a request sent as the stop began is answered, not
        reset. A message still arriving at the deadline gets 503; a connection that cannot take it is aborted.
        """
        self.stopping = True
        if self._server is not None:
            await accept_backlog(self._server, lambda: ICAPProtocol(self))
        for connection in self.connections:
            connection.conn.closing = True
        started = time.monotonic()
        while self.connections and time.monotonic() < started + grace:
            now = time.monotonic()
            for connection in list(self.connections):
                if connection.busy or now - max(connection.last_activity, started) < quiet:
                    continue
                if connection.transport is not None and not unread_bytes(connection.transport):
                    connection._close()
            await asyncio.sleep(0.02)
        for connection in list(self.connections):
            if connection.busy:
                connection._fail(503)
            else:
                connection._close()
        closing = time.monotonic()
        while self.connections and time.monotonic() < closing + 1.0:
            await asyncio.sleep(0.02)
        for connection in list(self.connections):
            if connection.transport is not None:
                connection.transport.abort()
        for task in (self._sweeper, self._flusher):
            if task is not None:
                task.cancel()
        flush_logs()
