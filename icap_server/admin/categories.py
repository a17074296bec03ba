"""`clearance categories …`: the category lists: add hosts, load a list file, look a host up, count, import.

`categories import` (bulk third-party lists) is its own module, `icap_server.admin.imports`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from icap_server.admin import imports
from icap_server.admin.support import Commands, StoreAction, UsageError, add_group, checked_category, reading
from icap_server.config import Config
from icap_server.service.sync import protected
from policy.categories import (
    PROTECTED,
    CategoryMatch,
    ListError,
    entry_problem,
    parse_host_list,
    parse_list_entry,
    protecting_entry,
)
from policy.hosts import request_host
from policy.state import CategoryIndex
from policy.store import PolicyStore


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
    categories.add_parser("stats", help="entries per category").set_defaults(handler=categories_stats)
    importing = categories.add_parser("import", help="import UT1 / squidGuard trees, host,category CSV or host lists")
    imports.add_arguments(importing)
    importing.set_defaults(handler=imports.categories_import)


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

    shield = protected(config)

    async def action(store: PolicyStore) -> int:
        match = protected_match(await store.lookup_categories(host), host, shield)
        if PROTECTED in match.categories:
            print(f"{host}: protected, never blocked by a list (protected entry {match.entry})")
        elif match.entry is None:
            print(f"{host}: no category")
        else:
            print(f"{host}: {', '.join(sorted(match.categories))} (list entry {match.entry})")
        return 0

    return action


def protected_match(stored: CategoryMatch, host: str, shield: tuple[str, ...]) -> CategoryMatch:
    """The store's match and the protected hosts in one index, so the most specific wins as in `serve`."""
    index = CategoryIndex()
    index.add(PROTECTED, shield)
    if stored.entry is not None:
        for category in stored.categories:
            index.add(category, (stored.entry,))
    return index.match(host)


def categories_stats(args: argparse.Namespace, config: Config) -> StoreAction:
    async def action(store: PolicyStore) -> int:
        for name, size in (await store.category_sizes()).items():
            print(f"{name}\t{size}")
        return 0

    return action
