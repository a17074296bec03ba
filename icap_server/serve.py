"""`clearance serve`: connect the store, load default lists on first start, run the ICAP server."""

from __future__ import annotations

import asyncio

import structlog
from redis.exceptions import RedisError

from policy.store import PolicyStore

from .application import Application
from .cli import load_default_lists
from .config import Config
from .server import serve
from .sync import PolicySync

log = structlog.get_logger("clearance")


def run_server(config: Config, redis_url: str, host: str, port: int) -> int:
    try:
        import uvloop
    except ImportError:
        runner = asyncio.run
    else:
        runner = uvloop.run
    return runner(_main(config, redis_url, host, port))


async def _main(config: Config, redis_url: str, host: str, port: int) -> int:
    store = PolicyStore.from_url(redis_url, config.redis.key_prefix)
    sync = PolicySync(store)
    app = Application(config, sync)
    try:
        try:
            loaded = await load_default_lists(store, config)
            if loaded:
                log.info("default_lists_loaded", entries=loaded)
        except RedisError as error:
            # Start anyway: requests get ICAP 500 (Squid fails closed with bypass=off) until Redis is back.
            log.error("redis_unavailable", error=str(error), url=redact(redis_url))
        follower = asyncio.create_task(sync.run())
        try:
            # Serve once the policy is loaded; if Redis stays away, serve anyway and answer 500 meanwhile.
            await asyncio.wait_for(sync.loaded.wait(), timeout=config.server.startup_timeout)
        except TimeoutError:
            log.error("policy_not_loaded", waited_s=config.server.startup_timeout, url=redact(redis_url))
        await serve(app, host, port)
        follower.cancel()
    finally:
        await store.close()
    return 0


def redact(url: str) -> str:
    """A Redis URL without its password, for logs."""
    scheme, sep, rest = url.partition("://")
    _credentials, at, location = rest.rpartition("@")
    return f"{scheme}{sep}{'***@' if at else ''}{location}" if sep else url
