"""Reading third-party category lists: plain host lists, UT1 / squidGuard trees and `host,category` CSV.

Pure parsing: files are read, nothing else, and nothing is written before every line has been checked:

1. `scan` parses everything and counts what each Clearance category would get; a bad row in a plain list
   or CSV raises `SourceError` (`FILE:LINE: reason`), while junk lines in a UT1 tree (they have plenty)
   are skipped, counted and a few kept as examples. Up to `KEEP_ENTRIES` parsed hosts are kept in memory.
2. `ScanReport.batches` yields one target category's hosts in batches for `PolicyStore.import_categories`:
   slices of what `scan` kept, or, for a larger source, a second read of the files, so memory stays flat
   however big the list. If a file changed in between so the count differs, it raises after the last
   batch, and the store drops the staged generation.

What a source is (its format and files) lives in `policy.sources.formats`; reading lines and normalising
entries in `policy.sources.lines`.
"""

from __future__ import annotations

import csv
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from policy.categories import protecting_entry, validate_category
from policy.sources.formats import Source, SourceFile
from policy.sources.lines import (
    NOT_A_HOST,
    PLAIN_HOST,
    SkippedLine,
    SourceError,
    normalise_entry,
    parse_line,
    read_blocks,
    read_lines,
)

EXAMPLES = 5
CONFLICTS_SHOWN = 20  # protected entries named one a line; the rest are counted
CSV_HOST_HEADERS = frozenset({"host", "hostname", "domain", "site", "url", "entry"})
PROGRESS_LINES = 20000  # lines between progress callbacks while reading CSV
CSV_ROWS = 5000  # CSV rows gathered by category before they are handed on
KEEP_ENTRIES = 2_000_000  # a source with more entries is read twice rather than held in memory (~80 bytes each)


@dataclass(frozen=True, slots=True)
class CategoryMap:
    """Which Clearance category each source category goes to.

    `mapping` is source -> Clearance category; with `only_mapped`, unmapped source categories are not
    imported, otherwise they are imported under their own name (which must be a valid category name).
    """

    mapping: Mapping[str, str]
    only_mapped: bool = True

    def __post_init__(self) -> None:
        normalised = {}
        for source, target in self.mapping.items():
            key = source.strip().lower()
            if not key:
                raise ValueError("a source category name must not be empty")
            normalised[key] = validate_category(target)
        object.__setattr__(self, "mapping", normalised)

    def with_overrides(self, overrides: Mapping[str, str]) -> CategoryMap:
        return CategoryMap({**self.mapping, **overrides}, self.only_mapped)

    def target(self, source: str, aliases: Iterable[str] = ()) -> str | None:
        """The Clearance category for a source category (or one of its aliases); None: not imported.

        Raises ValueError for an unmapped source imported under its own name when that name is invalid.
        """
        name = source.strip().lower()
        for candidate in (name, *sorted(alias.lower() for alias in aliases)):
            if candidate in self.mapping:
                return self.mapping[candidate]
        if self.only_mapped:
            return None
        return validate_category(name)


@dataclass(frozen=True, slots=True)
class Conflict:
    """A source entry left out because a protected host covers it (`office365.com from UT1 webmail`)."""

    entry: str
    category: str  # the source category it came from
    protected_by: str  # the protected entry it equals or falls under

    def describe(self, source: str) -> str:
        under = "" if self.protected_by == self.entry else f" (under {self.protected_by})"
        return f"{self.entry} from {source} {self.category}: protected{under}, skipped"


@dataclass(slots=True)
class Tally:
    """What a pass over a source saw: hosts per target, what was left out and why."""

    lines: int = 0
    hosts: Counter[str] = field(default_factory=Counter)  # target -> entries read (before de-duplication)
    sources: dict[str, list[str]] = field(default_factory=dict)  # target -> source categories feeding it
    not_imported: Counter[str] = field(default_factory=Counter)  # unmapped source category -> entries
    skipped: Counter[str] = field(default_factory=Counter)  # reason -> lines
    examples: list[SkippedLine] = field(default_factory=list)  # the first few skipped lines
    protected: int = 0  # entries left out because they are, or fall under, a protected host
    conflicts: list[Conflict] = field(default_factory=list)  # the first CONFLICTS_SHOWN of them

    def skip(self, problem: SkippedLine) -> None:
        self.skipped[problem.reason] += 1
        if len(self.examples) < EXAMPLES:
            self.examples.append(problem)

    @property
    def total_hosts(self) -> int:
        return self.hosts.total()

    def unprotected(self, hosts: list[str], category: str, protected: frozenset[str]) -> list[str]:
        """`hosts` without those a protected host covers; each one left out is counted, the first few named."""
        if not protected:
            return hosts
        tails = _tails(protected)
        kept = []
        for host in hosts:
            last = host.rfind(".")
            if tails is not None and host[host.rfind(".", 0, last) + 1 :] not in tails:
                kept.append(host)  # the common case: no protected entry ends in this host's last two labels
                continue
            by = protecting_entry(host, protected)
            if by is None:
                kept.append(host)
                continue
            self.protected += 1
            if len(self.conflicts) < CONFLICTS_SHOWN:
                self.conflicts.append(Conflict(host, category, by))
        return kept


