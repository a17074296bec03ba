"""`clearance approvals import` and `clearance approvals export`: approvals in bulk, as CSV, YAML or JSON.

An import file holds two kinds of rows, told apart by the `id` column:

- a NEW grant (no id): subject_kind, subject, category or host, approver, justification, ticket,
  owner_department, valid_from, valid_until. Each one passes exactly the checks of `approvals grant`
  (policy.lifecycle.build_approval against the directory in Redis): the approver's authority, a genuine
  justification, the maximum validity, a restricted category. `valid_until` as a date is the last day
  (inclusive, to the end of that day in policy.timezone); `valid_from` as a date starts at the beginning of
  that day; an empty `valid_from` means now; times without an offset are in policy.timezone.
- an EXISTING record (with id): the full record as `approvals export` writes it, reviews included. It is
  restored as it is (checked for structure only), which is what makes export -> import -> export exact.

Every row is checked before anything is written; bad rows are reported as `FILE:LINE: reason` (all of them,
the first MAX_SHOWN shown) and nothing is written. Otherwise all rows are written in one transaction, with
one audit entry each (action `import`) and one change announcement.

The CSV of `approvals export` has the columns EXPORT_COLUMNS (the Approval fields, in order): an empty cell
is "none", and `reviews` holds the reviews as a JSON list of {by, at, decision, note} (empty: no reviews).
Times are ISO 8601 as stored (UTC). The JSON export is a list of records, one per line.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import re
import sys
import tempfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, fields, replace
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any, Literal, TypeAlias
from zoneinfo import ZoneInfo

import yaml

from icap_server.admin.support import StoreAction, UsageError
from icap_server.config import Config
from policy.approvals import Approval, ApprovalStatus, Review, SubjectKind
from policy.categories import validate_category
from policy.directory import Directory, Person
from policy.identity import normalise_username
from policy.lifecycle import GrantRequest, LifecycleError, Rules, build_approval
from policy.store import PolicyStore

EXPORT_COLUMNS: tuple[str, ...] = tuple(item.name for item in fields(Approval))
GRANT_COLUMNS = (
    "subject_kind",
    "subject",
    "category",
    "host",
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
MAX_SHOWN = 20

ImportFormat = Literal["csv", "yaml", "json"]
SUFFIXES: dict[str, ImportFormat] = {".csv": "csv", ".yaml": "yaml", ".yml": "yaml", ".json": "json"}
Values: TypeAlias = dict[str, Any]


class RowError(ValueError):
    """What is wrong with one row."""


@dataclass(frozen=True, slots=True)
class Row:
    where: str  # a line number, or `item N` (JSON)
    order: int
    values: Values


@dataclass(frozen=True, slots=True)
class Problem:
    row: Row
    reason: str


# ---- parsers ---------------------------------------------------------------------------------


def add_io_parsers(approvals: Any) -> None:
    """`approvals import` and `approvals export`, added to the `approvals` subparsers."""
    importing = approvals.add_parser(
        "import",
        help="import approvals from CSV, YAML or JSON: new grants (checked like `grant`) and exported records",
    )
    importing.add_argument("file", metavar="FILE", help="the file (- for standard input, with --format)")
    importing.add_argument(
        "--format", choices=("csv", "yaml", "json"), help="default: from the suffix (.csv, .yaml/.yml, .json)"
    )
    importing.add_argument("--dry-run", action="store_true", help="check every row, write nothing")
    exporting = approvals.add_parser("export", help="every approval in full (CSV or JSON), for backup or review")
    exporting.add_argument("--format", choices=("csv", "json"), help="default: csv (json for an --output *.json)")
    exporting.add_argument("--output", "-o", metavar="FILE", type=Path, help="write here (default: standard output)")


# ---- reading files -----------------------------------------------------------------------------


def import_format(name: str, given: str | None) -> ImportFormat:
    if given in ("csv", "yaml", "json"):
        return given  # type: ignore[return-value]
    found = SUFFIXES.get(Path(name).suffix.lower())
    if found is None:
        raise UsageError(f"{name}: cannot tell the format from the name; give --format csv, yaml or json")
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
        raise UsageError(f"{name}:1: {error}") from None
    columns = [column.strip().lower() for column in header]
    unknown = [column for column in columns if column not in IMPORT_COLUMNS]
    if unknown:
        raise UsageError(
            f"{name}:1: unknown column(s) {', '.join(map(repr, unknown))}; new grants have "
            f"{','.join(GRANT_COLUMNS)}; exported records have {','.join(EXPORT_COLUMNS)}"
        )
    repeated = sorted({column for column in columns if columns.count(column) > 1})
    if repeated:
        raise UsageError(f"{name}:1: column(s) {', '.join(repeated)} appear more than once")
    rows: list[Row] = []
    previous_end = reader.line_num
    while True:
        start = previous_end + 1
        try:
            cells = next(reader)
        except StopIteration:
            break
        except csv.Error as error:
            raise UsageError(f"{name}:{start}: {error}") from None
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
                raise UsageError(f"{name}:{root.start_mark.line + 1}: expected a list of approvals")
            root = items[0]
        if not isinstance(root, yaml.SequenceNode):
            raise UsageError(f"{name}:{root.start_mark.line + 1}: expected a list of approvals")
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
        raise UsageError(f"{name}:{line}: not valid YAML: {problem}") from None
    finally:
        loader.dispose()


def json_rows(name: str, text: str) -> list[Row]:
    try:
        data = json.loads(text) if text.strip() else []
    except json.JSONDecodeError as error:
        raise UsageError(f"{name}:{error.lineno}: not valid JSON: {error.msg}") from None
    if isinstance(data, dict) and isinstance(data.get("approvals"), list):
        data = data["approvals"]
    if not isinstance(data, list):
        raise UsageError(f"{name}: expected a list of approval records")
    rows: list[Row] = []
    for index, item in enumerate(data, 1):
        values = item if isinstance(item, dict) else {"": "expected an object of column: value"}
        rows.append(Row(f"item {index}", index, {str(key).strip().lower(): value for key, value in values.items()}))
    return rows


# ---- checking one row ---------------------------------------------------------------------------


def _present(value: Any) -> bool:
    return value is not None and value != "" and value != []


def _text(values: Values, key: str, required: bool = False, strip: bool = True) -> str | None:
    value = values.get(key)
    if isinstance(value, bool) or not (value is None or isinstance(value, str | int | float)):
        raise RowError(f"{key}: expected text, got {type(value).__name__}")
    text = value if isinstance(value, str) else "" if value is None else str(value)
    if strip:
        text = text.strip()
    if not text.strip():
        if required:
            raise RowError(f"{key} is required")
        return None
    return text


def _kind(values: Values) -> SubjectKind:
    text = _text(values, "subject_kind", required=True) or ""
    try:
        return SubjectKind(text.lower())
    except ValueError:
        known = ", ".join(kind.value for kind in SubjectKind)
        raise RowError(f"subject_kind: {text!r} is not one of {known}") from None


def _parse_moment(value: Any, key: str) -> datetime | date:
    if isinstance(value, datetime | date):
        return value
    if not isinstance(value, str):
        raise RowError(f"{key}: expected a date or time, got {type(value).__name__}")
    text = value.strip()
    if len(text) == 10:
        try:
            return date.fromisoformat(text)
        except ValueError:
            pass
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        raise RowError(f"{key}: {value!r} is not a date (YYYY-MM-DD) or ISO 8601 date and time") from None


def _stored_moment(values: Values, key: str, required: bool) -> datetime | None:
    """A time in an exported record: ISO 8601, UTC unless it says otherwise (as Approval.from_record reads it)."""
    value = values.get(key)
    if not _present(value):
        if required:
            raise RowError(f"{key} is required in an existing record")
        return None
    moment = _parse_moment(value, key)
    if not isinstance(moment, datetime):
        moment = datetime.combine(moment, time.min)
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _grant_moment(value: Any, key: str, zone: ZoneInfo, end_of_day: bool) -> datetime:
    moment = _parse_moment(value, key)
    if not isinstance(moment, datetime):
        day = moment + timedelta(days=1) if end_of_day else moment
        return datetime.combine(day, time.min, tzinfo=zone).astimezone(UTC)
    return (moment if moment.tzinfo is not None else moment.replace(tzinfo=zone)).astimezone(UTC)


def _reviews(value: Any) -> tuple[Review, ...]:
    if not _present(value):
        return ()
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as error:
            raise RowError(f"reviews: not a JSON list: {error.msg}") from None
    if not isinstance(value, list):
        raise RowError("reviews: expected a list of {by, at, decision, note}")
    reviews: list[Review] = []
    for number, item in enumerate(value, 1):
        if not isinstance(item, dict):
            raise RowError(f"reviews[{number}]: expected {{by, at, decision, note}}")
        unknown = sorted(set(map(str, item)) - {"by", "at", "decision", "note"})
        if unknown:
            raise RowError(f"reviews[{number}]: unknown key(s) {', '.join(unknown)}")
        try:
            by = _text(item, "by", required=True, strip=False) or ""
            at = _stored_moment(item, "at", required=True)
            decision = _text(item, "decision", required=True) or ""
            note = _text(item, "note", strip=False) or ""
        except RowError as error:
            raise RowError(f"reviews[{number}]: {error}") from None
        if decision not in ("keep", "revoke"):
            raise RowError(f"reviews[{number}]: decision must be keep or revoke, got {decision!r}")
        assert at is not None
        reviews.append(Review(by=by, at=at, decision="keep" if decision == "keep" else "revoke", note=note))
    return tuple(reviews)


def check_record(values: Values) -> Approval:
    """An exported record, restored as it is: checked for structure and types only."""
    approval_id = _text(values, "id", required=True) or ""
    if not ID_RE.match(approval_id):
        raise RowError(f"id: {approval_id!r} is not an approval id (A followed by a number)")
    kind = _kind(values)
    category = _text(values, "category")
    host = _text(values, "host")
    if (category is None) == (host is None):
        raise RowError("give exactly one scope: category or host")
    if category is not None:
        try:
            validate_category(category)
        except ValueError as error:
            raise RowError(f"category: {error}") from None
    status_text = _text(values, "status") or "active"
    try:
        status = ApprovalStatus(status_text)
    except ValueError:
        known = ", ".join(item.value for item in ApprovalStatus)
        raise RowError(f"status: {status_text!r} is not one of {known}") from None
    moments = {
        key: _stored_moment(values, key, required)
        for key, required in (
            ("created_at", True),
            ("valid_from", True),
            ("valid_until", True),
            ("review_due", True),
            ("revoked_at", False),
            ("suspended_at", False),
        )
    }
    created_at, valid_from, valid_until, review_due = (
        moments["created_at"],
        moments["valid_from"],
        moments["valid_until"],
        moments["review_due"],
    )
    assert created_at and valid_from and valid_until and review_due
    return Approval(
        id=approval_id,
        subject_kind=kind,
        subject=_text(values, "subject", required=True, strip=False) or "",
        category=category,
        host=host,
        department=_text(values, "department", strip=False) or "",
        approver=_text(values, "approver", required=True, strip=False) or "",
        justification=_text(values, "justification", strip=False) or "",
        created_by=_text(values, "created_by", required=True, strip=False) or "",
        created_at=created_at,
        valid_from=valid_from,
        valid_until=valid_until,
        review_due=review_due,
        ticket=_text(values, "ticket", strip=False),
        status=status,
        revoked_by=_text(values, "revoked_by", strip=False),
        revoked_at=moments["revoked_at"],
        revoke_reason=_text(values, "revoke_reason", strip=False),
        suspended_by=_text(values, "suspended_by", strip=False),
        suspended_at=moments["suspended_at"],
        suspend_reason=_text(values, "suspend_reason", strip=False),
        reviews=_reviews(values.get("reviews")),
    )


@dataclass(frozen=True, slots=True)
class GrantContext:
    config: Config
    zone: ZoneInfo
    actor: str
    now: datetime


def check_grant(values: Values, context: GrantContext) -> GrantRequest:
    """A new grant's request, as `approvals grant` would make it; the rules are applied later (build_approval)."""
    extra = [key for key in RECORD_ONLY if _present(values.get(key))]
    if extra:
        raise RowError(
            f"no id, so this is a new grant, which takes {', '.join(extra)} from the rules: "
            "leave them empty, or give the id of an existing record"
        )
    identity = context.config.identity
    kind = _kind(values)
    subject = _text(values, "subject", required=True) or ""
    if kind is SubjectKind.USER:
        subject = normalise_username(subject, identity)
    category = _text(values, "category")
    if category is not None:
        try:
            category = validate_category(category)
        except ValueError as error:
            raise RowError(f"category: {error}") from None
    owner = _text(values, "owner_department")
    department = _text(values, "department")
    if owner and department and owner != department:
        raise RowError(f"owner_department {owner!r} and department {department!r} disagree")
    approver = _text(values, "approver") or ""
    valid_from = context.now
    if _present(values.get("valid_from")):
        valid_from = _grant_moment(values["valid_from"], "valid_from", context.zone, end_of_day=False)
    if not _present(values.get("valid_until")):
        raise RowError("valid_until is required: the last day of validity (YYYY-MM-DD)")
    valid_until = _grant_moment(values["valid_until"], "valid_until", context.zone, end_of_day=True)
    return GrantRequest(
        subject_kind=kind,
        subject=subject,
        category=category,
        host=_text(values, "host"),
        approver=normalise_username(approver, identity) if approver else "",
        justification=_text(values, "justification", strip=False) or "",
        created_by=context.actor,
        valid_from=valid_from,
        valid_until=valid_until,
        department=owner or department,
        ticket=_text(values, "ticket"),
    )


