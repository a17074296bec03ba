"""`clearance rules …`: URL rules, for what host lists cannot say (an allow-list entry, a path of a shared host)."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from zoneinfo import ZoneInfo

from icap_server.admin.output import Line, add_format, print_rows
from icap_server.admin.support import Commands, StoreAction, UsageError, add_group, checked_category
from icap_server.config import Config
from policy.categories import parse_host_entry
from policy.rules import RuleKind, normalise_path_prefix
from policy.store import PolicyStore


def register(commands: Commands) -> None:
    rules = add_group(commands, "rules", "URL rules: allow-list entries and path rules")
    allow = rules.add_parser("allow", help="let a host (or a path under it) through whatever its categories")
    allow.add_argument("host")
    allow.add_argument("--path", default="/", help="path prefix (default: the whole host)")
    allow.add_argument("--note", default="", help="why, e.g. 'department mail on Google Workspace'")
    allow.set_defaults(handler=rules_allow)
    path_rule = rules.add_parser("category", help="put a path prefix of a host under a category")
    path_rule.add_argument("host")
    path_rule.add_argument("--path", required=True, help="path prefix, e.g. /personal")
    path_rule.add_argument("--category", required=True)
    path_rule.add_argument("--note", default="")
    path_rule.set_defaults(handler=rules_category)
    listing = rules.add_parser("list", help="list URL rules")
    add_format(listing)
    listing.set_defaults(handler=rules_list)
    remove_rule = rules.add_parser("remove", help="remove a URL rule")
    remove_rule.add_argument("id")
    remove_rule.set_defaults(handler=rules_remove)


def _rule_target(args: argparse.Namespace) -> tuple[str, str]:
    host = parse_host_entry(args.host)
    if host is None:
        raise UsageError(f"{args.host!r} is not a host name or IP address")
    try:
        return host, normalise_path_prefix(args.path)
    except ValueError as error:
        raise UsageError(f"--path: {error}") from None


def rules_allow(args: argparse.Namespace, config: Config) -> StoreAction:
    host, path = _rule_target(args)
    return _add_rule("allow", host, path, None, args)


def rules_category(args: argparse.Namespace, config: Config) -> StoreAction:
    host, path = _rule_target(args)
    return _add_rule("category", host, path, checked_category(args.category), args)


def _add_rule(kind: RuleKind, host: str, path: str, category: str | None, args: argparse.Namespace) -> StoreAction:
    """Both kinds of rule are added alike, and print the new rule's id."""

    async def action(store: PolicyStore) -> int:
        rule = await store.add_rule(kind, host, path, category, args.note.strip(), actor=args.actor)
        print(rule.id)
        return 0

    return action


@dataclass(frozen=True)
class RuleRow:
    """One URL rule as `rules list` shows it; `rule` is the table's summary of kind, host, path and category."""

    id: str
    kind: str
    host: str
    path: str
    category: str | None
    rule: str
    note: str


RULE_TABLE = (Line("ID", "{id}"), Line("RULE", "{rule}"), Line("NOTE", "{note}"))


def rules_list(args: argparse.Namespace, config: Config) -> StoreAction:
    async def action(store: PolicyStore) -> int:
        rows = [
            RuleRow(rule.id, rule.kind, rule.host, rule.path_prefix, rule.category, rule.describe(), rule.note)
            for rule in await store.list_rules()
        ]
        print_rows(args.format, RuleRow, rows, RULE_TABLE, ZoneInfo(config.policy.timezone))
        return 0

    return action


def rules_remove(args: argparse.Namespace, config: Config) -> StoreAction:
    async def action(store: PolicyStore) -> int:
        await store.remove_rule(args.id, actor=args.actor)
        print(f"{args.id} removed")
        return 0

    return action
