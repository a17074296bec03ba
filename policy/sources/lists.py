"""Reading third-party category lists: plain host lists, UT1 / squidGuard trees and `host,category` CSV.

Pure parsing: files are read, nothing else, and nothing is written before every line has been checked:

1. `scan` parses everything and counts what each Clearance category would get; a bad row in a plain list
   or CSV raises `SourceError` (`FILE:LINE: reason`), while junk lines in a UT1 tree (they have plenty)
   are skipped, counted and a few kept as examples. Up to `KEEP_ENTRIES` parsed hosts are kept in memory.
2. `ScanReport.batches` yields one target category's hosts in batches for `PolicyStore.import_categories`:
   slices of what `scan` kept, or, for a larger source, a second read of the files, so memory stays flat
   however big the list. If a file changed in between so the count differs, it raises after the last
   batch, and the store drops the staged generation.

Entries are normalised exactly as `parse_host_entry` does (`.host` and `*.host` mean the host and below;
IP literals are entries too).
"""

from __future__ import annotations

import csv
import re
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from policy.categories import parse_host_entry, validate_category

Format = Literal["list", "ut1", "csv"]
FORMATS: tuple[str, ...] = ("auto", "list", "ut1", "csv")
FileKind = Literal["list", "domains", "urls", "csv"]

NOT_A_HOST = "not a host name or IP address"
PATH_ENTRY = "a path entry (use rules for paths)"
# How a count of skipped lines is labelled, per reason.
SKIP_LABELS = {NOT_A_HOST: "not host names or IP addresses", PATH_ENTRY: "path entries (use rules for paths)"}
EXAMPLES = 5
CSV_HOST_HEADERS = frozenset({"host", "hostname", "domain", "site", "url", "entry"})
PROGRESS_LINES = 20000  # lines between progress callbacks while reading CSV
CSV_ROWS = 5000  # CSV rows gathered by category before they are handed on
KEEP_ENTRIES = 2_000_000  # a source with more entries is read twice rather than held in memory (~80 bytes each)

# A host that normalise_host would return unchanged: lower-case ASCII labels, and a last label that is not
# all digits (so it cannot be an IPv4 address; no ':' so not IPv6). Such text needs no further work, which
# makes the common case about six times faster than the general path; everything else goes through
# parse_host_entry. tests/test_importers.py checks the two agree.
_LABEL = r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?"
_HOST = rf"(?:{_LABEL}\.)*(?=[a-z0-9_-]*[a-z_-]){_LABEL}"
_PLAIN_HOST = re.compile(_HOST)
BLOCK_BYTES = 1 << 20


class SourceError(ValueError):
    """A source that cannot be imported; for a bad row the message is `FILE:LINE: reason`."""


@dataclass(frozen=True, slots=True)
class Problem:
    """One line that is not imported."""

    file: str
    line: int
    text: str
    reason: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.text!r}: {self.reason}"


@dataclass(frozen=True, slots=True)
class SourceFile:
    path: Path
    kind: FileKind
    category: str | None  # the source category; None for CSV, where each row names its own


@dataclass(frozen=True, slots=True)
class Source:
    """What to read: the files, in order, and how source categories are named."""

    path: Path
    format: Format
    files: tuple[SourceFile, ...]
    # UT1 category folders that are symlinks to another one (`agressif -> aggressive`): canonical -> aliases.
    # The data is read once, under the canonical name; a mapping for an alias applies too.
    aliases: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    @property
    def strict(self) -> bool:
        """Plain lists and CSV are curated: a bad row is fatal. UT1 trees are not: junk is skipped."""
        return self.format != "ut1"


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


@dataclass(slots=True)
class Tally:
    """What a pass over a source saw: hosts per target, what was left out and why."""

    lines: int = 0
    hosts: Counter[str] = field(default_factory=Counter)  # target -> entries read (before de-duplication)
    sources: dict[str, list[str]] = field(default_factory=dict)  # target -> source categories feeding it
    not_imported: Counter[str] = field(default_factory=Counter)  # unmapped source category -> entries
    skipped: Counter[str] = field(default_factory=Counter)  # reason -> lines
    examples: list[Problem] = field(default_factory=list)  # the first few skipped lines

    def skip(self, problem: Problem) -> None:
        self.skipped[problem.reason] += 1
        if len(self.examples) < EXAMPLES:
            self.examples.append(problem)

    @property
    def total_hosts(self) -> int:
        return self.hosts.total()


