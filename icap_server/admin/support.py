"""Pieces every `clearance` command module shares: the usage error, the handler types, tables, checked input.

Each command group module has `register(commands)`, which adds its subparsers and sets `handler` on each
leaf; `main` parses, calls the handler (which checks every argument before any connection is made) and
runs the StoreAction it returns against the store, or returns its exit code for commands without one.
"""

from __future__ import annotations

import argparse
import difflib
import os
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import TypeAlias
from zoneinfo import ZoneInfo

from icap_server.config import Config
from icap_server.service.decisions import approval_rules as approval_rules  # re-exported: shared with the portal
from icap_server.service.decisions import store_approval_rules as store_approval_rules
from policy.categories import validate_category
from policy.directory import Directory
from policy.store import PolicyStore
from policy.store.embedded import ensure_embedded_redis

StoreAction = Callable[[PolicyStore], Awaitable[int]]
# A handler checks its arguments, then returns the store action to run, or an exit code (serve, blockpages).
Handler = Callable[[argparse.Namespace, Config], StoreAction | int]
Commands: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


class UsageError(Exception):
    """Bad input from the admin: reported as one line, exit code 2, nothing written."""


def add_group(commands: Commands, name: str, help: str) -> Commands:
    """A command with actions (`clearance NAME ACTION …`); each action's parser sets its own handler."""
    return commands.add_parser(name, help=help).add_subparsers(dest="action", required=True, metavar="ACTION")


def redis_url(config: Config, create: bool = False) -> str:
    """The configured Redis, else the embedded one (started, or reused, in `embedded_directory`).

    Only `serve` and `store init` pass `create`: any other command finding no store there says so (exit 2)
    instead of silently starting a second, empty one.
    """
    return config.redis.url or ensure_embedded_redis(embedded_directory(config), create=create)


def embedded_directory(config: Config) -> Path:
    """Where the embedded store lives: redis.embedded_dir, a relative one taken from the config file's
    directory (not the working directory, so every command run with that file finds the same store); with
    no config file, from $XDG_DATA_HOME/clearance (~/.local/share/clearance), or /var/lib/clearance as root.
    """
    configured = Path(config.redis.embedded_dir).expanduser()
    if configured.is_absolute():
        return configured
    source = Path(config.source)
    if source.is_file():
        return source.resolve().parent / configured
    return _data_home() / configured


def _data_home() -> Path:
    if os.geteuid() == 0:
        return Path("/var/lib/clearance")
    return Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share") / "clearance"


def check_department(given: str | None, directory: Directory, seen: Iterable[str]) -> None:
    """A --department that neither the directory nor any record names is a typo: say so, rather than list nothing.

    `-` (no department) and departments that only old records still carry are accepted.
    """
    if not given or given == "-":
        return
    known = set(seen) | {person.department for person in directory.people.values()}
    known |= {name for person in directory.people.values() for name in person.heads | person.delegates}
    known.discard("")
    if given in known:
        return
    close = difflib.get_close_matches(given, known, 1)
    hint = f"did you mean {close[0]!r}?" if close else f"known: {', '.join(sorted(known)[:12]) or 'none'}"
    raise UsageError(f"--department: no department {given!r} in the directory or the records; {hint}")


def checked_category(name: str) -> str:
    """A category name as given on the command line, or UsageError saying what a name may be."""
    try:
        return validate_category(name)
    except ValueError as error:
        raise UsageError(str(error)) from None


@contextmanager
def reading(name: object) -> Iterator[None]:
    """Around opening and reading an input file: a missing file or bytes that are not UTF-8 become one line."""
    try:
        yield
    except OSError as error:
        raise UsageError(f"{name}: {error.strerror or error}") from None
    except UnicodeDecodeError:
        raise UsageError(f"{name}: not UTF-8 text") from None


def print_table(rows: Sequence[Sequence[str]]) -> None:
    widths = [max(len(row[index]) for row in rows) for index in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())


def local_time(moment: datetime | None, zone: ZoneInfo, form: str = "%Y-%m-%d %H:%M") -> str:
    """A moment as admins read it: local time in the configured zone, or "-" when there is none."""
    return moment.astimezone(zone).strftime(form) if moment else "-"


def print_fields(fields: Sequence[tuple[str, str]], width: int = 15) -> None:
    """`label:  value` lines, the values aligned (the `show` commands; `directory show` aligns narrower)."""
    for label, value in fields:
        print(f"{label + ':':{width}} {value}")
