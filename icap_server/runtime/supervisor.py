"""`clearance serve --workers N`: N server processes on one port, each with its own event loop.

Each worker binds the port with SO_REUSEPORT, so the kernel spreads connections across them and no
process hands sockets to another. The supervisor replaces a worker that dies and, on SIGTERM or SIGINT,
passes the signal on and waits while every worker drains its transactions in flight.
"""

from __future__ import annotations

import multiprocessing
import signal
import socket
import time
from collections.abc import Callable
from multiprocessing.process import BaseProcess
from types import FrameType

import structlog

from icap_server.config import Config

log = structlog.get_logger("clearance.supervisor")
RESTART_BACKOFF_MAX = 5.0
PORTAL = -1  # the access-request portal's process, kept like a worker under this index


def _worker_entry(config: Config, redis_url: str, host: str, port: int, index: int) -> None:
    from icap_server.runtime.serve import run_worker

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the supervisor decides; workers stop on SIGTERM
    raise SystemExit(run_worker(config, redis_url, host, port, reuse_port=True, index=index))


def check_port_free(host: str, port: int) -> None:
    """SO_REUSEPORT would let a second, forgotten instance share the port silently: refuse that."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind((host, port))


def _portal_entry(run: Callable[[], int]) -> None:
    raise SystemExit(run())


class Supervisor:
    def __init__(
        self, config: Config, redis_url: str, host: str, port: int, count: int, portal: Callable[[], int] | None = None
    ) -> None:
        self.portal = portal  # runs the portal in a process of its own (forked: no pickling)
        self.config = config
        self.redis_url = redis_url
        self.host = host
        self.port = port
        self.count = count
        self.context = multiprocessing.get_context("fork")
        self.workers: dict[int, BaseProcess] = {}
        self.stopping = False
        self.restarts = 0

    def _start(self, index: int) -> None:
        if index == PORTAL:
            process = self.context.Process(
                target=_portal_entry, args=(self.portal,), name="clearance-portal", daemon=False
            )
        else:
            process = self.context.Process(
                target=_worker_entry,
                args=(self.config, self.redis_url, self.host, self.port, index),
                name=f"clearance-worker-{index}",
                daemon=False,
            )
        process.start()
        self.workers[index] = process
        log.info("worker_started", worker="portal" if index == PORTAL else index, pid=process.pid)

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        if not self.stopping:
            log.info("shutting_down", signal=signal.Signals(signum).name)
        self.stopping = True
        for process in self.workers.values():
            if process.is_alive() and process.pid is not None:
                process.terminate()  # SIGTERM: the worker drains, then exits

    def run(self) -> int:
        try:
            check_port_free(self.host, self.port)
        except OSError as error:
            log.error("cannot_listen", address=f"{self.host}:{self.port}", error=error.strerror)
            return 1
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        for index in range(self.count):
            self._start(index)
        if self.portal is not None:
            self._start(PORTAL)
        backoff = 0.0
        while self.workers:
            time.sleep(0.1)
            for index, process in list(self.workers.items()):
                if process.is_alive():
                    continue
                process.join()
                del self.workers[index]
                if self.stopping:
                    continue
                log.error(
                    "worker_died",
                    worker="portal" if index == PORTAL else index,
                    pid=process.pid,
                    exitcode=process.exitcode,
                )
                backoff = min(RESTART_BACKOFF_MAX, backoff * 2 or 0.1)
                time.sleep(backoff)
                self.restarts += 1
                self._start(index)
            if all(process.is_alive() for process in self.workers.values()):
                backoff = max(0.0, backoff - 0.01)
        log.info("stopped", restarts=self.restarts)
        return 0
