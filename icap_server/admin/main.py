"""The `clearance` command: run the filter, and manage categories and approvals.

Bad input gets one clear line on stderr and exit code 2, and nothing is written: every argument and every
line of a list file is checked before the first write to Redis.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from icap_server import __version__
from icap_server.admin import approvals as lifecycle_commands
from icap_server.admin import audit as audit_report
from icap_server.admin import blockpages as blockpages_command
from icap_server.admin import requests as requests_command
from icap_server.admin.imports import add_arguments as add_import_arguments
from icap_server.admin.imports import categories_import
from icap_server.admin.support import StoreAction, UsageError, print_table
from icap_server.config import Config, ConfigError, load_config, parse_listen
from icap_server.runtime.embedded_redis import EmbeddedRedisError, ensure_embedded_redis
from icap_server.runtime.logs import configure_logging
from policy.categories import ListError, parse_host_entry, parse_host_list, validate_category
from policy.rules import normalise_path_prefix
from policy.store import PolicyStore, StoreError, StoreUnavailable

EXIT_USAGE = 2
EXIT_UNAVAILABLE = 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="clearance",
        description="ICAP web-content filter: restricted categories pass only with a department head's approval.",
    )
    parser.add_argument("--version", action="version", version=f"clearance {__version__}")
    parser.add_argument("--config", metavar="PATH", help="config file (default: $CLEARANCE_CONFIG, ./config.yaml)")
    parser.add_argument("--redis", metavar="URL", help="Redis URL (default: $CLEARANCE_REDIS_URL, redis.url, embedded)")
    parser.add_argument(
        "--actor",
        default=default_actor(),
        help="who is making changes, for the audit trail (default: $CLEARANCE_ACTOR, login name)",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser("serve", help="run the ICAP server")
    serve.add_argument("--listen", metavar="HOST:PORT", help="address to listen on (default: server.listen)")
    serve.add_argument(
        "--workers", type=int, metavar="N", help="server processes sharing the port (default: server.workers)"
    )

    categories = commands.add_parser("categories", help="manage category lists").add_subparsers(
        dest="action", required=True, metavar="ACTION"
    )
    add = categories.add_parser("add", help="add hosts to a category")
    add.add_argument("category")
    add.add_argument("hosts", nargs="+", metavar="HOST")
    load = categories.add_parser("load", help="add every host of a list file (one per line, # comments)")
    load.add_argument("category")
    load.add_argument("file", type=Path)
    lookup = categories.add_parser("lookup", help="show which list entry and categories govern a URL or host")
    lookup.add_argument("url")
    categories.add_parser("stats", help="entries per category")
    add_import_arguments(
        categories.add_parser("import", help="import UT1 / squidGuard trees, host,category CSV or host lists")
    )

    lifecycle_commands.add_parsers(commands)
    audit_report.add_parsers(commands)
    requests_command.add_parsers(commands)

    rules = commands.add_parser("rules", help="URL rules: allow-list entries and path rules").add_subparsers(
        dest="action", required=True, metavar="ACTION"
    )
    allow = rules.add_parser("allow", help="let a host (or a path under it) through whatever its categories")
    allow.add_argument("host")
    allow.add_argument("--path", default="/", help="path prefix (default: the whole host)")
    allow.add_argument("--note", default="", help="why, e.g. 'department mail on Google Workspace'")
    path_rule = rules.add_parser("category", help="put a path prefix of a host under a category")
    path_rule.add_argument("host")
    path_rule.add_argument("--path", required=True, help="path prefix, e.g. /personal")
    path_rule.add_argument("--category", required=True)
    path_rule.add_argument("--note", default="")
    rules.add_parser("list", help="list URL rules")
    remove_rule = rules.add_parser("remove", help="remove a URL rule")
    remove_rule.add_argument("id")

    blockpages_command.add_parsers(commands)

    explain = commands.add_parser("explain", help="the decision for a URL and why (same path as serve)")
    explain.add_argument("url")
    explain.add_argument("--user")
    explain.add_argument("--client-ip")
    return parser


def default_actor() -> str:
    import getpass
    import os

    try:
        return os.environ.get("CLEARANCE_ACTOR") or getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        config = load_config(args.config, args.redis)
        return run(args, config)
    except (UsageError, ConfigError, EmbeddedRedisError, StoreError) as error:
        print(f"clearance: {error}", file=sys.stderr)
        return EXIT_USAGE
    except StoreUnavailable as error:
        print(f"clearance: Redis is not reachable: {error}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    except KeyboardInterrupt:
        return 130


def run(args: argparse.Namespace, config: Config) -> int:
    if args.command == "serve":
        from blockpages.render import check_templates
        from icap_server.runtime.serve import run_server

        listen = args.listen or config.server.listen
        try:
            host, port = parse_listen(listen)
        except ValueError as error:
            raise UsageError(f"--listen: {error}") from None
        workers = config.server.workers if args.workers is None else args.workers
        if workers < 0:
            raise UsageError(f"--workers must be 0 (one per core) or more, got {workers}")
        check_templates(config)  # a broken block-page template stops the start, naming the file and line
        configure_logging(config.logging.level, config.logging.format)
        return run_server(config, redis_url(config), host, port, workers)
    if args.command == "blockpages":
        return blockpages_command.run(args, config)
    handler = HANDLERS[(args.command, getattr(args, "action", None))]
    prepared = handler(args, config)  # validates everything before any connection is made
    # Admin commands log their changes (the audit lines) to stderr; stdout stays the command's answer.
    configure_logging(config.logging.level, config.logging.format, stream=sys.stderr)
    return asyncio.run(with_store(config, prepared))


def redis_url(config: Config) -> str:
    return config.redis.url or ensure_embedded_redis(config.redis.embedded_dir)


async def with_store(config: Config, action: StoreAction) -> int:
    store = PolicyStore.from_url(redis_url(config), config.redis.key_prefix)
    try:
        return await action(store)
    finally:
        await store.close()


# ---- categories ----------------------------------------------------------------------------


def checked_category(name: str) -> str:
    try:
        return validate_category(name)
    except ValueError as error:
        raise UsageError(str(error)) from None


def categories_add(args: argparse.Namespace, config: Config) -> StoreAction:
    category = checked_category(args.category)
    hosts = []
    for text in args.hosts:
        host = parse_host_entry(text)
        if host is None:
            raise UsageError(f"{text!r} is not a host name or IP address")
        hosts.append(host)
    return lambda store: report_added(store, category, hosts, args.actor, "categories-add")


def categories_load(args: argparse.Namespace, config: Config) -> StoreAction:
    category = checked_category(args.category)
    try:
        with args.file.open(encoding="utf-8") as handle:
            hosts = parse_host_list(handle)
    except OSError as error:
        raise UsageError(f"{args.file}: {error.strerror or error}") from None
    except UnicodeDecodeError:
        raise UsageError(f"{args.file}: not UTF-8 text") from None
    except ListError as error:
        raise UsageError(f"{args.file}: {error}") from None
    return lambda store: report_added(store, category, hosts, args.actor, "categories-load")


async def report_added(store: PolicyStore, category: str, hosts: list[str], actor: str, action: str) -> int:
    added = await store.add_hosts(category, hosts, actor=actor, action=action)
    print(f"{category}: {added} added, {len(hosts) - added} already listed")
    return 0


def categories_lookup(args: argparse.Namespace, config: Config) -> StoreAction:
    from policy.hosts import request_host

    target = args.url if "://" in args.url else f"http://{args.url}/"
    host = request_host("GET", target, None)
    if host is None:
        raise UsageError(f"cannot find a host in {args.url!r}")

    async def action(store: PolicyStore) -> int:
        match = await store.lookup_categories(host)
        if match.entry is None:
            print(f"{host}: no category")
        else:
            print(f"{host}: {', '.join(sorted(match.categories))} (list entry {match.entry})")
        return 0

    return action


def categories_stats(args: argparse.Namespace, config: Config) -> StoreAction:
    async def action(store: PolicyStore) -> int:
        for name, size in (await store.category_sizes()).items():
            print(f"{name}\t{size}")
        return 0

    return action


# ---- explain -------------------------------------------------------------------------------


def explain(args: argparse.Namespace, config: Config) -> StoreAction:
    from icap_server.service.explain import explain_request

    url = args.url if "://" in args.url else f"http://{args.url}/"
    user = args.user
    if user and config.identity.username_encoding == "base64":
        user = base64.b64encode(user.encode()).decode()

    async def action(store: PolicyStore) -> int:
        for line in await explain_request(config, store, url, user, args.client_ip):
            print(line)
        return 0

    return action


# ---- rules -------------------------------------------------------------------------------


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

    async def action(store: PolicyStore) -> int:
        rule = await store.add_rule("allow", host, path, None, args.note.strip(), actor=args.actor)
        print(rule.id)
        return 0

    return action


def rules_category(args: argparse.Namespace, config: Config) -> StoreAction:
    host, path = _rule_target(args)
    category = checked_category(args.category)

    async def action(store: PolicyStore) -> int:
        rule = await store.add_rule("category", host, path, category, args.note.strip(), actor=args.actor)
        print(rule.id)
        return 0

    return action


def rules_list(args: argparse.Namespace, config: Config) -> StoreAction:
    async def action(store: PolicyStore) -> int:
        rows = [("ID", "RULE", "NOTE")]
        rows += [(rule.id, rule.describe(), rule.note) for rule in await store.list_rules()]
        print_table(rows)
        return 0

    return action


def rules_remove(args: argparse.Namespace, config: Config) -> StoreAction:
    async def action(store: PolicyStore) -> int:
        await store.remove_rule(args.id, actor=args.actor)
        print(f"{args.id} removed")
        return 0

    return action


HANDLERS: dict[tuple[str, str | None], Callable[[argparse.Namespace, Config], StoreAction]] = {
    ("categories", "add"): categories_add,
    ("categories", "load"): categories_load,
    ("categories", "lookup"): categories_lookup,
    ("categories", "stats"): categories_stats,
    ("categories", "import"): categories_import,
    **lifecycle_commands.HANDLERS,
    **audit_report.HANDLERS,
    **requests_command.HANDLERS,
    ("rules", "allow"): rules_allow,
    ("rules", "category"): rules_category,
    ("rules", "list"): rules_list,
    ("rules", "remove"): rules_remove,
    ("explain", None): explain,
}
