"""`clearance approvals import` and `clearance approvals export`: approvals in bulk, as CSV, YAML or JSON.

The file format and the checks of each row are in `policy.sources.approval_files` and `approval_rows`; this
module reads and writes the files and the store. Every row is checked before anything is written (records
for structure before any connection; then new grants, and records that are not this store's own sealed
export, against the directory and the grant rules; see `export_key`), bad rows are reported as
`FILE:LINE: reason` (the first MAX_SHOWN of them) and nothing is written; otherwise all rows are written in
one transaction, with one audit entry each (`restore` for a sealed record, else `import`) and one change
announcement.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import os
import sys
import tempfile
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from icap_server.admin.support import Commands, StoreAction, UsageError, reading, store_approval_rules
from icap_server.config import Config
from policy.approvals import Approval
from policy.directory import IndexedDirectory
from policy.sources.approval_files import RENDERERS, ApprovalFileError, RowProblem, import_format, read_rows
from policy.sources.approval_rows import CheckedRows, GrantContext, build_grants, check_records, check_rows
from policy.store import PolicyStore

MAX_SHOWN = 20


def register(approvals: Commands) -> None:
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
    importing.set_defaults(handler=approvals_import)
    exporting = approvals.add_parser("export", help="every approval in full (CSV or JSON), for backup or review")
    exporting.add_argument("--format", choices=("csv", "json"), help="default: csv (json for an --output *.json)")
    exporting.add_argument("--output", "-o", metavar="FILE", type=Path, help="write here (default: standard output)")
    exporting.set_defaults(handler=approvals_export)


# ---- import -------------------------------------------------------------------------------------


async def export_key(config: Config, store: PolicyStore) -> bytes:
    """The key exports are sealed with: derived from the portal's token secret, kept apart by its purpose.

    That secret is `portal.secret` when configured (so a backup restores exactly into a rebuilt store
    too), else the one kept in the store (`portal:secret`): an export then restores exactly only into the
    store that wrote it, and into an emptied one its records are checked like grants.
    """
    from icap_server.portal.links import portal_secret  # the portal (and its web stack) only to seal or check an export

    secret = await portal_secret(config, store)
    return hmac.new(secret.encode("utf-8"), b"clearance approvals export v1", hashlib.sha256).digest()


def _read_text(name: str) -> str:
    if name == "-":
        return sys.stdin.read()
    with reading(name), open(name, encoding="utf-8-sig", newline="") as handle:
        return handle.read()


def report_problems(name: str, problems: list[RowProblem], total: int) -> None:
    """Print the bad rows (the first MAX_SHOWN, in file order) and stop: nothing is imported."""
    problems = sorted(problems, key=lambda problem: problem.row.order)
    for problem in problems[:MAX_SHOWN]:
        print(f"{name}:{problem.row.where}: {problem.reason}", file=sys.stderr)
    if len(problems) > MAX_SHOWN:
        print(f"… and {len(problems) - MAX_SHOWN} more bad rows", file=sys.stderr)
    bad = f"{len(problems)} bad row{'s' if len(problems) != 1 else ''} of {total}"
    raise UsageError(f"{name}: {bad}; nothing was imported")


def approvals_import(args: argparse.Namespace, config: Config) -> StoreAction:
    name = str(args.file)
    if name == "-" and not args.format:
        raise UsageError("reading standard input needs --format csv, yaml or json")
    try:
        form = import_format(name, args.format)
        rows = read_rows(name, _read_text(name), form)
    except ApprovalFileError as error:
        raise UsageError(str(error)) from None
    context = GrantContext(config.identity, ZoneInfo(config.policy.timezone), args.actor, datetime.now(UTC))
    checked = check_rows(rows, context)  # structure first, before any connection
    async def action(store: PolicyStore) -> int:
        rules = await store_approval_rules(config, store)
        directory = IndexedDirectory((await store.load_directory()).people)
        grants, rule_problems = build_grants(checked.grants, context.now, directory, rules)
        key = await export_key(config, store) if checked.records else b""
        sealed, record_problems = check_records(checked.records, key, context.now, directory, rules)
        if checked.problems or rule_problems or record_problems:
            report_problems(name, checked.problems + rule_problems + record_problems, len(rows))
        if not rows:
            print(f"{name}: no approvals to import")
            return 0
        stored = {approval.id: approval for approval in await store.all_approvals()} if checked.records else {}
        revivals = _revivals(checked, stored)
        if revivals:
            report_problems(name, revivals, len(rows))
        plan = _plan(checked, stored)
        if args.dry_run:
            print(f"{name}: all {len(rows)} rows are valid; would import {len(grants)} new, {plan.counts} (dry run)")
            return 0
        grants, new_ids = await _number(store, grants, checked)
        changes = [(approval, None) for approval in grants] + plan.changes
        await store.save_approvals(changes, args.actor, "import", dict.fromkeys(sealed, "restore"))
        print(f"{name}: imported {len(grants)} new{new_ids}, {plan.counts}")
        return 0

    return action


def _revivals(checked: CheckedRows, stored: dict[str, Approval]) -> list[RowProblem]:
    """Records that would un-revoke a stored approval: a revocation is final."""
    return [
        RowProblem(
            row,
            f"would bring back {approval.id}, revoked by {stored[approval.id].revoked_by}: "
            "a revocation is final, grant a new approval instead",
        )
        for row, approval in checked.records
        if approval.id in stored and stored[approval.id].revoked_at is not None and approval.revoked_at is None
    ]


@dataclass(slots=True)
class _Plan:
    """What restoring the records changes: (record, what it replaces) pairs, and the counts for the summary."""

    changes: list[tuple[Approval, Approval | None]] = field(default_factory=list)
    updated: int = 0
    restored: int = 0
    unchanged: int = 0

    @property
    def counts(self) -> str:
        return f"{self.updated} updated, {self.restored} restored, {self.unchanged} unchanged"


def _plan(checked: CheckedRows, stored: dict[str, Approval]) -> _Plan:
    plan = _Plan()
    for _, approval in checked.records:
        before = stored.get(approval.id)
        if before is None:
            plan.restored += 1
        elif before.to_json() == approval.to_json():
            plan.unchanged += 1
            continue
        else:
            plan.updated += 1
        plan.changes.append((approval, before))
    return plan


async def _number(store: PolicyStore, grants: list[Approval], checked: CheckedRows) -> tuple[list[Approval], str]:
    """Ids for the new grants, reserved in one step above every id the file restores; and how to say them."""
    if not grants:
        return grants, ""
    floor = max((int(approval.id[1:]) for _, approval in checked.records), default=0)
    last = await store.reserve_approval_ids(floor, len(grants))
    first = last - len(grants) + 1
    numbered = [replace(approval, id=f"A{first + index}") for index, approval in enumerate(grants)]
    return numbered, f" (A{first}-A{last})" if len(numbered) > 1 else f" ({numbered[0].id})"


# ---- export -------------------------------------------------------------------------------------


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
        data = render(approvals, await export_key(config, store)).encode("utf-8")
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
