"""The `clearance` command: run the filter, and manage categories, approvals and the rest of the policy.

Each command group is a module with `register(commands)`, listed once in COMMAND_GROUPS (in the order
`clearance --help` shows them); every leaf parser sets `handler`, and `run` dispatches on it. Bad input gets
one clear line on stderr and exit code 2, and nothing is written: a handler checks every argument and every
line of an input file before the first write to Redis.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Callable, Sequence
from typing import NoReturn, cast
from urllib.parse import urlsplit

from icap_server import __version__
from icap_server.admin import (
    approvals,
    audit,
    blockpages,
    categories,
    directory,
    exemptions,
    explain,
    modes,
    reminders,
    report,
    requests,
    rules,
    serve,
    services,
)
from icap_server.admin import store as store_commands
from icap_server.admin.support import Commands, Handler, StoreAction, UsageError, redis_url
from icap_server.config import Config, ConfigError, load_config
from icap_server.runtime.logs import configure_logging
from policy.store import PolicyStore, StoreError, StoreUnavailable
from policy.store.embedded import EmbeddedRedisError

EXIT_USAGE = 2
EXIT_UNAVAILABLE = 1
EXIT_BROKEN_PIPE = 141


COMMAND_GROUPS: tuple[Callable[[Commands], None], ...] = (
    serve.register,
    categories.register,
    services.register,
    approvals.register,
    directory.register,
    exemptions.register,
    modes.register,  # roll-out: enforce, monitor, caution
    audit.register,
    report.register,
    requests.register,
    reminders.register,  # `reminders run`: the heads' digest and the notes to people
    rules.register,
    blockpages.register,
    explain.register,
    store_commands.register,  # `store status/init/reset/stop`
)


class OneLineParser(argparse.ArgumentParser):
    """Bad arguments are one line on stderr and exit code 2, like every other mistake (the subcommands too)."""

    def error(self, message: str) -> NoReturn:
        command = self.prog.removeprefix("clearance").strip()
        where = f"{command}: " if command else ""
        self.exit(EXIT_USAGE, f"clearance: {where}{message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="clearance",
        description="ICAP web-content filter: restricted categories pass only with a department head's approval.",
    )
    parser.add_argument("--version", action="version", version=f"clearance {__version__}")
    parser.add_argument(
        "--config",
        metavar="PATH",
        help="config file (default: $CLEARANCE_CONFIG, ./config.yaml, /etc/clearance/config.yaml)",
    )
    parser.add_argument("--redis", metavar="URL", help="Redis URL (default: $CLEARANCE_REDIS_URL, redis.url, embedded)")
    parser.add_argument(
        "--actor",
        default=default_actor(),
        help="who is making changes, for the audit trail (default: $CLEARANCE_ACTOR, login name)",
    )
    # Every subparser is a OneLineParser too (argparse makes them of the parser's own class).
    commands = cast(Commands, parser.add_subparsers(dest="command", required=True, metavar="COMMAND"))
    for register in COMMAND_GROUPS:
        register(commands)
    return parser


def default_actor() -> str:
    import getpass

    try:
        return os.environ.get("CLEARANCE_ACTOR") or getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        config = load_config(args.config, args.redis)
        warn_of_password(args.redis)
        return run(args, config)
    except (UsageError, ConfigError, EmbeddedRedisError, StoreError) as error:
        print(f"clearance: {error}", file=sys.stderr)
        return EXIT_USAGE
    except StoreUnavailable as error:
        print(f"clearance: Redis is not reachable: {error}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return stopped_reading()


def warn_of_password(url: str | None) -> None:
    """A password on the command line is visible to every user (`ps`): say so, and name the safe ways."""
    if url and urlsplit(url).password:
        print(
            "clearance: warning: --redis carries a password, which every user of this machine can see (ps); "
            "use $CLEARANCE_REDIS_URL or redis.url_file instead",
            file=sys.stderr,
        )


def stopped_reading() -> int:
    """`clearance audit | head`: the reader has what it wanted. Exit quietly, as a SIGPIPE would (128 + 13).

    Standard output is pointed at /dev/null first, so the interpreter's last flush finds nothing to complain of.
    """
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    return EXIT_BROKEN_PIPE


def run(args: argparse.Namespace, config: Config) -> int:
    """The handler checks its input first; a store action then runs with one connection, closed after."""
    handler: Handler = args.handler
    prepared = handler(args, config)  # validates everything before any connection is made
    if isinstance(prepared, int):
        return prepared  # serve and blockpages: no store action
    # Admin commands log their changes (the audit lines) to stderr; stdout stays the command's answer.
    configure_logging(config.logging.level, config.logging.format, stream=sys.stderr)
    return asyncio.run(with_store(config, prepared))


async def with_store(config: Config, action: StoreAction) -> int:
    store = PolicyStore.from_url(redis_url(config), config.redis.key_prefix)
    try:
        return await action(store)
    finally:
        await store.close()
