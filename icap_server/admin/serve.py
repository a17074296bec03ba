"""`clearance serve`: check the listen address, workers and block-page templates, then run the ICAP server."""

from __future__ import annotations

import argparse
import signal

from icap_server.admin.support import Commands, UsageError, redis_url
from icap_server.config import Config, parse_listen
from icap_server.runtime.logs import configure_logging


def register(commands: Commands) -> None:
    serve = commands.add_parser("serve", help="run the ICAP server")
    serve.add_argument("--listen", metavar="HOST:PORT", help="address to listen on (default: server.listen)")
    serve.add_argument(
        "--workers", type=int, metavar="N", help="server processes sharing the port (default: server.workers)"
    )
    serve.set_defaults(handler=serve_command)


def serve_command(args: argparse.Namespace, config: Config) -> int:
    """Runs until stopped; logs go to stdout (the admin commands log to stderr, keeping stdout for answers).

    SIGHUP is a reload once serving; from here until then it is held (blocked), not the default (exit).
    """
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGHUP})
    from icap_server.runtime.serve import run_server
    from icap_server.service.pages import check_templates  # the server's imports only when serving

    listen = args.listen or config.server.listen
    try:
        host, port = parse_listen(listen)
    except ValueError as error:
        raise UsageError(f"--listen: {error}") from None
    workers = config.server.workers if args.workers is None else args.workers
    if workers < 0:
        raise UsageError(f"--workers must be 0 (one per core) or more, got {workers}")
    check_templates(config)  # a broken block-page template stops the start, naming the file and line
    configure_logging(config.logging.level, config.logging.format)
    url = redis_url(config, create=True)  # the one command (with `store init`) that makes a store
    companion = None
    if config.portal.listen is not None:
        from icap_server.portal.companion import PortalCompanion

        companion = PortalCompanion(config, url)
    return run_server(config, url, host, port, workers, companion)