class IndexedDirectory(Directory):
    """`approvers_of` from an index built once: an import may name thousands of approvers without authority."""

    def __init__(self, people: dict[str, Person]) -> None:
        super().__init__(people)
        heads: dict[str, set[str]] = {}
        delegates: dict[str, set[str]] = {}
        for person in people.values():
            for department in person.heads:
                heads.setdefault(department, set()).add(person.user)
            for department in person.delegates:
                delegates.setdefault(department, set()).add(person.user)
        self._approvers = {
            department: (frozenset(heads.get(department, ())), frozenset(delegates.get(department, ())))
            for department in heads.keys() | delegates.keys()
        }

    def approvers_of(self, department: str) -> tuple[frozenset[str], frozenset[str]]:
        return self._approvers.get(department, (frozenset(), frozenset()))


# ---- import -------------------------------------------------------------------------------------


def _read_text(name: str) -> str:
    if name == "-":
        return sys.stdin.read()
    try:
        with open(name, encoding="utf-8-sig", newline="") as handle:
            return handle.read()
    except OSError as error:
        raise UsageError(f"{name}: {error.strerror or error}") from None
    except UnicodeDecodeError:
        raise UsageError(f"{name}: not UTF-8 text") from None


def report_problems(name: str, problems: list[Problem], total: int) -> None:
    problems = sorted(problems, key=lambda problem: problem.row.order)
    for problem in problems[:MAX_SHOWN]:
        print(f"{name}:{problem.row.where}: {problem.reason}", file=sys.stderr)
    if len(problems) > MAX_SHOWN:
        print(f"… and {len(problems) - MAX_SHOWN} more bad rows", file=sys.stderr)
    bad = f"{len(problems)} bad row{'s' if len(problems) != 1 else ''} of {total}"
    raise UsageError(f"{name}: {bad}; nothing was imported")


