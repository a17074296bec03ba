"""`clearance categories import`: bulk lists (UT1 / squidGuard trees, host,category CSV, plain lists) into Redis.

The handler reads and checks the whole source before any connection is made (`policy.sources.lists.scan`); the
action then reads it again in batches straight into `PolicyStore.import_categories`, which stages every
category's new generation beside the live one and switches all of them in one step. On a terminal, rich
progress bars show counts and rates on stderr; otherwise only the summary is printed.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from pathlib import Path
from tempfile import TemporaryDirectory
from types import TracebackType

from rich.console import Console
from rich.progress import BarColumn, Progress, ProgressColumn, Task, TaskID, TextColumn, TimeElapsedColumn
from rich.text import Text

from icap_server.admin.support import StoreAction, UsageError, print_table
from icap_server.config import Config
from icap_server.service.sync import protected
from policy.categories import validate_category
from policy.sources.archives import Archive, ArchiveLimits, is_archive, unpack_archive
from policy.sources.formats import FORMATS, Source, open_source
from policy.sources.lines import SKIP_LABELS, SourceError
from policy.sources.lists import CategoryMap, ScanReport, scan
from policy.store import IMPORT_BATCH, ImportResult, PolicyStore
from policy.store.categories import CURATED, SourceInfo, check_source


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The arguments of `categories import` (admin/categories.py adds the parser; the options live here)."""
    parser.add_argument("path", metavar="PATH", help="a UT1 / squidGuard directory, a host,category CSV or a list")
    parser.add_argument("--format", choices=FORMATS, default="auto", help="default: detect from PATH")
    parser.add_argument("--category", help="the category of a plain host list")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument(
        "--replace",
        action="store_true",
        help="the source's lists hold exactly what PATH holds: a re-import drops its stale entries (the default)",
    )
    mode.add_argument(
        "--merge", action="store_true", help="add to the source's lists, keeping the entries PATH no longer holds"
    )
    parser.add_argument(
        "--map",
        action="append",
        default=[],
        metavar="SRC=DST",
        help="import source category SRC as DST (adds to or overrides import.category_map)",
    )
    parser.add_argument(
        "--source",
        metavar="NAME",
        help="the source the entries are kept under (default: ut1 for a UT1 tree or archive, else the file's stem)",
    )
    parser.add_argument("--dry-run", action="store_true", help="read and check everything, write nothing")


def source_name(given: str | None, path: Path, format: str) -> str:
    """The source an import writes: --source, else `ut1` for a UT1 tree or archive, else the file's stem."""
    if given is None:
        given = "ut1" if format == "ut1" else re.sub(r"[^a-z0-9_-]+", "-", path.name.lower().split(".")[0])[:63]
        given = given.strip("-_") or "import"
    if given == CURATED:
        raise UsageError(f"--source {CURATED}: the shipped lists; an upgrade replaces them, an import cannot")
    try:
        return check_source(given)
    except ValueError as error:
        raise UsageError(f"--source: {error}") from None


def archive_limits(config: Config) -> ArchiveLimits:
    settings = config.import_
    return ArchiveLimits(settings.max_archive_bytes, settings.max_unpacked_bytes, settings.max_members)


def open_archive(path: Path, config: Config, sha256: str = "") -> tuple[Source, Archive, TemporaryDirectory[str]]:
    """A UT1 archive checked and unpacked into a private folder (deleted with the returned handle)."""
    workdir = TemporaryDirectory(prefix="clearance-ut1-")
    try:
        archive = unpack_archive(path, Path(workdir.name), archive_limits(config), sha256)
        return open_source(archive.root, "ut1"), archive, workdir
    except BaseException:
        workdir.cleanup()
        raise


def parse_maps(values: Sequence[str]) -> dict[str, str]:
    overrides: dict[str, str] = {}
    for value in values:
        source, sep, target = value.partition("=")
        source, target = source.strip().lower(), target.strip()
        if not sep or not source or not target:
            raise UsageError(f"--map: expected SRC=DST, got {value!r}")
        try:
            overrides[source] = validate_category(target)
        except ValueError as error:
            raise UsageError(f"--map {value}: {error}") from None
    return overrides