@lru_cache(maxsize=8)
def _tails(protected: frozenset[str]) -> frozenset[str] | None:
    """The last two labels of every protected entry; None if one has a single label (no quick test then)."""
    if any("." not in entry for entry in protected):
        return None
    return frozenset(".".join(entry.rsplit(".", 2)[-2:]) for entry in protected)


# ---- reading one file ----------------------------------------------------------------------------


def iter_file(
    source_file: SourceFile, tally: Tally, strict: bool, progress: Callable[[int], None] | None = None
) -> Iterator[tuple[str, list[str]]]:
    """(source category, hosts) for the entries of one file, a block at a time; skipped lines go to `tally`,
    or raise SourceError if `strict`. `progress`, if given, is called with the number of lines read."""
    if source_file.kind == "csv":
        yield from _iter_csv(source_file.path, tally, progress)
        return
    category = source_file.category
    assert category is not None
    path = source_file.path
    urls = source_file.kind == "urls"
    plain = PLAIN_HOST.fullmatch
    for first, text in read_blocks(path, strict):
        hosts: list[str] = []
        lines = text.split("\n")
        lines.pop()  # the block ends with a newline
        for number, raw in enumerate(lines, start=first):
            if not urls and len(raw) <= 253 and plain(raw):  # already canonical: the common case
                hosts.append(raw)
                continue
            host, reason = parse_line(raw, urls)
            if host is not None:
                hosts.append(host)
            elif reason is not None:
                shown = raw.strip()
                if strict:
                    raise SourceError(f"{path}:{number}: {shown!r} is {reason}")
                tally.skip(SkippedLine(str(path), number, shown, reason))
        tally.lines += len(lines)
        if progress is not None:
            progress(len(lines))
        if hosts:
            yield category, hosts


def _iter_csv(path: Path, tally: Tally, progress: Callable[[int], None] | None) -> Iterator[tuple[str, list[str]]]:
    """(category as written, [host]) per `host,category` row; the first row may be a header. Always strict."""
    numbered = read_lines(path, strict=True)
    last = 0

    def lines() -> Iterator[str]:
        nonlocal last
        for number, text in numbered:
            last = number
            if progress is not None and number % PROGRESS_LINES == 0:
                progress(PROGRESS_LINES)
            yield text

    first = True
    pending: dict[str, list[str]] = {}  # category -> hosts, handed on every CSV_ROWS rows
    rows = 0
    for row in csv.reader(lines()):
        cells = [cell.strip() for cell in row]
        if not any(cells) or cells[0].startswith("#"):
            continue
        number = last
        if first:
            first = False
            if cells[0].lower() in CSV_HOST_HEADERS:
                continue
        if len(cells) < 2 or not cells[1]:
            raise SourceError(f"{path}:{number}: expected HOST,CATEGORY, got {','.join(cells)!r}")
        host = normalise_entry(cells[0])
        if host is None:
            raise SourceError(f"{path}:{number}: {cells[0]!r} is {NOT_A_HOST}")
        category = cells[1].lower()
        if category in pending:
            pending[category].append(host)
        else:
            pending[category] = [host]
        rows += 1
        if rows >= CSV_ROWS:
            yield from pending.items()
            pending, rows = {}, 0
    yield from pending.items()
    tally.lines += last
    if progress is not None and last % PROGRESS_LINES:
        progress(last % PROGRESS_LINES)


# ---- the two passes ------------------------------------------------------------------------------


