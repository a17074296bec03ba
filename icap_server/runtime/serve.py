"""`clearance serve`: prepare the store, then run one server process, or a supervisor and N workers.

A worker whose store does not answer listens at once: until its policy loads, every request gets the
fail-closed `policy-unavailable` block page, and `server.startup_timeout` only says when to log that loudly.
One whose store answers listens once its policy is in (it takes moments), so a restarted worker never blocks
everyone while it loads; should the load drag on past `startup_timeout`, it listens anyway.
SIGHUP is held blocked from the start until a process can act on it (`serve` unblocks it once its reload
handler is in place), so a reload asked for during start-up is done then rather than killing the process.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import re
import signal
import ssl
import sys

import structlog

from icap_server.config import Config, ServerConfig, parse_listen
from icap_server.runtime.companion import Companion, InlineCompanion
from icap_server.runtime.logs import LogFile, configure_logging, flush_logs
from icap_server.runtime.metrics import MULTIPROC_ENV, MetricsListener, WorkerMetrics, prepare_directory
from icap_server.runtime.reload import WorkerReload, reread_config
from icap_server.runtime.server import ICAPServer
from icap_server.runtime.signals import Reload, reload_on_hangup
from icap_server.service.application import Application
from icap_server.service.catalogue import shipped_services
from icap_server.service.defaults import default_seed, load_default_lists
from icap_server.service.exemptions import static_exemptions
from icap_server.service.sync import PolicySync, protected
from policy.store import PolicyStore, StoreUnavailable

log = structlog.get_logger("clearance")
icap_log = structlog.get_logger("clearance.icap")  # the listener's own lines, as before
PORTAL_LINK_WAIT = 1.0  # seconds the first block pages may wait for the portal's token secret (Redis is up)
STORE_PROBE = 1.0  # seconds the store has to answer at start before the worker listens without a policy


def run_server(
    config: Config, redis_url: str, host: str, port: int, workers: int, companion: Companion | None = None
) -> int:
    """Load the default lists once (before any worker starts), then serve.

    A companion (the access-request portal, when `portal.listen` is set) runs once: on the worker's loop
    with one worker, else in a process of its own that the supervisor keeps running like a worker. It binds
    its socket here, first.
    """
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGHUP})  # pending, not fatal, until a handler is in
    if config.logging.file:
        try:
            LogFile.attach(config.logging.file)
        except OSError as error:
            print(f"clearance: logging.file {config.logging.file}: cannot open: {error.strerror}", file=sys.stderr)
            return 2
    signal.signal(signal.SIGUSR1, LogFile.reopen)  # logrotate's signal; forked processes inherit it
    try:
        tls_context(config.server)  # a certificate or key that cannot be loaded stops here, not in every worker
    except (OSError, ssl.SSLError) as error:
        reason = getattr(error, "strerror", None) or getattr(error, "reason", None) or str(error)
        print(f"clearance: server.tls_cert / tls_key: cannot load {config.server.tls_cert}: {reason}", file=sys.stderr)
        return 2
    asyncio.run(_prepare_store(config, redis_url))
    count = workers or os.cpu_count() or 1
    try:
        metrics = start_metrics(config, count)
    except OSError as error:
        log.error("cannot_listen", address=config.metrics.listen, error=error.strerror, service="metrics")
        return 1
    try:
        return _run_processes(config, redis_url, host, port, count, companion)
    finally:
        if metrics is not None:
            metrics.stop()


def start_metrics(config: Config, workers: int) -> MetricsListener | None:
    """The admin HTTP listener (`metrics.listen`), its shared directory named before any worker starts."""
    if not config.metrics.listen:
        return None
    prepare_directory()
    metrics_host, metrics_port = parse_listen(config.metrics.listen)
    listener = MetricsListener(metrics_host, metrics_port, workers, config.metrics.ready_max_age_seconds)
    listener.start()
    log.info("metrics_listening", address=config.metrics.listen)
    return listener


def _run_processes(
    config: Config, redis_url: str, host: str, port: int, count: int, companion: Companion | None
) -> int:
    """One worker in this process, or the supervisor and `count` workers (with the companion's process)."""
    if companion is not None:
        try:
            companion.bind()
        except OSError as error:
            log.error("cannot_listen", address=companion.address, error=error.strerror, service=companion.name)
            return 1
    if count == 1:
        return run_worker(config, redis_url, host, port, reuse_port=False, index=None, companion=companion)
    from icap_server.runtime.supervisor import Supervisor

    current = config  # what a worker forked from now on starts with; a reload replaces it

    def worker(index: int) -> int:
        # Several workers: each links its block pages to the companion, which runs in a process of its own.
        return run_worker(current, redis_url, host, port, True, index, companion=companion, inline=False)

    def reload() -> bool:
        """The supervisor's part of SIGHUP: check the file once; on success workers and portal follow."""
        nonlocal current
        fresh = reread_config(current)
        if fresh is None:
            return False
        current = fresh
        if companion is not None:
            companion.reconfigure(fresh)
        return True

    portal = companion.run_process if companion is not None else None
    return Supervisor(host, port, count, worker=worker, portal=portal, reload=reload).run()


def run_worker(
    config: Config,
    redis_url: str,
    host: str,
    port: int,
    reuse_port: bool,
    index: int | None,
    companion: Companion | None = None,
    inline: bool = True,
) -> int:
    """One server process: its own event loop, in-memory policy and batched log lines.

    `inline`: the companion also runs on this process's loop (one worker), not only attached to it.
    """
    fields = {"worker": index} if index is not None else None
    configure_logging(config.logging.level, config.logging.format, fields=fields, buffered=True)
    try:
        import uvloop
    except ImportError:
        runner = asyncio.run
    else:
        runner = uvloop.run
    return runner(_worker_main(config, redis_url, host, port, reuse_port, companion, inline))


async def _prepare_store(config: Config, redis_url: str) -> None:
    store = PolicyStore.from_url(redis_url, config.redis.key_prefix)
    try:
        loaded = await load_default_lists(store, config)
        if loaded:
            log.info("default_lists_loaded", entries=loaded)
    except StoreUnavailable as error:
        # Start anyway: requests get a policy-unavailable block page (fail closed) until Redis is back.
        log.error("redis_unavailable", error=str(error), url=redact(redis_url))
    finally:
        await store.close()


async def _worker_main(
    config: Config,
    redis_url: str,
    host: str,
    port: int,
    reuse_port: bool,
    companion: Companion | None,
    inline: bool,
) -> int:
    store = PolicyStore.from_url(redis_url, config.redis.key_prefix)
    exempt, protect = static_exemptions(config), protected(config)
    sync = PolicySync(
        store,
        static_exemptions=exempt,
        seed=default_seed(config),
        static_protected=protect,
        static_services=shipped_services(config),
    )
    app = Application(config, sync)
    follower = asyncio.create_task(sync.run())
    usage = asyncio.create_task(app.usage.run(store, config.approvals.usage_flush_interval))
    discovery = asyncio.create_task(app.discovery.run(store, config.approvals.usage_flush_interval))
    watch = asyncio.create_task(_warn_until_loaded(sync, config.server.startup_timeout, redis_url))
    linking: asyncio.Task[None] | None = None
    portal = InlineCompanion(companion, store) if companion is not None and inline else None
    if companion is not None:
        linking = asyncio.create_task(companion.attach(app, store))  # block pages offer the request form
        if portal is not None:  # one worker: the companion shares its loop
            portal.start()
    try:
        await _first_load(sync, store, config.server.startup_timeout, redis_url)
        if linking is not None:  # with Redis up the secret comes at once; without, serve without the form
            await asyncio.wait({linking}, timeout=PORTAL_LINK_WAIT)
        # The loaded policy (up to millions of objects) lives as long as the process: keep the cyclic
        # collector off it, and let it run less often over the short-lived objects of each request.
        gc.freeze()
        gc.set_threshold(100_000, 50, 100)
        reload = WorkerReload(sync, store, companion, portal, supervised=reuse_port)  # reuse_port: one of N
        await serve(app, host, port, reuse_port=reuse_port, reload=reload)
    finally:
        for task in (linking, watch):
            if task is not None:
                task.cancel()
        if portal is not None:
            await portal.stop()
        follower.cancel()
        usage.cancel()
        discovery.cancel()
        await asyncio.gather(usage, discovery, return_exceptions=True)  # writes the last counts
        await store.close()
    return 0


async def _first_load(sync: PolicySync, store: PolicyStore, timeout: float, redis_url: str) -> None:
    """Wait for the first policy load while the store answers; not at all when it does not (see the module)."""
    try:
        await asyncio.wait_for(store.version(), timeout=STORE_PROBE)
    except (StoreUnavailable, OSError, TimeoutError) as error:
        log.error("policy_unavailable_at_start", error=str(error) or type(error).__name__, url=redact(redis_url))
        return
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(sync.loaded.wait(), timeout=timeout)


async def _warn_until_loaded(sync: PolicySync, after: float, redis_url: str) -> None:
    """Serving without a policy blocks everything: say so loudly, every `after` seconds, until it loads."""
    while True:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(sync.loaded.wait(), timeout=after)
            return
        log.error("policy_not_loaded", waited_s=after, url=redact(redis_url))


def redact(url: str) -> str:
    """A Redis URL without its passwords, for logs: the user:password part, and a Sentinel URL's
    `sentinel_password=` option."""
    scheme, sep, rest = url.partition("://")
    _credentials, at, location = rest.rpartition("@")
    location = re.sub(r"(sentinel_password=)[^&]*", r"\1***", location)
    return f"{scheme}{sep}{'***@' if at else ''}{location}" if sep else url


async def serve(
    app: Application,
    host: str,
    port: int,
    ready: asyncio.Event | None = None,
    reuse_port: bool = False,
    reload: Reload | None = None,
) -> None:
    """Run until SIGTERM or SIGINT, then shut down gracefully; each SIGHUP calls `reload` (`reload_on_hangup`)."""
    # The handlers go in before the port opens: from the first connection on, SIGTERM means drain.
    stop = asyncio.Event()
    hangup = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    loop.add_signal_handler(signal.SIGHUP, hangup.set)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGHUP})  # held since start-up (serve.py): done now
    server = ICAPServer(app, metrics=WorkerMetrics() if os.environ.get(MULTIPROC_ENV) else None)
    await server.start(host, port, reuse_port, tls_context(app.config.server))
    quick = server.quick.name if server.quick is not None else "off"  # the C scan, its Python twin, or none
    scheme = "icaps" if app.config.server.tls_cert else "icap"
    icap_log.info(
        "listening", address=f"{host}:{port}", scheme=scheme, policy_version=app.policy.version, quick_scan=quick
    )
    reloading = asyncio.create_task(reload_on_hangup(server, hangup, reload))
    if ready is not None:
        ready.set()
    await stop.wait()
    reloading.cancel()
    icap_log.info("shutting_down")
    await server.stop()
    icap_log.info("stopped")
    flush_logs()


def tls_context(settings: ServerConfig) -> ssl.SSLContext | None:
    """ICAPS: a server context from `server.tls_cert` / `tls_key` (TLS 1.2 and later); None for plain ICAP."""
    if not settings.tls_cert:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(settings.tls_cert, settings.tls_key)
    return context