def approvals_import(args: argparse.Namespace, config: Config) -> StoreAction:
    from icap_server.admin.approvals import rules_from

    name = str(args.file)
    if name == "-" and not args.format:
        raise UsageError("reading standard input needs --format csv, yaml or json")
    form = import_format(name, args.format)
    rows = read_rows(name, _read_text(name), form)
    context = GrantContext(config, ZoneInfo(config.policy.timezone), args.actor, datetime.now(UTC))
    rules = rules_from(config)

    # Structure first, before any connection: records become Approvals, new grants GrantRequests.
    problems: list[Problem] = []
    records: list[tuple[Row, Approval]] = []
    requests: list[tuple[Row, GrantRequest]] = []
    first_seen: dict[str, str] = {}
    for row in rows:
        try:
            if "" in row.values:
                raise RowError(str(row.values[""]))
            if _present(row.values.get("id")):
                approval = check_record(row.values)
                if approval.id in first_seen:
                    raise RowError(f"id {approval.id} already appears at {first_seen[approval.id]}")
                first_seen[approval.id] = row.where
                records.append((row, approval))
            else:
                requests.append((row, check_grant(row.values, context)))
        except RowError as error:
            problems.append(Problem(row, str(error)))

    async def action(store: PolicyStore) -> int:
        directory = IndexedDirectory((await store.load_directory()).people)
        grants, rule_problems = build_grants(requests, context.now, directory, rules)
        if problems or rule_problems:
            report_problems(name, problems + rule_problems, len(rows))
        if not rows:
            print(f"{name}: no approvals to import")
            return 0
        stored = {approval.id: approval for approval in await store.all_approvals()} if records else {}
        changes: list[tuple[Approval, Approval | None]] = []
        updated = restored = unchanged = 0
        revivals = [
            Problem(
                row,
                f"would bring back {approval.id}, revoked by {stored[approval.id].revoked_by}: "
                "a revocation is final, grant a new approval instead",
            )
            for row, approval in records
            if approval.id in stored and stored[approval.id].revoked_at is not None and approval.revoked_at is None
        ]
        if revivals:
            report_problems(name, revivals, len(rows))
        for _, approval in records:
            before = stored.get(approval.id)
            if before is None:
                restored += 1
            elif before.to_json() == approval.to_json():
                unchanged += 1
                continue
            else:
                updated += 1
            changes.append((approval, before))
        rest = f"{updated} updated, {restored} restored, {unchanged} unchanged"
        if args.dry_run:
            print(f"{name}: all {len(rows)} rows are valid; would import {len(grants)} new, {rest} (dry run)")
            return 0
        new_ids = ""
        if grants:
            floor = max((int(approval.id[1:]) for _, approval in records), default=0)
            last = await store.reserve_approval_ids(floor, len(grants))
            first = last - len(grants) + 1
            grants = [replace(approval, id=f"A{first + index}") for index, approval in enumerate(grants)]
            new_ids = f" (A{first}-A{last})" if len(grants) > 1 else f" ({grants[0].id})"
            changes = [(approval, None) for approval in grants] + changes
        await store.save_approvals(changes, args.actor, "import")
        print(f"{name}: imported {len(grants)} new{new_ids}, {rest}")
        return 0

    return action


