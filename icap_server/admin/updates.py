"""`clearance categories update`: fetch the UT1 archive, check it, and make it the store's `ut1` source.

Why a command of its own: an import merges or replaces what it is given, while keeping a list current means
replacing one source whole, from the place it is published, on a timer (docs/list-updates.md). Everything is
fetched and checked before the store is touched (the archive's size, digest, gzip framing and every member, then
every line); the write is one switch of the `ut1` lists, so a failed update leaves the previous one in force.
Only the `ut1` source changes: the curated lists, the admin's and other imports stay as they are.
"""

from __future__ import annotations

import argparse
import re
import socket
import time
import urllib.error
import urllib.request
from pathlib import Path
from tempfile import TemporaryDirectory
from urllib.parse import unquote, urlsplit

from icap_server import __version__
from icap_server.admin.imports import iso, open_archive, parse_maps, plural, print_left_out
from icap_server.admin.support import StoreAction, UsageError, print_table
from icap_server.config import Config
from icap_server.service.sync import protected
from policy.sources.lines import SourceError
from policy.sources.lists import CategoryMap, ScanReport, scan
from policy.store import IMPORT_BATCH, ImportResult, PolicyStore
from policy.store.categories import SourceInfo

SOURCE = "ut1"
CHUNK = 1 << 16
SHA256 = re.compile(r"\A[0-9a-fA-F]{64}\Z")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--from", dest="location", metavar="URL|FILE", help="the archive (default: import.ut1_url)")
    parser.add_argument("--sha256", metavar="HEX", help="the archive's expected SHA-256 (default: import.ut1_sha256)")
    parser.add_argument("--map", action="append", default=[], metavar="SRC=DST", help="as for `categories import`")


def fetch(location: str, into: Path, config: Config) -> Path:
    """The archive as a local file: a path or file:// as it is, an http(s) URL downloaded within the limits."""
    parts = urlsplit(location)
    if parts.scheme == "file":
        return Path(unquote(parts.path))
    if parts.scheme not in ("http", "https"):
        if parts.scheme and len(parts.scheme) > 1:
            raise UsageError(f"{location}: expected an http(s):// URL or a file")
        return Path(location)
    limit, timeout = config.import_.max_archive_bytes, config.import_.fetch_timeout_seconds
    target = into / "blacklists.tar.gz"
    request = urllib.request.Request(location, headers={"User-Agent": f"clearance/{__version__}"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response, target.open("wb") as handle:
            declared = int(response.headers.get("Content-Length") or 0)
            if declared > limit:
                raise UsageError(f"{location}: {declared:,} bytes, more than import.max_archive_bytes ({limit:,})")
            _copy_within(response, handle, limit, location)
    except urllib.error.HTTPError as error:
        raise UsageError(f"{location}: HTTP {error.code} {error.reason}") from None
    except urllib.error.URLError as error:
        raise UsageError(f"{location}: {_why(error.reason)}") from None
    except TimeoutError:
        raise UsageError(f"{location}: no answer within import.fetch_timeout_seconds ({timeout:g} s)") from None
    except OSError as error:
        raise UsageError(f"{location}: {error.strerror or error}") from None
    return target


def _copy_within(response: object, handle: object, limit: int, location: str) -> None:
    read = 0
    while chunk := response.read(CHUNK):  # type: ignore[attr-defined]
        read += len(chunk)
        if read > limit:
            raise UsageError(f"{location}: more than import.max_archive_bytes ({limit:,}) bytes")
        handle.write(chunk)  # type: ignore[attr-defined]


def _why(reason: object) -> str:
    if isinstance(reason, TimeoutError | socket.timeout):
        return "timed out"
    return str(getattr(reason, "strerror", None) or reason)


def categories_update(args: argparse.Namespace, config: Config) -> StoreAction:
    location = args.location or config.import_.ut1_url
    expected = args.sha256 if args.sha256 is not None else config.import_.ut1_sha256
    if expected and not SHA256.match(expected):
        raise UsageError(f"--sha256: expected 64 hex digits, got {expected!r}")
    download = TemporaryDirectory(prefix="clearance-fetch-")
    try:
        path = fetch(location, Path(download.name), config)
        cmap = CategoryMap(config.import_.category_map, config.import_.only_mapped).with_overrides(parse_maps(args.map))
        source, archive, workdir = open_archive(path, config, expected)
    except (SourceError, ValueError) as error:
        download.cleanup()
        raise UsageError(str(error)) from None
    except BaseException:
        download.cleanup()
        raise
    download.cleanup()
    try:
        report = scan(source, cmap, protected=frozenset(protected(config)))
    except SourceError as error:
        workdir.cleanup()
        raise UsageError(str(error)) from None
    if not report.targets:
        workdir.cleanup()
        raise UsageError(f"{location}: nothing to import: no source category is mapped to a Clearance category")
    info = SourceInfo(date=iso(archive.date), origin=location)
    started = time.perf_counter()

    async def action(store: PolicyStore) -> int:
        try:
            batches = {target: report.batches(target, IMPORT_BATCH) for target in report.targets}
            result = await store.import_categories(
                batches, True, actor=args.actor, source=SOURCE, info=info, whole=True, action="categories-update"
            )
        except SourceError as error:
            raise UsageError(str(error)) from None
        finally:
            workdir.cleanup()
        print_update(report, result, info, time.perf_counter() - started)
        return 0

    return action


def print_update(report: ScanReport, result: ImportResult, info: SourceInfo, seconds: float) -> None:
    """Per category: entries now, added, removed; the protected entries left out; one summary line."""
    rows = [("CATEGORY", "ENTRIES", "ADDED", "REMOVED", "FROM")]
    for category in sorted(result.entries):
        feeding = ", ".join(report.tally.sources.get(category, [])) or "-"
        entries, added, removed = result.entries[category], result.added[category], result.removed[category]
        rows.append((category, f"{entries:,}", f"+{added:,}", f"-{removed:,}", feeding))
    print_table(rows)
    print_left_out(report)
    added, removed = sum(result.added.values()), sum(result.removed.values())
    dated = f", lists of {info.date}" if info.date else ""
    print(
        f"updated source {SOURCE} from {info.origin}{dated}: {plural(added, 'entry', 'entries')} added, "
        f"{removed:,} removed, {report.tally.protected:,} protected skipped, in {seconds:.2f} s; "
        f"policy version {result.version}"
    )
