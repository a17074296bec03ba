"""UT1 archives (`blacklists.tar.gz`): checked member by member, and their lists unpacked into a private folder.

Why checked by us and not only by tarfile's `data` filter: a bad archive must be one clear line naming what is
wrong (a `..` member, a link leaving the tree, a size over the limit, a truncated file), and the import must
not start. Only `domains` and `urls` files of category folders are unpacked, and symlinked category folders
(UT1's aliases: `agressif -> aggressive`) only when they name a sibling folder. Nothing here touches the store:
the caller imports the unpacked tree (`policy.sources.formats.open_source`) once every member has passed.
"""

from __future__ import annotations

import gzip
import hashlib
import shutil
import tarfile
import zlib
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath

from policy.sources.lines import SourceError

ARCHIVE_SUFFIXES = (".tar.gz", ".tgz")
GZIP_MAGIC = b"\x1f\x8b"
LIST_FILES = frozenset({"domains", "urls"})
CHUNK = 1 << 20


@dataclass(frozen=True, slots=True)
class ArchiveLimits:
    max_bytes: int  # the archive file itself
    max_unpacked_bytes: int  # every member's size together
    max_members: int


@dataclass(frozen=True, slots=True)
class Archive:
    """An archive that passed every check: where its tree was unpacked, and what it was."""

    root: Path  # the unpacked UT1 tree (the archive's one top folder, `blacklists/`, when it has one)
    date: datetime | None  # the newest member's modification time: the lists' own date
    sha256: str
    size: int  # bytes of the archive
    members: int


def is_archive(path: Path) -> bool:
    """A `.tar.gz` / `.tgz` file, or any file starting with the gzip magic (a list file never does)."""
    if path.name.lower().endswith(ARCHIVE_SUFFIXES):
        return True
    try:
        with path.open("rb") as handle:
            return path.is_file() and handle.read(2) == GZIP_MAGIC
    except OSError:
        return False


def file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def unpack_archive(path: Path, into: Path, limits: ArchiveLimits, sha256: str = "") -> Archive:
    """Check `path` (size, digest, gzip, every member) and unpack its lists into the empty folder `into`.

    Raises SourceError (`FILE: reason`, one line) at the first problem; `into` may then hold part of the
    tree, and the caller throws it away.
    """
    try:
        size = path.stat().st_size
        if size > limits.max_bytes:
            raise SourceError(f"{path}: {size:,} bytes, more than import.max_archive_bytes ({limits.max_bytes:,})")
        digest = file_digest(path)
        with path.open("rb") as handle:
            magic = handle.read(2)
    except OSError as error:
        raise SourceError(f"{path}: {error.strerror or error}") from None
    if sha256 and digest != sha256.lower():
        raise SourceError(f"{path}: SHA-256 {digest} is not the expected {sha256.lower()}")
    if magic != GZIP_MAGIC:
        raise SourceError(f"{path}: not a gzip archive (a UT1 archive is blacklists.tar.gz)")
    try:
        members, newest, tops = _unpack(path, into, limits)
    except (tarfile.TarError, EOFError, OSError, zlib.error, gzip.BadGzipFile) as error:
        raise SourceError(f"{path}: not a complete gzip tar archive ({_reason(error)})") from None
    if not members:
        raise SourceError(f"{path}: an empty archive")
    root = into / next(iter(tops)) if len(tops) == 1 and (into / next(iter(tops))).is_dir() else into
    date = datetime.fromtimestamp(newest, UTC) if newest > 0 else None
    return Archive(root=root, date=date, sha256=digest, size=size, members=members)


def _reason(error: BaseException) -> str:
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0][:200]


def _unpack(path: Path, into: Path, limits: ArchiveLimits) -> tuple[int, float, set[str]]:
    """One streaming pass: check each member, unpack the lists; (members, newest mtime, top-level names)."""
    members = 0
    unpacked = 0
    newest = 0.0
    tops: set[str] = set()
    with tarfile.open(path, mode="r|gz") as archive:
        for member in archive:
            members += 1
            if members > limits.max_members:
                raise SourceError(f"{path}: more than import.max_members ({limits.max_members:,}) members")
            parts = _member_parts(path, member)
            if not parts:
                continue  # the archive's own "./"
            tops.add(parts[0])
            unpacked += max(member.size, 0)
            if unpacked > limits.max_unpacked_bytes:
                raise SourceError(
                    f"{path}: more than import.max_unpacked_bytes ({limits.max_unpacked_bytes:,}) unpacked"
                )
            newest = max(newest, float(member.mtime or 0))
            _place(archive, member, parts, into, path)
    return members, newest, tops


def _member_parts(path: Path, member: tarfile.TarInfo) -> tuple[str, ...]:
    """The member's path as parts, refused when absolute, climbing (`..`) or not a file, folder or symlink."""
    name = member.name
    if name.startswith("/") or PurePosixPath(name).is_absolute() or "\\" in name or "\0" in name:
        raise SourceError(f"{path}: member {name!r}: an absolute path")
    parts = tuple(part for part in PurePosixPath(name).parts if part != ".")
    if ".." in parts:
        raise SourceError(f"{path}: member {name!r}: a path outside the tree ('..')")
    if not (member.isdir() or member.isreg() or member.issym()):
        kind = "a hard link" if member.islnk() else "not a regular file"
        raise SourceError(f"{path}: member {name!r}: {kind}")
    return parts


def _place(archive: tarfile.TarFile, member: tarfile.TarInfo, parts: tuple[str, ...], into: Path, path: Path) -> None:
    """Unpack a list file (`[top/]category/domains|urls`) or a sibling alias link; leave everything else out."""
    if member.issym():
        target = member.linkname.rstrip("/")
        if not target or "/" in target or target in (".", "..") or "\0" in target:
            raise SourceError(f"{path}: member {member.name!r}: a link leaving its folder ({member.linkname!r})")
        if len(parts) in (1, 2):  # a category folder's alias: the only links UT1 ships
            link = into.joinpath(*parts)
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(target)
        return
    if not member.isreg() or parts[-1] not in LIST_FILES or len(parts) not in (2, 3):
        return
    destination = into.joinpath(*parts)
    destination.parent.mkdir(parents=True, exist_ok=True)
    source = archive.extractfile(member)
    if source is None:  # pragma: no cover - a regular member always has data
        return
    with source, destination.open("wb") as handle:
        shutil.copyfileobj(source, handle, CHUNK)
