"""Prometheus metrics, `/healthz` and `/readyz`, across every worker, kept off the request path.

prometheus_client's multiprocess mode keeps each process's values in memory-mapped files in one directory,
and `/metrics` adds them up; `serve` makes that directory before any process imports prometheus_client (the
mode is chosen at import). A worker never touches a prometheus value per request, though: each transaction is
one dict increment in `WorkerMetrics` (a few hundred nanoseconds), and the server's flusher, ten times a
second, adds the counts gathered since into the shared values and sets the gauges. So the request path pays
for a counter, not for a lock and an mmap write per metric per request.

The listener (`MetricsListener`) is a small threaded HTTP server in `serve`'s main process — the supervisor,
or the one worker — on `metrics.listen` (loopback by default in the README; off when empty):

- `/metrics`: the Prometheus text format, every live worker's values summed (gauges as documented per metric);
- `/healthz`: 200 while the process answers (liveness);
- `/readyz`: 200 when every expected worker reports a policy loaded and has heard from the store within
  `metrics.ready_max_age_seconds`, else 503 with the reason.
"""

from __future__ import annotations

import bisect
import os
import shutil
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol, runtime_checkable

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
# Seconds from a message's first byte to its answer: from the quick path's tens of microseconds to slow bodies.
BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0)


def prepare_directory() -> str:
    """A fresh directory for the workers' values, named in the environment before prometheus_client loads."""
    directory = tempfile.mkdtemp(prefix="clearance-metrics-")
    os.environ[MULTIPROC_ENV] = directory
    return directory


def remove_directory(directory: str) -> None:
    shutil.rmtree(directory, ignore_errors=True)


def process_dead(pid: int) -> None:
    """A worker exited: its live gauges stop counting (the supervisor calls this when it reaps one)."""
    if os.environ.get(MULTIPROC_ENV):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]


@runtime_checkable
class PolicyView(Protocol):
    """What the gauges read of a worker's policy sync (`PolicySync`)."""

    @property
    def version(self) -> int: ...

    @property
    def heard_at(self) -> float | None: ...

    @property
    def resyncs(self) -> int: ...


@dataclass(frozen=True, slots=True)
class _Family:
    """The shared prometheus values one worker writes into."""

    transactions: Any
    duration: Any
    protocol_errors: Any
    connections: Any
    workers: Any
    policy_version: Any
    policy_loaded: Any
    policy_heard: Any
    policy_loads: Any


def _family() -> _Family:
    from prometheus_client import Counter as PromCounter
    from prometheus_client import Gauge, Histogram

    labels = ("method", "status", "decision", "reason", "category", "service")
    return _Family(
        transactions=PromCounter("clearance_icap_transactions", "ICAP transactions answered", labels),
        duration=Histogram("clearance_icap_duration_seconds", "first byte to answer", buckets=BUCKETS),
        protocol_errors=PromCounter("clearance_icap_protocol_errors", "messages refused as malformed"),
        connections=Gauge("clearance_icap_connections", "ICAP connections open", multiprocess_mode="livesum"),
        workers=Gauge("clearance_workers", "worker processes reporting", multiprocess_mode="livesum"),
        policy_version=Gauge("clearance_policy_version", "policy version held", multiprocess_mode="livemin"),
        policy_loaded=Gauge(
            "clearance_policy_loaded", "1 when every worker holds a policy", multiprocess_mode="livemin"
        ),
        policy_heard=Gauge(
            "clearance_policy_heard_timestamp_seconds",
            "when the stalest worker last heard from the store (Unix time)",
            multiprocess_mode="livemin",
        ),
        policy_loads=PromCounter("clearance_policy_loads", "whole policy loads (start, resyncs, reloads)"),
    )


class WorkerMetrics:
    """One worker's counts, gathered per request in plain dicts and added into the shared values by `flush`."""

    __slots__ = ("_durations", "_errors", "_family", "_loads", "_sum", "_transactions")

    def __init__(self) -> None:
        self._family = _family()
        self._family.workers.set(1)
        self._transactions: Counter[tuple[Any, ...]] = Counter()
        self._durations = [0] * (len(BUCKETS) + 1)
        self._sum = 0.0
        self._errors = 0
        self._loads = 0

    def transaction(self, method: str, status: int, decision: Any, seconds: float) -> None:
        """One answered transaction (called where its access line is written)."""
        # The key's parts as they are (enums, None); they become label strings at the flush, not here.
        if decision is None:
            key: tuple[Any, ...] = (method, status, None, None, None, None)
        else:
            key = (method, status, decision.action, decision.reason, decision.category, decision.service)
        self._transactions[key] += 1
        self._durations[bisect.bisect_left(BUCKETS, seconds)] += 1
        self._sum += seconds

    def protocol_error(self) -> None:
        self._errors += 1

    def flush(self, connections: int, policy: PolicyView | None) -> None:
        """Add what was counted since the last flush into the shared values; set this worker's gauges."""
        family = self._family
        for key, count in self._transactions.items():
            family.transactions.labels(*("" if part is None else str(part) for part in key)).inc(count)
        self._transactions.clear()
        # Histogram.observe per request would take its lock and write the mmap each time: add the buckets here.
        histogram = family.duration
        cumulative = 0
        for index, count in enumerate(self._durations):
            if count:
                histogram._buckets[index].inc(count)
                cumulative += count
        if cumulative:
            histogram._sum.inc(self._sum)
        self._durations = [0] * (len(BUCKETS) + 1)
        self._sum = 0.0
        if self._errors:
            family.protocol_errors.inc(self._errors)
            self._errors = 0
        family.connections.set(connections)
        if policy is not None:
            family.policy_version.set(policy.version)
            heard = policy.heard_at
            family.policy_loaded.set(1 if heard is not None else 0)
            family.policy_heard.set(heard if heard is not None else 0)
            if policy.resyncs > self._loads:
                family.policy_loads.inc(policy.resyncs - self._loads)
                self._loads = policy.resyncs