def categories_import(args: argparse.Namespace, config: Config) -> StoreAction:
    path = Path(args.path)
    try:
        cmap = CategoryMap(config.import_.category_map, config.import_.only_mapped).with_overrides(parse_maps(args.map))
        source, info, workdir = _open(args, path, config)
    except (SourceError, ValueError) as error:
        raise UsageError(str(error)) from None
    name = source_name(args.source, path, source.format)
    show = sys.stderr.isatty()
    started = time.perf_counter()
    try:
        with ProgressDisplay(show) as display:
            reading = display.task(f"Reading {path.name or path}", None, "lines")
            report = scan(source, cmap, reading, protected=frozenset(protected(config)))
    except SourceError as error:
        raise UsageError(str(error)) from None
    parsed = time.perf_counter() - started
    if not report.targets:
        raise UsageError(f"{path}: nothing to import: {_nothing_hint(report)}")
    if args.dry_run:

        async def dry_run(store: PolicyStore) -> int:
            print_dry_run(report, parsed)
            return 0

        return dry_run

    async def action(store: PolicyStore) -> int:
        written = time.perf_counter()
        try:
            with ProgressDisplay(show) as display:
                advance = display.task("Importing", report.tally.total_hosts, "hosts")
                batches = {
                    target: _announce(display, target, report.batches(target, IMPORT_BATCH))
                    for target in report.targets
                }
                result = await store.import_categories(
                    batches, replace=not args.merge, progress=advance, actor=args.actor, source=name, info=info
                )
        except SourceError as error:
            raise UsageError(str(error)) from None
        finally:
            if workdir is not None:
                workdir.cleanup()
        elapsed = time.perf_counter() - started
        timing = (parsed, time.perf_counter() - written, elapsed)
        print_result(report, result, not args.merge, timing)
        return 0

    return action


def _open(
    args: argparse.Namespace, path: Path, config: Config
) -> tuple[Source, SourceInfo, TemporaryDirectory[str] | None]:
    """What PATH holds; a UT1 archive is checked and unpacked first (into a folder the import deletes)."""
    if args.format in ("auto", "ut1") and path.is_file() and is_archive(path):
        if args.category is not None:
            raise SourceError(f"--category applies to plain host lists only; {path} is a UT1 archive")
        source, archive, workdir = open_archive(path, config)
        return source, SourceInfo(date=iso(archive.date), origin=str(path.resolve())), workdir
    return open_source(path, args.format, args.category), SourceInfo(origin=str(path.resolve())), None


def iso(moment: datetime | None) -> str:
    return moment.isoformat() if moment is not None else ""


def _announce(display: ProgressDisplay, target: str, batches: Iterator[list[str]]) -> Iterator[list[str]]:
    display.describe(f"Importing {target}")
    yield from batches


def _nothing_hint(report: ScanReport) -> str:
    if report.tally.not_imported:
        names = ", ".join(sorted(report.tally.not_imported))
        return (
            f"no source category is mapped to a Clearance category (found: {names}); "
            "use --map SRC=DST, import.category_map, or import.only_mapped: false"
        )
    return "no entries found"


# ---- output ----------------------------------------------------------------------------------------


def plural(count: int, one: str, many: str) -> str:
    return f"{count:,} {one if count == 1 else many}"


def rate(count: int, seconds: float) -> str:
    return f"{count / seconds:,.0f}" if seconds > 0 else "-"


SOURCE_NAMES = {"ut1": "UT1", "csv": "CSV", "list": "list"}


def print_left_out(report: ScanReport) -> None:
    tally = report.tally
    name = SOURCE_NAMES.get(report.source.format, report.source.format)
    for conflict in tally.conflicts:
        print(conflict.describe(name))
    more = tally.protected - len(tally.conflicts)
    if more:
        print(f"… and {plural(more, 'more protected entry', 'more protected entries')}")
    if tally.protected:
        print(f"left out (protected hosts): {plural(tally.protected, 'entry', 'entries')}")
    if tally.not_imported:
        listed = ", ".join(f"{name} ({count:,})" for name, count in sorted(tally.not_imported.items()))
        print(f"not imported (no mapping): {listed}")
    if tally.skipped:
        reasons = ", ".join(
            f"{count:,} {SKIP_LABELS.get(reason, reason)}"
            for reason, count in sorted(tally.skipped.items(), key=lambda item: (-item[1], item[0]))
        )
        print(f"skipped lines: {reasons}")
        for problem in tally.examples:
            print(f"  {problem}")