# ---- entries ---------------------------------------------------------------------------------


def normalise_entry(text: str) -> str | None:
    """`parse_host_entry`, with a fast path for text that is already canonical."""
    bare = text[2:] if text.startswith("*.") else text[1:] if text.startswith(".") else text
    if len(bare) <= 253 and _PLAIN_HOST.fullmatch(bare):
        return bare
    return parse_host_entry(text)


def parse_line(raw: str, urls: bool = False) -> tuple[str | None, str | None]:
    """One line of a list: (host, None); (None, reason) when it is not an entry; (None, None) when blank.

    `#` starts a comment. In a squidGuard `urls` file a line is `host/path`, and only a `host` or `host/`
    line is a host entry: paths are for rules.
    """
    text = raw.split("#", 1)[0].strip()
    if not text:
        return None, None
    if urls:
        host_text = _url_host(text)
        if host_text is None:
            return None, PATH_ENTRY
        text = host_text
    host = normalise_entry(text)
    return (host, None) if host is not None else (None, NOT_A_HOST)


def _url_host(text: str) -> str | None:
    """The host of a squidGuard `urls` line (`host/path`) when the path is empty or "/"; else None."""
    if "://" in text:
        text = text.split("://", 1)[1]
    slash = text.find("/")
    if slash < 0:
        return text
    if text[slash:] in ("/", "//"):  # "host/" and "host//" (an empty path written with its slash)
        return text[:slash]
    return None


def read_lines(path: Path, strict: bool) -> Iterator[tuple[int, str]]:
    """(line number, text) of a UTF-8 file. Strict: undecodable bytes are an error naming the line;
    otherwise they become U+FFFD (and the line is then not a host)."""
    errors = "strict" if strict else "replace"
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            try:
                text = raw.decode("utf-8", errors)
            except UnicodeDecodeError:
                raise SourceError(f"{path}:{number}: not UTF-8 text") from None
            if number == 1 and text.startswith("\ufeff"):
                text = text[1:]
            yield number, text


def read_blocks(path: Path, strict: bool) -> Iterator[tuple[int, str]]:
    """The file in blocks of whole lines: (number of the block's first line, text ending in a newline).

    Decoding as `read_lines`; CRLF becomes LF.
    """
    errors = "strict" if strict else "replace"
    number = 1
    rest = b""
    with path.open("rb") as handle:
        while True:
            chunk = handle.read(BLOCK_BYTES)
            if chunk:
                data = rest + chunk
                cut = data.rfind(b"\n") + 1
                data, rest = data[:cut], data[cut:]
                if not data:
                    continue
            elif rest:
                data, rest = rest + b"\n", b""
            else:
                return
            try:
                text = data.decode("utf-8", errors)
            except UnicodeDecodeError as error:
                line = number + data.count(b"\n", 0, error.start)
                raise SourceError(f"{path}:{line}: not UTF-8 text") from None
            if number == 1 and text.startswith("\ufeff"):
                text = text[1:]
            if "\r" in text:
                text = text.replace("\r\n", "\n")
            yield number, text
            number += text.count("\n")


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
    plain = _PLAIN_HOST.fullmatch
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
                tally.skip(Problem(str(path), number, shown, reason))
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


# ---- sources ---------------------------------------------------------------------------------


def detect_format(path: Path) -> Format:
    """A directory is a UT1 tree; a `.csv` file, or one whose first entry line has a comma, is CSV."""
    if path.is_dir():
        return "ut1"
    if path.suffix.lower() == ".csv":
        return "csv"
    try:
        for _, text in read_lines(path, strict=False):
            stripped = text.strip()
            if stripped and not stripped.startswith("#"):
                return "csv" if "," in stripped else "list"
    except OSError as error:
        raise SourceError(f"{path}: {error.strerror or error}") from None
    return "list"


