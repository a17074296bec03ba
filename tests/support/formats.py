"""Reading a list or show command's three answers (table, JSON, CSV) and holding them to one another.

For tests/test_list_formats.py (issue 11, acceptance 4). The table is read by its columns (each starts where
its heading does) or as `label: value` lines; a JSON time must be UTC and is shown here as the table shows it,
in policy.timezone's default zone; a CSV cell is written as README says. Nothing here imports Clearance: the
expectations are the documented ones, not the code's.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

CLI = Callable[..., Any]
ZONE = ZoneInfo("Asia/Hong_Kong")  # policy.timezone's default: not UTC, so every time is converted
README = Path(__file__).resolve().parents[2] / "README.md"


def documented(command: str) -> list[str]:
    """The columns README's "Output formats" table gives for a command, in order."""
    for line in README.read_text(encoding="utf-8").splitlines():
        if line.startswith(f"| `{command}` |"):
            return re.findall(r"`([a-z_]+)`", re.sub(r"\(each [^)]*\)", "", line.split("|")[2]))
    raise AssertionError(f"README documents no columns for {command!r}")


@dataclass
class Answers:
    table: str
    data: Any
    header: list[str]
    rows: list[list[str]]


def three_ways(cli: CLI, *args: str) -> Answers:
    """The command as a table, as JSON and as CSV (whose header must be README's)."""
    table = cli(*args).stdout
    data = json.loads(cli(*args, "--format", "json").stdout)
    header, *rows = list(csv.reader(io.StringIO(cli(*args, "--format", "csv").stdout)))
    assert header == documented(" ".join(args[:2]))
    return Answers(table, data, header, rows)


def columns(table: str) -> list[dict[str, str]]:
    """An aligned table as rows of {heading: cell}: each column starts where its heading does."""
    header, *lines = table.splitlines()
    found = list(re.finditer(r"\S+(?: \S+)*", header))
    ends = [match.start() for match in found[1:]] + [None]
    return [{m.group(): line[m.start() : end].strip() for m, end in zip(found, ends, strict=True)} for line in lines]


def fields(table: str) -> list[tuple[str, str]]:
    """`label: value` lines (a show command), in order, repeated labels kept."""
    return [(label, value.strip()) for label, _, value in (line.partition(":") for line in table.splitlines())]


def local(text: str | None, last_minute: bool = False) -> str:
    """A JSON time (it must be UTC) as the table shows it; `last_minute`: the minute before an exclusive end."""
    if text is None:
        return "-"
    moment = datetime.fromisoformat(text)
    assert moment.utcoffset() == timedelta(0), text
    return (moment - timedelta(seconds=1 if last_minute else 0)).astimezone(ZONE).strftime("%Y-%m-%d %H:%M")


def cell(value: Any, join: str = ", ") -> str:
    if value is None:
        return "-"
    if isinstance(value, list):
        return join.join(value) or "-"
    return str(value)


def csv_cell(value: Any) -> str:
    """A JSON value as README says CSV writes it."""
    if value is None:
        return ""
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return "; ".join(value)
    if isinstance(value, list | dict):
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return str(value)


def check_list(answers: Answers, as_table: Callable[[dict[str, Any]], dict[str, str]], count: int) -> list[Any]:
    data = answers.data
    assert isinstance(data, list) and len(data) == count, data
    assert all(list(record) == answers.header for record in data)
    assert [as_table(record) for record in data] == columns(answers.table)
    assert answers.rows == [[csv_cell(record[name]) for name in answers.header] for record in data]
    return data


def check_show(answers: Answers, as_table: Callable[[dict[str, Any]], list[tuple[str, str]]]) -> dict[str, Any]:
    record = answers.data
    assert isinstance(record, dict) and list(record) == answers.header
    assert as_table(record) == fields(answers.table)
    assert answers.rows == [[csv_cell(record[name]) for name in answers.header]]
    return record