def print_dry_run(report: ScanReport, parsed: float) -> None:
    tally = report.tally
    rows = [("CATEGORY", "READ", "FROM")]
    for target in report.targets:
        rows.append((target, f"{tally.hosts[target]:,}", _from(report, target)))
    print_table(rows)
    print_left_out(report)
    print(
        f"dry run: nothing written; {plural(tally.total_hosts, 'entry', 'entries')} for "
        f"{plural(len(report.targets), 'category', 'categories')} "
        f"read from {_describe(report.source)} in {parsed:.2f} s ({rate(tally.lines, parsed)} lines/s)"
    )


def print_result(
    report: ScanReport,
    result: ImportResult,
    replace: bool,
    timing: tuple[float, float, float],  # check, write, all
) -> None:
    """Per category: the source's entries now and before, what was read, where from; then what was left out."""
    tally = report.tally
    rows = [("CATEGORY", "ENTRIES", "BEFORE", "READ", "FROM")]
    for target in report.targets:
        rows.append(
            (
                target,
                f"{result.entries.get(target, 0):,}",
                f"{result.before.get(target, 0):,}",
                f"{tally.hosts[target]:,}",
                _from(report, target),
            )
        )
    print_table(rows)
    print_left_out(report)
    parsed, written, elapsed = timing
    mode = "replaced" if replace else "merged"
    entries_read = plural(tally.total_hosts, "entry", "entries")
    print(
        f"imported {entries_read} into {plural(len(report.targets), 'category', 'categories')} ({mode}) "
        f"as source {result.source}: {sum(result.added.values()):,} added, {sum(result.removed.values()):,} removed, "
        f"in {elapsed:.2f} s, {rate(tally.total_hosts, elapsed)} hosts/s "
        f"(check {parsed:.2f} s, write {written:.2f} s); policy version {result.version}"
    )


def _from(report: ScanReport, target: str) -> str:
    """The source categories feeding a target, with their aliases: `webmail (alias courrier)`."""
    names = []
    for name in report.tally.sources[target]:
        aliases = report.source.aliases.get(name, ())
        names.append(f"{name} (alias {', '.join(aliases)})" if aliases else name)
    return ", ".join(names)


def _describe(source: Source) -> str:
    return f"{source.path} ({source.format}, {plural(len(source.files), 'file', 'files')})"


# ---- progress ---------------------------------------------------------------------------------------


class CountColumn(ProgressColumn):
    def render(self, task: Task) -> Text:
        unit = task.fields.get("unit", "")
        if task.total is None:
            return Text(f"{int(task.completed):,} {unit}")
        return Text(f"{int(task.completed):,}/{int(task.total):,} {unit}")


class RateColumn(ProgressColumn):
    """The average rate so far (rich's own estimate is over-excited by batches queued ahead of the writes)."""

    def render(self, task: Task) -> Text:
        elapsed = task.finished_time or task.elapsed
        unit = task.fields.get("unit", "")
        return Text(f"{task.completed / elapsed:,.0f} {unit}/s" if elapsed and task.completed else "")


class ProgressDisplay:
    """rich progress bars on stderr when it is a terminal; a no-op otherwise."""

    def __init__(self, enabled: bool) -> None:
        self.progress: Progress | None = None
        self.current: TaskID | None = None
        if enabled:
            self.progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                CountColumn(),
                RateColumn(),
                TimeElapsedColumn(),
                console=Console(file=sys.stderr),
                transient=True,
            )

    def __enter__(self) -> ProgressDisplay:
        if self.progress is not None:
            self.progress.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, _trace: TracebackType | None
    ) -> None:
        if self.progress is not None:
            self.progress.stop()

    def task(self, description: str, total: int | None, unit: str) -> Callable[[int], None] | None:
        progress = self.progress
        if progress is None:
            return None
        task = progress.add_task(description, total=total, unit=unit)
        self.current = task
        return lambda count: progress.advance(task, count)

    def describe(self, description: str) -> None:
        if self.progress is not None and self.current is not None:
            self.progress.update(self.current, description=description)