def open_source(path: Path, format: str = "auto", category: str | None = None) -> Source:
    """Describe what to read at `path`; checks that it exists and fits the format, reads no entries."""
    if not path.exists():
        raise SourceError(f"{path}: no such file or directory")
    chosen: Format = detect_format(path) if format == "auto" else _known_format(format)
    if chosen == "list":
        if category is None:
            raise SourceError(f"{path}: a plain host list needs --category")
        _need_file(path)
        return Source(path, "list", (SourceFile(path, "list", validate_category(category)),))
    if category is not None:
        raise SourceError(f"--category applies to plain host lists only; {path} is {chosen}")
    if chosen == "csv":
        _need_file(path)
        return Source(path, "csv", (SourceFile(path, "csv", None),))
    return _ut1_source(path)


def _known_format(format: str) -> Format:
    if format == "list":
        return "list"
    if format == "ut1":
        return "ut1"
    if format == "csv":
        return "csv"
    raise SourceError(f"unknown format {format!r} (known: {', '.join(FORMATS)})")


def _need_file(path: Path) -> None:
    if not path.is_file():
        raise SourceError(f"{path}: not a file")


def _category_files(folder: Path, category: str) -> list[SourceFile]:
    files = []
    for kind in ("domains", "urls"):
        candidate = folder / kind
        if candidate.is_file():
            files.append(SourceFile(candidate, "domains" if kind == "domains" else "urls", category))
    return files


def _ut1_source(path: Path) -> Source:
    """A tree of category folders (each with `domains` and/or `urls`), or one such folder on its own."""
    if not path.is_dir():
        raise SourceError(f"{path}: a UT1 / squidGuard list is a directory of category folders")
    own = _category_files(path, path.resolve().name.lower())
    if own:
        return Source(path, "ut1", tuple(own))
    # Group folders by what they resolve to: a symlinked alias is read once, under the real folder's name.
    groups: dict[Path, list[Path]] = {}
    for entry in sorted(path.iterdir()):
        if entry.is_dir():  # follows symlinks; dangling ones are not directories
            groups.setdefault(entry.resolve(), []).append(entry)
    files: list[SourceFile] = []
    aliases: dict[str, tuple[str, ...]] = {}
    for real, entries in sorted(groups.items(), key=lambda item: _canonical(item[1]).name):
        canonical = _canonical(entries).name.lower()
        found = _category_files(real, canonical)
        if not found:
            continue
        files += found
        others = tuple(entry.name.lower() for entry in entries if entry.name.lower() != canonical)
        if others:
            aliases[canonical] = others
    if not files:
        raise SourceError(f"{path}: no category folders with a domains or urls file")
    return Source(path, "ut1", tuple(files), aliases)


def _canonical(entries: list[Path]) -> Path:
    """The real folder if it is among the names, else the first name."""
    for entry in entries:
        if not entry.is_symlink():
            return entry
    return entries[0]


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
        yield from _reread(self.source, self.cmap, target, size, self.tally.hosts[target])


def scan(
    source: Source, cmap: CategoryMap, progress: Callable[[int], None] | None = None, keep: int = KEEP_ENTRIES
) -> ScanReport:
    """Parse everything once, writing nothing: what each category gets, what is left out; raises SourceError.

    Up to `keep` entries are kept in memory for the write; a larger source is read a second time instead.
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
                tally.hosts[target] += len(hosts)
                if kept is not None:
                    kept.setdefault(target, []).extend(hosts)
                    if tally.total_hosts > keep:
                        kept = None  # too many to hold: the write reads the source again
        except OSError as error:
            raise SourceError(f"{source_file.path}: {error.strerror or error}") from None
    return ScanReport(source, cmap, tally, kept)


def _resolve(target_of: Callable[[str], str | None], category: str, path: Path) -> str | None:
    try:
        return target_of(category)
    except ValueError as error:
        raise SourceError(f"{path}: source category {category!r}: {error}; map it with --map") from None


def _feeds(tally: Tally, target: str, category: str) -> None:
    feeding = tally.sources.setdefault(target, [])
    if category not in feeding:
        feeding.append(category)


def _reread(source: Source, cmap: CategoryMap, target: str, size: int, expected: int) -> Iterator[list[str]]:
    target_of = _targets(source, cmap)
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
                pending += hosts
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
