"""What a category-list source is: a plain host list, a `host,category` CSV or a UT1 / squidGuard tree.

`open_source` looks at a path (detecting the format unless told) and describes the files to read, in order,
with the source category of each; it reads no entries.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from policy.categories import validate_category
from policy.sources.lines import SourceError, read_lines

Format = Literal["list", "ut1", "csv"]
FORMATS: tuple[str, ...] = ("auto", "list", "ut1", "csv")
FileKind = Literal["list", "domains", "urls", "csv"]


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