def build_grants(
    requests: Iterable[tuple[Row, GrantRequest]], now: datetime, directory: Directory, rules: Rules
) -> tuple[list[Approval], list[Problem]]:
    """Every new grant through build_approval (ids come later, once every row has passed)."""
    grants: list[Approval] = []
    problems: list[Problem] = []
    for row, request in requests:
        try:
            grants.append(build_approval(request, "A0", now, directory, rules))
        except LifecycleError as error:
            problems.append(Problem(row, str(error)))
    return grants, problems


# ---- export -------------------------------------------------------------------------------------


def csv_cell(key: str, value: Any) -> str:
    if key == "reviews":
        return json.dumps(value, ensure_ascii=False, sort_keys=True) if value else ""
    return "" if value is None else str(value)


def render_csv(approvals: Iterable[Approval]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(EXPORT_COLUMNS)
    for approval in approvals:
        record = approval.to_record()
        writer.writerow([csv_cell(key, record[key]) for key in EXPORT_COLUMNS])
    return out.getvalue()


def render_json(approvals: Iterable[Approval]) -> str:
    lines = [approval.to_json() for approval in approvals]
    return "[\n" + ",\n".join(lines) + "\n]\n" if lines else "[]\n"


RENDERERS: Mapping[str, Callable[[Iterable[Approval]], str]] = {"csv": render_csv, "json": render_json}


def _write_atomically(path: Path, data: bytes) -> None:
    directory = path.parent if str(path.parent) else Path(".")
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=directory)
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(data)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def approvals_export(args: argparse.Namespace, config: Config) -> StoreAction:
    output: Path | None = args.output
    form = args.format or ("json" if output is not None and output.suffix.lower() == ".json" else "csv")
    if output is not None and not (output.parent if str(output.parent) else Path(".")).is_dir():
        raise UsageError(f"--output: no such directory: {output.parent}")
    render = RENDERERS[form]

    async def action(store: PolicyStore) -> int:
        approvals = await store.all_approvals()
        data = render(approvals).encode("utf-8")
        if output is None:
            sys.stdout.flush()
            sys.stdout.buffer.write(data)
            sys.stdout.buffer.flush()
            return 0
        try:
            _write_atomically(output, data)
        except OSError as error:
            raise UsageError(f"{output}: {error.strerror or error}") from None
        print(f"{len(approvals)} approvals exported to {output} ({form})")
        return 0

    return action


HANDLERS: dict[tuple[str, str | None], Callable[[argparse.Namespace, Config], StoreAction]] = {
    ("approvals", "import"): approvals_import,
    ("approvals", "export"): approvals_export,
}
