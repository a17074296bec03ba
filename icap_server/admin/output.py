"""One output for every list and show command: typed rows in; a table, CSV or JSON out (`--format`).

Why one module: a command describes its answer once, as frozen dataclasses whose field names are the stable
column names (the CSV header, the JSON keys; README lists them), plus the layout of its table. The table, the
CSV and the JSON are all made from those same values, so they cannot tell different stories.

A table layout is a list of `Line`s, each a `str.format` template over the row's fields, read by `TableText`:
a moment is local time in the configured zone (`%Y-%m-%d %H:%M`; `{f:day}` the date; `{f:end}` the minute
before an exclusive end, as admins read "valid until"); a sequence is joined by ", " (or by the spec,
`{web: }`; `{web:count}` is its length), empty as "-"; a mapping is "key value, key value"; None is "-".

CSV (RFC 4180, by the csv module: one header, CRLF) and JSON carry the values themselves: moments in ISO 8601,
UTC; None empty (CSV) or null; a list of names in CSV joined by "; "; a mapping or nested records in CSV as
JSON text. JSON is a list of objects for a list command and one object for a show command.
"""

from __future__ import annotations

import argparse
import csv
import json
import string
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, fields, is_dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal, TypeAlias
from zoneinfo import ZoneInfo

from icap_server.admin.support import local_time, print_fields, print_table

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

    Row: TypeAlias = DataclassInstance
else:
    Row: TypeAlias = Any

FORMATS = ("table", "csv", "json")
Format: TypeAlias = Literal["table", "csv", "json"]


def add_format(parser: argparse.ArgumentParser) -> None:
    """`--format table|csv|json` (a wrong one is argparse's one line, exit 2, like every bad argument)."""
    parser.add_argument("--format", choices=FORMATS, default="table", help="table (default), csv or json")


@dataclass(frozen=True)
class Line:
    """One column of a list's table (`label` its heading) or one line of a show's (`label: text`).

    `when` names a field that must be set (not None, not empty) for the template to be used; otherwise the
    cell or line reads `otherwise` (a show line with no `otherwise` is left out, a list cell is "-").
    `each` (show only) names a field of nested records: one line per record, the template over its fields.
    """

    label: str
    template: str
    when: str | None = None
    otherwise: str | None = None
    each: str | None = None


# A table that is not columns (categories stats): the lines to print, from the rows and the cell reader.
Layout: TypeAlias = "Sequence[Line] | Callable[[Sequence[Any], TableText], Iterable[str]]"


class TableText(string.Formatter):
    """Templates over a row's fields, each value written as the table shows it (see the module's docstring)."""

    def __init__(self, zone: ZoneInfo) -> None:
        self.zone = zone

    def format_field(self, value: Any, format_spec: str) -> str:
        if value is None:
            return "-"
        if isinstance(value, datetime):
            if format_spec == "day":
                return local_time(value, self.zone, "%Y-%m-%d")
            return local_time(value - timedelta(seconds=1) if format_spec == "end" else value, self.zone)
        if isinstance(value, bool):
            return "yes" if value else "no"
        if isinstance(value, Mapping):
            return ", ".join(f"{key} {count}" for key, count in value.items()) or "-"
        if isinstance(value, tuple | list | frozenset):
            if format_spec == "count":
                return str(len(value))
            return (format_spec or ", ").join(str(item) for item in value) or "-"
        return str(value)

    def fill(self, template: str, row: Row) -> str:
        return self.vformat(template, (), _values(row))

    def line(self, line: Line, row: Row) -> str | None:
        """The text of one cell or line, or None for a show line left out."""
        if line.when is not None and not getattr(row, line.when):
            return line.otherwise
        return self.fill(line.template, row)


def print_rows(form: str, row_type: type[Row], rows: Sequence[Row], layout: Layout, zone: ZoneInfo) -> None:
    """A list command's answer: its table as today, or CSV / JSON with `row_type`'s fields as the columns."""
    if form == "json":
        _print_json([_record(row) for row in rows])
    elif form == "csv":
        names = [field.name for field in fields(row_type)]
        _print_csv([names, *([_csv_value(getattr(row, name)) for name in names] for row in rows)])
    elif callable(layout):
        for text in layout(rows, TableText(zone)):
            print(text)
    else:
        reader = TableText(zone)
        cells = [[_or_dash(reader.line(line, row)) for line in layout] for row in rows]
        print_table([[line.label for line in layout], *cells])


def print_record(form: str, record: Row, layout: Sequence[Line], zone: ZoneInfo, width: int = 15) -> None:
    """A show command's answer: `label: value` lines as today, or one CSV row / one JSON object."""
    if form == "json":
        _print_json(_record(record))
        return
    if form == "csv":
        names = [field.name for field in fields(record)]
        _print_csv([names, [_csv_value(getattr(record, name)) for name in names]])
        return
    reader = TableText(zone)
    lines: list[tuple[str, str]] = []
    for line in layout:
        if line.each is not None:
            lines += [(line.label, reader.fill(line.template, item)) for item in getattr(record, line.each)]
            continue
        text = reader.line(line, record)
        if text is not None:
            lines.append((line.label, text))
    print_fields(lines, width)


def _or_dash(text: str | None) -> str:
    return "-" if text is None else text


def _values(row: Row) -> dict[str, Any]:
    return {field.name: getattr(row, field.name) for field in fields(row)}


def _record(row: Row) -> dict[str, Any]:
    return {name: _json_value(value) for name, value in _values(row).items()}


def _json_value(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat()
    if is_dataclass(value) and not isinstance(value, type):
        return _record(value)
    if isinstance(value, Mapping):
        return {str(key): _json_value(item) for key, item in value.items()}
    if isinstance(value, frozenset):
        return sorted(_json_value(item) for item in value)
    if isinstance(value, tuple | list):
        return [_json_value(item) for item in value]
    return value


def _csv_value(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    data = _json_value(value)
    if isinstance(data, list) and all(isinstance(item, str) for item in data):
        return "; ".join(data)
    if isinstance(data, list | dict):
        return json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    return str(data)


def _print_csv(rows: Iterable[Sequence[str]]) -> None:
    csv.writer(sys.stdout).writerows(rows)  # the csv module's dialect: RFC 4180 quoting, CRLF line ends


def _print_json(data: object) -> None:
    print(json.dumps(data, ensure_ascii=False, indent=2))
