"""Approval files, the format: CSV, YAML or JSON rows in, and the `approvals export` CSV and JSON out.

An import file holds two kinds of rows, told apart by the `id` column:

- a NEW grant (no id): subject_kind, subject, category or host, approver, justification, ticket,
  owner_department, valid_from, valid_until. Each one passes exactly the checks of `approvals grant`
  (policy.lifecycle.build_approval against the directory in Redis): the approver's authority, a genuine
  justification, the maximum validity, a restricted category. `valid_until` as a date is the last day
  (inclusive, to the end of that day in policy.timezone); `valid_from` as a date starts at the beginning of
  that day; an empty `valid_from` means now; times without an offset are in policy.timezone.
- an EXISTING record (with id): the full record as `approvals export` writes it, reviews included. When its
  `seal` verifies (an HMAC under the store's export key: this store's own export, unchanged) it is restored
  exactly as it is, audited as `restore`, which is what makes export -> import -> export exact. Any other
  record is checked like a grant (policy.lifecycle.check_imported_record), unless it can never pass traffic again.

Every row is checked before anything is written; bad rows are reported as `FILE:LINE: reason` (all of them,
the first few shown) and nothing is written. Otherwise all rows are written in one transaction, with
one audit entry each (action `import`) and one change announcement.

The CSV of `approvals export` has the columns EXPORT_COLUMNS (the Approval fields, in order): an empty cell
is "none", and `reviews` holds the reviews as a JSON list of {by, at, decision, note} (empty: no reviews).
Times are ISO 8601 as stored (UTC). The JSON export is a list of records, one per line.

This module reads text into `Row`s and renders records; `policy.sources.approval_rows` checks each row.
No I/O: the command (icap_server.admin.approvals_io) reads and writes the files.
"""

from __future__ import annotations

import csv
import hashlib
import hmac
import io
import json
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, fields
from pathlib import PurePath
from typing import Any, Literal, TypeAlias

import yaml

from policy.approvals import Approval

SEAL = "seal"  # the last export column: proof that this store's own export wrote the record (`seal_of`)
EXPORT_COLUMNS: tuple[str, ...] = (*(item.name for item in fields(Approval)), SEAL)
GRANT_COLUMNS = (
    "subject_kind",
    "subject",
    "category",
    "host",
    "service",
    "approver",
    "justification",
    "ticket",
    "owner_department",
    "valid_from",
    "valid_until",
)
IMPORT_COLUMNS = frozenset(EXPORT_COLUMNS) | frozenset(GRANT_COLUMNS)
# Fields a new grant gets from the rules, never from the file.
RECORD_ONLY = tuple(name for name in EXPORT_COLUMNS if name not in GRANT_COLUMNS and name not in ("id", "department"))
ID_RE = re.compile(r"^A[1-9][0-9]{0,17}$")

ImportFormat = Literal["csv", "yaml", "json"]
SUFFIXES: dict[str, ImportFormat] = {".csv": "csv", ".yaml": "yaml", ".yml": "yaml", ".json": "json"}
Values: TypeAlias = dict[str, Any]


class ApprovalFileError(ValueError):
    """A file that cannot be read as approvals at all (`FILE:LINE: reason`): nothing in it is imported."""


class RowError(ValueError):
    """What is wrong with one row."""


@dataclass(frozen=True, slots=True)
class Row:
    """One row of an approval file: where it is (for messages), its order in the file, its column values."""

    where: str  # a line number, or `item N` (JSON)
    order: int
    values: Values


@dataclass(frozen=True, slots=True)
class RowProblem:
    """A row that cannot be imported, and why (reported as `FILE:WHERE: reason`)."""

    row: Row
    reason: str


# ---- reading rows ------------------------------------------------------------------------------


def import_format(name: str, given: str | None) -> ImportFormat:
    if given in ("csv", "yaml", "json"):
        return given  # type: ignore[return-value]
    found = SUFFIXES.get(PurePath(name).suffix.lower())
    if found is None:
        raise ApprovalFileError(f"{name}: cannot tell the format from the name; give --format csv, yaml or json")
    return found


def read_rows(name: str, text: str, form: ImportFormat) -> list[Row]:
    if form == "csv":
        return csv_rows(name, text)
    if form == "yaml":
        return yaml_rows(name, text)
    return json_rows(name, text)


def csv_rows(name: str, text: str) -> list[Row]:
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader)
    except StopIteration:
        return []
    except csv.Error as error:
        raise ApprovalFileError(f"{name}:1: {error}") from None
    columns = [column.strip().lower() for column in header]
    unknown = [column for column in columns if column not in IMPORT_COLUMNS]
    if unknown:
        raise ApprovalFileError(
            f"{name}:1: unknown column(s) {', '.join(map(repr, unknown))}; new grants have "
            f"{','.join(GRANT_COLUMNS)}; exported records have {','.join(EXPORT_COLUMNS)}"
        )
    repeated = sorted({column for column in columns if columns.count(column) > 1})
    if repeated:
        raise ApprovalFileError(f"{name}:1: column(s) {', '.join(repeated)} appear more than once")
    rows: list[Row] = []
    previous_end = reader.line_num
    while True:
        start = previous_end + 1
        try:
            cells = next(reader)
        except StopIteration:
            break
        except csv.Error as error:
            raise ApprovalFileError(f"{name}:{start}: {error}") from None
        previous_end = reader.line_num
        if not cells or all(not cell.strip() for cell in cells):
            continue
        if len(cells) != len(columns):
            values: Values = {"": f"{len(cells)} fields, the header has {len(columns)}"}
        else:
            values = dict(zip(columns, cells, strict=True))
        rows.append(Row(str(start), start, values))
    return rows


