"""`clearance exemptions …`: client networks that need no approval (e.g. government-issued mobile devices).

Exemptions from the config file are listed beside those added here; only the latter can be removed here.
"""

from __future__ import annotations

import argparse
import ipaddress
from dataclasses import dataclass
from zoneinfo import ZoneInfo

from icap_server.admin.output import Line, add_format, print_rows
from icap_server.admin.support import Commands, StoreAction, UsageError, add_group
from icap_server.config import Config
from icap_server.service.exemptions import static_exemptions
from policy.store import PolicyStore


def register(commands: Commands) -> None:
    exemptions = add_group(commands, "exemptions", "networks that need no approval")
    add = exemptions.add_parser("add", help="exempt a network (e.g. government-issued mobile devices)")
    add.add_argument("--network", required=True, metavar="CIDR")
    add.add_argument("--category", action="append", default=[], help="only this category (repeatable)")
    add.add_argument("--note", default="")
    add.set_defaults(handler=exemptions_add)
    listing = exemptions.add_parser("list", help="list exemptions (config file and Redis)")
    add_format(listing)
    listing.set_defaults(handler=exemptions_list)
    remove = exemptions.add_parser("remove", help="remove an exemption added here")
    remove.add_argument("id")
    remove.set_defaults(handler=exemptions_remove)


def exemptions_add(args: argparse.Namespace, config: Config) -> StoreAction:
    try:
        network = str(ipaddress.ip_network(args.network, strict=False))
    except ValueError:
        raise UsageError(f"--network: not a network in CIDR form: {args.network!r}") from None
    categories = frozenset(args.category)
    unknown = sorted(categories - set(config.policy.restricted_categories))
    if unknown:
        raise UsageError(f"--category {unknown[0]!r} is not a restricted category")

    async def action(store: PolicyStore) -> int:
        exemption = await store.add_exemption(network, categories, args.note.strip(), args.actor)
        print(exemption.id)
        return 0

    return action


@dataclass(frozen=True)
class ExemptionRow:
    """One exemption as `exemptions list` shows it; no `categories` means every restricted category."""

    id: str
    network: str
    categories: tuple[str, ...]
    source: str  # config (the file) or redis (added with `exemptions add`)
    note: str


EXEMPTION_TABLE = (
    Line("ID", "{id}"),
    Line("NETWORK", "{network}"),
    Line("CATEGORIES", "{categories}", when="categories", otherwise="all restricted"),
    Line("SOURCE", "{source}"),
    Line("NOTE", "{note}"),
)


def exemptions_list(args: argparse.Namespace, config: Config) -> StoreAction:
    async def action(store: PolicyStore) -> int:
        rows: list[ExemptionRow] = []
        for source, items in (("config", static_exemptions(config)), ("redis", tuple(await store.exemptions()))):
            rows += [
                ExemptionRow(item.id, item.network, tuple(sorted(item.categories)), source, item.note) for item in items
            ]
        print_rows(args.format, ExemptionRow, rows, EXEMPTION_TABLE, ZoneInfo(config.policy.timezone))
        return 0

    return action


def exemptions_remove(args: argparse.Namespace, config: Config) -> StoreAction:
    async def action(store: PolicyStore) -> int:
        await store.remove_exemption(args.id, args.actor)
        print(f"{args.id} removed")
        return 0

    return action
