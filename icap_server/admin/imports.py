"""`clearance categories import`: bulk lists (UT1 / squidGuard trees, host,category CSV, plain lists) into Redis.

The handler reads and checks the whole source before any connection is made (`policy.sources.lists.scan`); the
action then reads it again in batches straight into `PolicyStore.import_categories`, which stages every
category's new generation beside the live one and switches all of them in one step. On a terminal, rich
progress bars show counts and rates on stderr; otherwise only the summary is printed.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType

from rich.console import Console
from rich.progress import BarColumn, Progress, ProgressColumn, Task, TaskID, TextColumn, TimeElapsedColumn
from rich.text import Text

from icap_server.admin.support import StoreAction, UsageError, print_table
from icap_server.config import Config
from icap_server.service.sync import protected
from policy.categories import validate_category
from policy.sources.formats import FORMATS, Source, open_source
from policy.sources.lines import SKIP_LABELS, SourceError
from policy.sources.lists import CategoryMap, ScanReport, scan
from policy.store import IMPORT_BATCH, PolicyStore


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The arguments of `categories import` (admin/categories.py adds the parser; the options live here)."""
    parser.add_argument("path", metavar="PATH", help="a UT1 / squidGuard directory, a host,category CSV or a list")
    parser.add_argument("--format", choices=FORMATS, default="auto", help="default: detect from PATH")
    parser.add_argument("--category", help="the category of a plain host list")
    parser.add_argument(
        "--replace", action="store_true", help="each imported category holds exactly the source (default: merge)"
    )
    parser.add_argument(
        "--map",
        action="append",
        default=[],
        metavar="SRC=DST",
        help="import source category SRC as DST (adds to or overrides import.category_map)",
    )
    parser.add_argument("--dry-run", action="store_true", help="read and check everything, write nothing")


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
        source = open_source(path, args.format, args.category)
    except (SourceError, ValueError) as error:
        raise UsageError(str(error)) from None
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
        before = await store.category_sizes()
        written = time.perf_counter()
        with ProgressDisplay(show) as display:
            advance = display.task("Importing", report.tally.total_hosts, "hosts")
            sources = {
                target: _announce(display, target, report.batches(target, IMPORT_BATCH)) for target in report.targets
            }
            try:
                result = await store.import_categories(
                    sources, replace=args.replace, progress=advance, actor=args.actor
                )
            except SourceError as error:
                raise UsageError(str(error)) from None
        elapsed = time.perf_counter() - started
        timing = (parsed, time.perf_counter() - written, elapsed)
        print_result(report, result.entries, before, args.replace, timing, result.version)
        return 0

    return action


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
    entries: Mapping[str, int],
    before: Mapping[str, int],
    replace: bool,
    timing: tuple[float, float, float],  # check, write, all
    version: int,
) -> None:
    tally = report.tally
    rows = [("CATEGORY", "ENTRIES", "BEFORE", "READ", "FROM")]
    for target in report.targets:
        rows.append(
            (
                target,
                f"{entries.get(target, 0):,}",
                f"{before.get(target, 0):,}",
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
        f"in {elapsed:.2f} s, {rate(tally.total_hosts, elapsed)} hosts/s "
        f"(check {parsed:.2f} s, write {written:.2f} s); policy version {version}"
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