def yaml_rows(name: str, text: str) -> list[Row]:
    """A list of mappings; each row is reported by the line its item starts on."""
    loader_class: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    loader = loader_class(text)
    try:
        root = loader.get_single_node()
        if root is None:
            return []
        if isinstance(root, yaml.MappingNode):  # also accept `approvals: [...]`
            items = [
                value for key, value in root.value if isinstance(key, yaml.ScalarNode) and key.value == "approvals"
            ]
            if not items:
                raise ApprovalFileError(f"{name}:{root.start_mark.line + 1}: expected a list of approvals")
            root = items[0]
        if not isinstance(root, yaml.SequenceNode):
            raise ApprovalFileError(f"{name}:{root.start_mark.line + 1}: expected a list of approvals")
        rows: list[Row] = []
        for node in root.value:
            line = node.start_mark.line + 1
            if not isinstance(node, yaml.MappingNode):
                rows.append(Row(str(line), line, {"": "expected a mapping of column: value"}))
                continue
            try:
                values = loader.construct_object(node, deep=True)
            except (yaml.YAMLError, ValueError) as error:  # e.g. a date like 2030-13-01
                rows.append(Row(str(line), line, {"": f"not a valid value: {error}"}))
                continue
            bad_keys = [key for key in values if not isinstance(key, str)]
            if bad_keys:
                values = {"": f"keys must be column names, got {bad_keys[0]!r}"}
            rows.append(Row(str(line), line, {key.strip().lower(): value for key, value in values.items()}))
        return rows
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None) or getattr(error, "context_mark", None)
        line = f"{mark.line + 1}" if mark is not None else "1"
        problem = getattr(error, "problem", None) or str(error)
        context, context_mark = getattr(error, "context", None), getattr(error, "context_mark", None)
        if context and context_mark is not None:
            problem = f"{problem} ({context} on line {context_mark.line + 1})"
        raise ApprovalFileError(f"{name}:{line}: not valid YAML: {problem}") from None
    finally:
        loader.dispose()


def json_rows(name: str, text: str) -> list[Row]:
    try:
        data = json.loads(text) if text.strip() else []
    except json.JSONDecodeError as error:
        raise ApprovalFileError(f"{name}:{error.lineno}: not valid JSON: {error.msg}") from None
    if isinstance(data, dict) and isinstance(data.get("approvals"), list):
        data = data["approvals"]
    if not isinstance(data, list):
        raise ApprovalFileError(f"{name}: expected a list of approval records")
    rows: list[Row] = []
    for index, item in enumerate(data, 1):
        values = item if isinstance(item, dict) else {"": "expected an object of column: value"}
        rows.append(Row(f"item {index}", index, {str(key).strip().lower(): value for key, value in values.items()}))
    return rows


# ---- export --------------------------------------------------------------------------------------


def csv_cell(key: str, value: Any) -> str:
    if key == "reviews":
        return json.dumps(value, ensure_ascii=False, sort_keys=True) if value else ""
    return "" if value is None else str(value)


def seal_of(approval: Approval, key: bytes) -> str:
    """HMAC-SHA256 of the record exactly as stored, under the store's export key (128 bits, hex).

    An import restores a record as it is only when its seal verifies: it is then this store's own export,
    unchanged. Anything else with an id is checked like a grant (policy.lifecycle.check_imported_record).
    """
    return hmac.new(key, approval.to_json().encode("utf-8"), hashlib.sha256).hexdigest()[:32]


def is_sealed(values: Values, approval: Approval, key: bytes) -> bool:
    given = values.get(SEAL)
    return isinstance(given, str) and hmac.compare_digest(given.strip().encode(), seal_of(approval, key).encode())


def _sealed_record(approval: Approval, key: bytes) -> dict[str, Any]:
    record = approval.to_record()
    record[SEAL] = seal_of(approval, key)
    return record


def render_csv(approvals: Iterable[Approval], key: bytes) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(EXPORT_COLUMNS)
    for approval in approvals:
        record = _sealed_record(approval, key)
        writer.writerow([csv_cell(column, record[column]) for column in EXPORT_COLUMNS])
    return out.getvalue()


def render_json(approvals: Iterable[Approval], key: bytes) -> str:
    lines = [json.dumps(_sealed_record(approval, key), ensure_ascii=False, sort_keys=True) for approval in approvals]
    return "[\n" + ",\n".join(lines) + "\n]\n" if lines else "[]\n"


RENDERERS: Mapping[str, Callable[[Iterable[Approval], bytes], str]] = {"csv": render_csv, "json": render_json}
