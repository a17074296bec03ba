"""Running the portal: its socket, bound before any worker starts, and uvicorn serving it until told to stop.

It runs once per `clearance serve`: on the worker's own event loop with one worker, in a child process of the
supervisor with several (the socket is inherited, so a restarted portal process finds it still bound).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
from collections.abc import Iterator

import structlog
import uvicorn

from icap_server.config import Config, parse_listen
from icap_server.portal.app import Portal
from icap_server.portal.links import base_url, wait_for_secret
from icap_server.portal.reminders import start_reminders
from policy.store import PolicyStore

log = structlog.get_logger("clearance.portal")


def bind_portal(config: Config) -> socket.socket:
    """The portal's listening socket, bound before any worker starts (OSError if the address is taken)."""
    assert config.portal.listen is not None
    host, port = parse_listen(config.portal.listen)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(128)  # forked portal processes inherit it; a restarted one finds it still bound
    except OSError:
        sock.close()
        raise
    if host in ("0.0.0.0", "::") and config.portal.public_url is None:
        log.warning("portal_public_url_unset", listen=config.portal.listen, hint="set portal.public_url")
    return sock


class PortalServer(uvicorn.Server):
    """uvicorn, minus its signal handling: the process that hosts the portal decides when it stops."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def portal_server(config: Config, store: PolicyStore, secret: str) -> PortalServer:
    settings = uvicorn.Config(
        Portal(config, store, secret).app,
        lifespan="off",
        ws="none",
        http="h11",
        log_config=None,
        access_log=False,
        proxy_headers=False,  # the portal decides itself whom to believe about addresses (trusted_proxies)
        server_header=False,
        limit_concurrency=200,
        timeout_keep_alive=5,
        timeout_graceful_shutdown=5,
    )
    return PortalServer(settings)


async def run_portal(config: Config, store: PolicyStore, sock: socket.socket, stop: asyncio.Event) -> None:
    """Serve the portal on `sock` until `stop` is set (drains requests in flight and mail being sent).

    `sock` stays open: its owner (the process that bound it, or inherited it) closes it at exit."""
    secret_task = asyncio.create_task(wait_for_secret(config, store))
    stopping = asyncio.create_task(stop.wait())
    await asyncio.wait({secret_task, stopping}, return_when=asyncio.FIRST_COMPLETED)
    if not secret_task.done():  # stopped before Redis ever answered
        secret_task.cancel()
        return
    server = portal_server(config, store, secret_task.result())
    # uvicorn closes the sockets it serves when it stops: give it a duplicate, so the bound socket stays
    # open for the run a reload starts next (connections wait in its backlog meanwhile, none is refused).
    task = asyncio.create_task(server.serve(sockets=[sock.dup()]))
    log.info("portal_listening", address=config.portal.listen, url=base_url(config))
    reminders = start_reminders(config, store, stop)  # the heads' digest and the notes to people
    await asyncio.wait({task, stopping}, return_when=asyncio.FIRST_COMPLETED)
    server.should_exit = True
    stopping.cancel()
    if reminders is not None:
        reminders.cancel()  # a mail cut off is not recorded as sent: the next portal sends it
        with contextlib.suppress(asyncio.CancelledError):
            await reminders
    await task


def run_portal_process(config: Config, redis_url: str, sock: socket.socket) -> int:
    """The portal's own process (several workers): stops on SIGTERM from the supervisor."""
    from icap_server.runtime.logs import configure_logging

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the supervisor decides
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    configure_logging(config.logging.level, config.logging.format, fields={"worker": "portal"})

    async def main() -> int:
        store = PolicyStore.from_url(redis_url, config.redis.key_prefix)
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        try:
            await run_portal(config, store, sock, stop)
        finally:
            await store.close()
        return 0

    return asyncio.run(main())
