"""`clearance serve --workers N`: N server processes on one port, each with its own event loop.

Each worker binds the port with SO_REUSEPORT, so the kernel spreads connections across them and no
process hands sockets to another. The supervisor replaces a worker that dies and, on SIGTERM or SIGINT,
passes the signal on and waits while every worker drains its transactions in flight.

A forked worker must never run the supervisor's Python signal handler: it would swallow a SIGTERM that
arrives before the worker installs its own (the handler only flags the supervisor's copy of the state).
So SIGTERM and SIGINT are blocked across the fork, and the worker resets them to their defaults before
unblocking: a SIGTERM at any moment stops it. Should a worker still outlive a stop, the supervisor sends
SIGTERM again after a grace and SIGKILL after a deadline, and reaps every process before it exits.

A worker can never outlive the supervisor, however it dies (SIGKILL included): right after the fork it asks
the kernel for SIGTERM on its parent's death (`PR_SET_PDEATHSIG`), then checks that the parent is still the
one that forked it. SIGHUP is a reload: the supervisor checks the file once (`reload`), then passes SIGHUP to
every worker, which swaps in the new configuration without dropping a connection, and replaces the portal's
process with one started on the new configuration (the old one drains; the socket never stops listening). A
worker keeps SIGHUP blocked until its server can act on it, so none is lost or fatal during its start.
"""

from __future__ import annotations

import contextlib
import functools
import multiprocessing
import os
import signal
import socket
import time
from collections.abc import Callable
from multiprocessing.process import BaseProcess
from types import FrameType

import structlog

from icap_server.runtime.logs import LogFile
from icap_server.runtime.metrics import process_dead
from icap_server.runtime.signals import die_with_parent

log = structlog.get_logger("clearance.supervisor")
RESTART_BACKOFF_MAX = 5.0
PORTAL = -1  # the access-request portal's process, kept like a worker under this index
STOP_SIGNALS = frozenset({signal.SIGTERM, signal.SIGINT})
FORK_BLOCKED = STOP_SIGNALS | {signal.SIGHUP}  # held across a fork; a child unblocks SIGHUP itself, when ready
RESEND_AFTER = 3.0  # seconds after a stop: SIGTERM again to any process still running
KILL_AFTER = 30.0  # then SIGKILL: a worker drains for up to 10 s, then waits up to 10 s for the portal

WorkerEntry = Callable[[int], int]  # runs worker number N to its end; returns its exit status


def _child_entry(run: Callable[[], int], parent: int) -> None:
    """First code of a forked child: die with the parent, the default SIGTERM, SIGINT ignored (the supervisor
    decides), then unblock those two. SIGHUP stays blocked until the worker's server handles it."""
    die_with_parent(parent)
    signal.signal(signal.SIGHUP, signal.SIG_DFL)  # not the supervisor's handler; still blocked
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGUSR1, LogFile.reopen)  # its own log file again; never the default (death)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
    raise SystemExit(run())