# ---- the portal's counts (few: each is a shared value written at once) ------------------------------------

PORTAL_ROUTES = frozenset({"request", "status", "heads", "report", "static"})
_portal: dict[str, Any] = {}


def _portal_counters() -> dict[str, Any] | None:
    """The portal's counters, made on first use in the process that counts; None with metrics off."""
    if not os.environ.get(MULTIPROC_ENV):
        return None
    if not _portal:
        from prometheus_client import Counter as PromCounter

        _portal["requests"] = PromCounter(
            "clearance_portal_requests", "portal HTTP requests answered", ("route", "status")
        )
        _portal["mails"] = PromCounter("clearance_portal_mails", "mails handed to the relay, or not", ("kind", "sent"))
    return _portal


def count_portal_request(path: str, status: int) -> None:
    """One portal answer, by its route's first segment (a bounded set: anything else is "other")."""
    counters = _portal_counters()
    if counters is not None:
        first = path.strip("/").split("/", 1)[0]
        route = first if first in PORTAL_ROUTES else "root" if not first else "other"
        counters["requests"].labels(route, str(status)).inc()


def count_mail(kind: str, sent: bool) -> None:
    """One mail (a head's request mail, a digest, a reminder): handed to the relay or failed."""
    counters = _portal_counters()
    if counters is not None:
        counters["mails"].labels(kind, "true" if sent else "false").inc()


# ---- the listener ---------------------------------------------------------------------------------------


def collect() -> tuple[bytes, dict[str, float]]:
    """The exposition text of every worker's values, and the few samples `/readyz` reads."""
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.multiprocess import MultiProcessCollector

    registry = CollectorRegistry()
    MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    samples: dict[str, float] = {}
    for family in registry.collect():
        if family.name in ("clearance_workers", "clearance_policy_loaded", "clearance_policy_heard_timestamp_seconds"):
            for sample in family.samples:
                samples[family.name] = sample.value
    return generate_latest(registry), samples


def readiness(samples: dict[str, float], workers: int, max_age: float, now: float) -> str | None:
    """Why the filter is not ready (None: ready): a worker missing, a policy not loaded, or stale."""
    reporting = int(samples.get("clearance_workers", 0))
    if reporting < workers:
        return f"{reporting} of {workers} workers reporting"
    if samples.get("clearance_policy_loaded", 0) < 1:
        return "a worker has no policy loaded yet"
    age = now - samples.get("clearance_policy_heard_timestamp_seconds", 0)
    if age > max_age:
        return f"a worker last heard from the store {age:.0f} s ago (more than {max_age:.0f} s)"
    return None


class MetricsListener:
    """The admin HTTP listener: `/metrics`, `/healthz`, `/readyz` (see the module), on a thread of its own."""

    def __init__(self, host: str, port: int, workers: int, max_age: float) -> None:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # http.server's name
                outer.answer(self)

            def log_message(self, format: str, *args: Any) -> None:  # quiet: no line per scrape
                return

        self.workers, self.max_age = workers, max_age
        self.httpd = ThreadingHTTPServer((host, port), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, name="clearance-metrics", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def answer(self, request: BaseHTTPRequestHandler) -> None:
        path = request.path.split("?", 1)[0]
        if path == "/healthz":
            self._send(request, 200, b"ok\n", "text/plain; charset=utf-8")
        elif path == "/readyz":
            _, samples = collect()
            problem = readiness(samples, self.workers, self.max_age, time.time())
            body = b"ready\n" if problem is None else f"not ready: {problem}\n".encode()
            self._send(request, 200 if problem is None else 503, body, "text/plain; charset=utf-8")
        elif path == "/metrics":
            from prometheus_client import CONTENT_TYPE_LATEST

            text, _ = collect()
            self._send(request, 200, text, CONTENT_TYPE_LATEST)
        else:
            self._send(request, 404, b"not found\n", "text/plain; charset=utf-8")

    @staticmethod
    def _send(request: BaseHTTPRequestHandler, status: int, body: bytes, content_type: str) -> None:
        request.send_response(status)
        request.send_header("Content-Type", content_type)
        request.send_header("Content-Length", str(len(body)))
        request.send_header("Cache-Control", "no-store")
        request.end_headers()
        request.wfile.write(body)