def _targets(source: Source, cmap: CategoryMap) -> Callable[[str], str | None]:
    """Source category -> Clearance category (None: not imported), cached; ValueError for a bad name."""
    if source.format == "list":
        return lambda name: name  # --category names the Clearance category itself
    cache: dict[str, str | None] = {}

    def target(name: str) -> str | None:
        if name not in cache:
            cache[name] = cmap.target(name, source.aliases.get(name, ()))
        return cache[name]

    return target


@dataclass(frozen=True, slots=True)
class ScanReport:
    source: Source
    cmap: CategoryMap
    tally: Tally
    kept: Mapping[str, list[str]] | None  # target -> hosts, when the source was small enough to keep
    protected: frozenset[str] = frozenset()  # protected hosts: entries they cover are left out, and reported

    @property
    def targets(self) -> list[str]:
        return sorted(self.tally.sources)

    def batches(self, target: str, size: int) -> Iterator[list[str]]:
        """The hosts going to one Clearance category, in batches of `size` (slices: nothing is copied whole).

        From memory when `scan` kept them; otherwise the source is read again, and if it changed in between
        so that the count differs, SourceError is raised after the last batch, before the store switches.
        """
        if self.kept is not None:
            hosts = self.kept.get(target, [])
            for start in range(0, len(hosts), size):
                yield hosts[start : start + size]
            return
        yield from _reread(self, target, size)


def scan(
    source: Source,
    cmap: CategoryMap,
    progress: Callable[[int], None] | None = None,
    keep: int = KEEP_ENTRIES,
    protected: frozenset[str] = frozenset(),
) -> ScanReport:
    """Parse everything once, writing nothing: what each category gets, what is left out; raises SourceError.

    Up to `keep` entries are kept in memory for the write; a larger source is read a second time instead.
    An entry equal to or below a `protected` host is left out and counted in `Tally.protected`.
    """
    tally = Tally()
    kept: dict[str, list[str]] | None = {} if keep > 0 else None
    target_of = _targets(source, cmap)
    for source_file in source.files:
        try:
            if source_file.category is not None:  # a file of one category, even an empty one, feeds its target
                target = _resolve(target_of, source_file.category, source_file.path)
                if target is None:
                    tally.not_imported.setdefault(source_file.category, 0)
                else:
                    _feeds(tally, target, source_file.category)
            for category, hosts in iter_file(source_file, tally, source.strict, progress):
                target = _resolve(target_of, category, source_file.path)
                if target is None:
                    tally.not_imported[category] += len(hosts)
                    continue
                _feeds(tally, target, category)
                hosts = tally.unprotected(hosts, category, protected)
                tally.hosts[target] += len(hosts)
                if kept is not None:
                    kept.setdefault(target, []).extend(hosts)
                    if tally.total_hosts > keep:
                        kept = None  # too many to hold: the write reads the source again
        except OSError as error:
            raise SourceError(f"{source_file.path}: {error.strerror or error}") from None
    return ScanReport(source, cmap, tally, kept, protected)


def _resolve(target_of: Callable[[str], str | None], category: str, path: Path) -> str | None:
    try:
        return target_of(category)
    except ValueError as error:
        raise SourceError(f"{path}: source category {category!r}: {error}; map it with --map") from None


def _feeds(tally: Tally, target: str, category: str) -> None:
    feeding = tally.sources.setdefault(target, [])
    if category not in feeding:
        feeding.append(category)


def _reread(report: ScanReport, target: str, size: int) -> Iterator[list[str]]:
    source, expected = report.source, report.tally.hosts[target]
    target_of = _targets(source, report.cmap)
    tally = Tally()
    pending: list[str] = []
    count = 0
    for source_file in source.files:
        if source_file.category is not None and target_of(source_file.category) != target:
            continue
        try:
            for category, hosts in iter_file(source_file, tally, source.strict):
                if source_file.category is None and target_of(category) != target:
                    continue
                pending += tally.unprotected(hosts, category, report.protected)
                if len(pending) >= size:
                    full = len(pending) - len(pending) % size
                    for start in range(0, full, size):
                        yield pending[start : start + size]
                    count += full
                    pending = pending[full:]
        except OSError as error:
            raise SourceError(f"{source_file.path}: {error.strerror or error}") from None
    count += len(pending)
    if pending:
        yield pending
    if count != expected:
        raise SourceError(f"{source.path} changed during the import: {expected} entries for {target}, now {count}")
