"""Pieces every `clearance` command module shares: the usage error, the store action type, tables."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from zoneinfo import ZoneInfo

from policy.store import PolicyStore

StoreAction = Callable[[PolicyStore], Awaitable[int]]


class UsageError(Exception):
    """Bad input from the admin: reported as one line, exit code 2, nothing written."""


def print_table(rows: Sequence[Sequence[str]]) -> None:
    widths = [max(len(row[index]) for row in rows) for index in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())


def local_time(moment: datetime | None, zone: ZoneInfo, form: str = "%Y-%m-%d %H:%M") -> str:
    """A moment as admins read it: local time in the configured zone, or "-" when there is none."""
    return moment.astimezone(zone).strftime(form) if moment else "-"


def print_fields(fields: Sequence[tuple[str, str]]) -> None:
    """`label:  value` lines, the values aligned (the `show` commands)."""
    for label, value in fields:
        print(f"{label + ':':15} {value}")
