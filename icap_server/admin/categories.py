"""`clearance categories …`: the category lists: add hosts, load a list file, look a host up, count, import.

`categories import` (bulk third-party lists) is its own module, `icap_server.admin.imports`, and
`categories update` (the UT1 archive, fetched) is `icap_server.admin.updates`. `add` and `load` write the
`admin` source; `stats` counts each category and each of its sources.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from icap_server.admin import imports, updates
from icap_server.admin.output import TableText, add_format, print_rows
from icap_server.admin.support import (
    Commands,
    StoreAction,
    UsageError,
    add_group,
    checked_category,
    reading,
)
from icap_server.config import Config
from icap_server.service.sync import protected
from policy.categories import (
    PROTECTED,
    ListError,
    entry_problem,
    parse_host_list,
    parse_list_entry,
    protecting_entry,
)
from policy.hosts import request_host, request_path
from policy.store import PolicyStore
from policy.store.categories import SourceInfo


def register(commands: Commands) -> None:
    categories = add_group(commands, "categories", "manage category lists")
    add = categories.add_parser("add", help="add hosts to a category")
    add.add_argument("category")
    add.add_argument("hosts", nargs="+", metavar="HOST")
    add.set_defaults(handler=categories_add)
    load = categories.add_parser("load", help="add every host of a list file (one per line, # comments)")
    load.add_argument("category")
    load.add_argument("file", type=Path)
    load.set_defaults(handler=categories_load)
    lookup = categories.add_parser("lookup", help="show which list entry and categories govern a URL or host")
    lookup.add_argument("url")
    lookup.set_defaults(handler=categories_lookup)
    stats = categories.add_parser("stats", help="entries per category and per source")
    add_format(stats)
    stats.set_defaults(handler=categories_stats)
    importing = categories.add_parser(
        "import", help="import UT1 / squidGuard trees or archives, host,category CSV or host lists"
    )
    imports.add_arguments(importing)
    importing.set_defaults(handler=imports.categories_import)
    update = categories.add_parser("update", help="fetch the UT1 archive and make it the ut1 source")
    updates.add_arguments(update)
    update.set_defaults(handler=updates.categories_update)


def categories_add(args: argparse.Namespace, config: Config) -> StoreAction:
    category = checked_category(args.category)
    hosts = []
    for text in args.hosts:
        host = parse_list_entry(text)
        if host is None:
            raise UsageError(f"{text!r} is {entry_problem(text)}")
        hosts.append(host)
    refuse_protected(hosts, config, "")
    return lambda store: report_added(store, category, hosts, args.actor, "categories-add")


def categories_load(args: argparse.Namespace, config: Config) -> StoreAction:
    category = checked_category(args.category)
    try:
        with reading(args.file), args.file.open(encoding="utf-8") as handle:
            hosts = parse_host_list(handle)
    except ListError as error:
        raise UsageError(f"{args.file}: {error}") from None
    refuse_protected(hosts, config, f"{args.file}: ")
    return lambda store: report_added(store, category, hosts, args.actor, "categories-load")


def refuse_protected(hosts: list[str], config: Config, where: str) -> None:
    """A protected host in a list would never block (the protected entry wins), so saying nothing would mislead.

    Refused, naming the first one: a path or a sub-host of a protected service is restricted with a URL rule.
    """
    shield = frozenset(protected(config))
    for host in hosts:
        by = protecting_entry(host, shield)
        if by is not None:
            under = "" if by == host else f" (under {by})"
            raise UsageError(
                f"{where}{host}: a protected host{under}, never blocked by a list; nothing added "
                "(restrict a path or sub-host with `clearance rules category`)"
            )


async def report_added(store: PolicyStore, category: str, hosts: list[str], actor: str, action: str) -> int:
    added = await store.add_hosts(category, hosts, actor=actor, action=action)
    print(f"{category}: {added} added, {len(hosts) - added} already listed")
    return 0


def categories_lookup(args: argparse.Namespace, config: Config) -> StoreAction:
    target = args.url if "://" in args.url else f"http://{args.url}/"
    host = request_host("GET", target, None)
    if host is None:
        raise UsageError(f"cannot find a host in {args.url!r}")
    path = request_path("GET", target)

    async def action(store: PolicyStore) -> int:
        from icap_server.service.explain import served_state  # the filter's whole service: only for a lookup

        state = await served_state(config, store, host)  # what serve holds: the store, the catalogue, protected
        match, service_id = state.match_listed(host, path)
        service = state.services.get(service_id or state.services.service_of(host))
        named = f", service {service.id} ({service.name_en} / {service.name_zh})" if service is not None else ""
        if PROTECTED in match.categories:
            print(f"{host}: protected, never blocked by a list (protected entry {match.entry})")
        elif match.entry is None:
            print(f"{host}: no category")
        else:
            print(f"{host}: {', '.join(sorted(match.categories))} (list entry {match.entry}){named}")
        return 0

    return action


@dataclass(frozen=True)
class StatRow:
    """One line of `categories stats`: a category's entries (its sources together; `source` None), or one
    source's entries in it, with when the source was written and what it is."""

    category: str
    source: str | None
    entries: int
    lists_date: datetime | str | None  # the lists' own date (an archive's newest member)
    shipped_version: str | None  # curated: the shipped version of the lists it holds
    updated: datetime | str | None  # when an import or update last replaced or merged it
    origin: str | None  # a URL or file name


def categories_stats(args: argparse.Namespace, config: Config) -> StoreAction:
    """`CATEGORY<TAB>entries` (its sources together), then `  SOURCE<TAB>entries<TAB>dates` for each source."""

    async def action(store: PolicyStore) -> int:
        lists, infos = await store.list_sizes(), await store.source_infos()
        rows: list[StatRow] = []
        for name, size in (await store.category_sizes()).items():
            rows.append(StatRow(name, None, size, None, None, None, None))
            for (category, source), entries in lists.items():
                if category == name and entries:
                    rows.append(source_row(category, source, entries, infos.get(source)))
        print_rows(args.format, StatRow, rows, stats_lines, ZoneInfo(config.policy.timezone))
        return 0

    return action


def source_row(category: str, source: str, entries: int, info: SourceInfo | None) -> StatRow:
    info = info or SourceInfo()
    return StatRow(
        category,
        source,
        entries,
        _moment(info.date),
        info.version or None,
        _moment(info.updated),
        info.origin or None,
    )


def stats_lines(rows: Sequence[StatRow], text: TableText) -> Iterator[str]:
    """The stats table: a category's line, then each source's, indented, with what is known of it."""
    for row in rows:
        if row.source is None:
            yield f"{row.category}\t{row.entries}"
            continue
        parts = [
            text.fill(template, row)
            for template, field in (
                ("lists of {lists_date}", row.lists_date),
                ("shipped {shipped_version}", row.shipped_version),
                ("updated {updated}", row.updated),
                ("from {origin}", row.origin),
            )
            if field
        ]
        yield f"  {row.source}\t{row.entries}\t{', '.join(parts) or '-'}"


def _moment(text: str) -> datetime | str | None:
    """A date the store wrote (ISO 8601), or its text as written when it is not one."""
    if not text:
        return None
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        return text
