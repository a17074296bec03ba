"""`clearance serve`: prepare the store, then run one server process, or a supervisor and N workers."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import os

import structlog

from icap_server.config import Config
from icap_server.runtime.companion import Companion
from icap_server.runtime.logs import configure_logging
from icap_server.runtime.server import serve
from icap_server.service.application import Application
from icap_server.service.defaults import load_default_lists
from icap_server.service.exemptions import static_exemptions
from icap_server.service.sync import PolicySync
from policy.store import PolicyStore, StoreUnavailable

log = structlog.get_logger("clearance")


def run_server(
    config: Config, redis_url: str, host: str, port: int, workers: int, companion: Companion | None = None
) -> int:
    """Load the default lists once (before any worker starts), then serve.

    A companion (the access-request portal, when `portal.listen` is set) runs once: on the worker's loop
    with one worker, else in a process of its own that the supervisor keeps running like a worker. It binds
    its socket here, first.
    """
    asyncio.run(_prepare_store(config, redis_url))
    count = workers or os.cpu_count() or 1
    if companion is not None:
        try:
            companion.bind()
        except OSError as error:
            log.error("cannot_listen", address=companion.address, error=error.strerror, service=companion.name)
            return 1
    if count == 1:
        return run_worker(config, redis_url, host, port, reuse_port=False, index=None, companion=companion)
    from icap_server.runtime.supervisor import Supervisor

    # Several workers: each links its block pages to the companion, which runs in a process of its own.
    worker = functools.partial(run_worker, config, redis_url, host, port, True, companion=companion, inline=False)
    portal = companion.run_process if companion is not None else None
    return Supervisor(host, port, count, worker=worker, portal=portal).run()


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
    sync = PolicySync(store, static_exemptions=static_exemptions(config))
    app = Application(config, sync)
    follower = asyncio.create_task(sync.run())
    usage = asyncio.create_task(app.usage.run(store, config.approvals.usage_flush_interval))
    linking: asyncio.Task[None] | None = None
    portal: asyncio.Task[None] | None = None
    portal_stop = asyncio.Event()
    if companion is not None:
        linking = asyncio.create_task(companion.attach(app, store))  # block pages offer the request form
        if inline:  # one worker: the companion shares its loop
            portal = asyncio.create_task(companion.run(store, portal_stop))
            portal.add_done_callback(_report_portal_end)
    try:
        try:
            # Serve once the policy is loaded; if Redis stays away, serve anyway and block everything meanwhile.
            await asyncio.wait_for(sync.loaded.wait(), timeout=config.server.startup_timeout)
        except TimeoutError:
            log.error("policy_not_loaded", waited_s=config.server.startup_timeout, url=redact(redis_url))
        if linking is not None:
            await asyncio.wait({linking}, timeout=5)  # the first block page already offers the request form
        # The loaded policy (up to millions of objects) lives as long as the process: keep the cyclic
        # collector off it, and let it run less often over the short-lived objects of each request.
        gc.freeze()
        gc.set_threshold(100_000, 50, 100)
        await serve(app, host, port, reuse_port=reuse_port)
    finally:
        if linking is not None:
            linking.cancel()
        portal_stop.set()
        if portal is not None:
            with contextlib.suppress(Exception):  # a failure was logged when it happened
                await asyncio.wait_for(portal, timeout=10)
        follower.cancel()
        usage.cancel()
        await asyncio.gather(usage, return_exceptions=True)  # writes the last counts
        await store.close()
    return 0


def _report_portal_end(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("portal_failed", error=repr(task.exception()))


def redact(url: str) -> str:
    """A Redis URL without its password, for logs."""
    scheme, sep, rest = url.partition("://")
    _credentials, at, location = rest.rpartition("@")
    return f"{scheme}{sep}{'***@' if at else ''}{location}" if sep else url