def check_port_free(host: str, port: int) -> None:
    """SO_REUSEPORT would let a second, forgotten instance share the port silently: refuse that."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind((host, port))


class Supervisor:
    """Keeps `count` workers (and the portal's process, if any) running until told to stop."""

    def __init__(
        self,
        host: str,
        port: int,
        count: int,
        worker: WorkerEntry,
        portal: Callable[[], int] | None = None,
        reload: Callable[[], bool] | None = None,
    ) -> None:
        self.worker = worker  # called in the forked child (no pickling), e.g. a closure over serve.run_worker
        self.portal = portal  # runs the portal in a process of its own, forked the same way
        self.reload = reload  # on SIGHUP, in the supervisor: re-read the settings; False if they are unusable
        self.reload_requested = False
        self.retiring: list[BaseProcess] = []  # replaced by a reload, draining: reaped, never restarted
        self.host = host
        self.port = port
        self.count = count
        self.context = multiprocessing.get_context("fork")
        self.workers: dict[int, BaseProcess] = {}
        self.stopping = False
        self.stop_started = 0.0
        self.resent = False
        self.restarts = 0

    def _start(self, index: int) -> None:
        if index == PORTAL:
            assert self.portal is not None
            run: Callable[[], int] = self.portal
            name = "clearance-portal"
        else:
            run = functools.partial(self.worker, index)
            name = f"clearance-worker-{index}"
        process = self.context.Process(target=_child_entry, args=(run, os.getpid()), name=name, daemon=False)
        signal.pthread_sigmask(signal.SIG_BLOCK, FORK_BLOCKED)  # until the child has reset its handlers
        try:
            process.start()
            self.workers[index] = process
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, FORK_BLOCKED)  # a pending stop is handled now
        log.info("worker_started", worker="portal" if index == PORTAL else index, pid=process.pid)

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        if not self.stopping:
            log.info("shutting_down", signal=signal.Signals(signum).name)
            self.stopping = True
            self.stop_started = time.monotonic()
        self._signal_all(signal.SIGTERM)  # the worker drains, then exits

    def _on_hangup(self, _signum: int, _frame: FrameType | None) -> None:
        self.reload_requested = True  # done by the main loop, not inside a signal handler

    def _on_reopen(self, _signum: int, _frame: FrameType | None) -> None:
        """SIGUSR1 (after logrotate): reopen the log file here, and have every worker and the portal do so."""
        LogFile.reopen()
        self._signal_all(signal.SIGUSR1)

    def _reload(self) -> None:
        """SIGHUP: check the settings once, then every worker reloads and the portal's process is replaced."""
        self.reload_requested = False
        log.info("reloading", signal="SIGHUP")
        try:
            if self.reload is not None and not self.reload():
                return  # logged as reload_failed; everything keeps running as it was
        except Exception:  # a reload must never take the supervisor down
            log.exception("reload_failed")
            return
        for index, process in self.workers.items():
            if index != PORTAL and process.pid is not None and process.exitcode is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(process.pid, signal.SIGHUP)
        old = self.workers.pop(PORTAL, None)
        if old is not None:
            self._start(PORTAL)  # the new one shares the bound socket; the old one drains and exits
            self.retiring.append(old)
            if old.pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(old.pid, signal.SIGTERM)

    def _signal_all(self, signum: int) -> None:
        for process in [*self.workers.values(), *self.retiring]:
            if process.pid is not None and process.exitcode is None:
                with contextlib.suppress(ProcessLookupError):  # exited since: reaped by the loop
                    os.kill(process.pid, signum)

    def _enforce_stop(self) -> None:
        """A worker that outlives the stop gets SIGTERM again after a grace, then SIGKILL."""
        waited = time.monotonic() - self.stop_started
        if waited >= KILL_AFTER:
            log.error("killing_workers", pids=[process.pid for process in [*self.workers.values(), *self.retiring]])
            self._signal_all(signal.SIGKILL)
        elif waited >= RESEND_AFTER and not self.resent:
            self.resent = True
            self._signal_all(signal.SIGTERM)

    def _reap(self, backoff: float) -> float:
        """Join the processes that ended; replace them unless stopping. Returns the next restart backoff."""
        for process in [process for process in self.retiring if not process.is_alive()]:
            process.join()
            self.retiring.remove(process)
        for index, process in list(self.workers.items()):
            if process.is_alive():
                continue
            process.join()
            del self.workers[index]
            if process.pid is not None:
                process_dead(process.pid)  # its live gauges stop counting
            if self.stopping:
                continue
            log.error(
                "worker_died", worker="portal" if index == PORTAL else index, pid=process.pid, exitcode=process.exitcode
            )
            backoff = min(RESTART_BACKOFF_MAX, backoff * 2 or 0.1)
            time.sleep(backoff)
            if self.stopping:  # told to stop during the backoff: start nothing new
                continue
            self.restarts += 1
            self._start(index)
        if all(process.is_alive() for process in self.workers.values()):
            backoff = max(0.0, backoff - 0.01)
        return backoff

    def run(self) -> int:
        try:
            check_port_free(self.host, self.port)
        except OSError as error:
            log.error("cannot_listen", address=f"{self.host}:{self.port}", error=error.strerror)
            return 1
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        signal.signal(signal.SIGHUP, self._on_hangup)
        signal.signal(signal.SIGUSR1, self._on_reopen)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGHUP})  # blocked since start-up (serve.py)
        for index in range(self.count):
            if not self.stopping:
                self._start(index)
        if self.portal is not None and not self.stopping:
            self._start(PORTAL)
        backoff = 0.0
        while self.workers or self.retiring:
            time.sleep(0.1)
            if self.reload_requested and not self.stopping:
                self._reload()
            backoff = self._reap(backoff)
            if self.stopping and self.workers:
                self._enforce_stop()
        log.info("stopped", restarts=self.restarts)
        return 0
