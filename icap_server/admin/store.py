"""`clearance store …`: the store itself: where it is, its identity, a deliberate wipe, the embedded server.

Why a command of its own: a store that loses its data by accident (FLUSHALL, an empty Redis in its place)
is re-initialised by the workers, who keep blocking meanwhile; a store emptied on purpose must say so, or
the workers would treat it as an accident. `store reset --yes` is that purpose: audited, announced, and
adopted by every worker even when it leaves no lists.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from zoneinfo import ZoneInfo

from icap_server.admin.output import Line, add_format, print_record
from icap_server.admin.support import (
    Commands,
    StoreAction,
    UsageError,
    add_group,
    embedded_directory,
    redis_url,
)
from icap_server.config import Config
from icap_server.service.defaults import default_seed, refresh_curated
from policy.store import PolicyStore
from policy.store.embedded import stop_embedded_redis


def register(commands: Commands) -> None:
    store = add_group(commands, "store", "the policy store: status, initialisation, a deliberate reset")
    status = store.add_parser("status", help="where the store is, its identity and what it holds")
    add_format(status)
    status.set_defaults(handler=store_status)
    init = store.add_parser("init", help="create the store (embedded) and load the default lists, once")
    init.set_defaults(handler=store_init)
    reset = store.add_parser("reset", help="empty the policy (approvals, lists, directory, rules); audited")
    reset.add_argument("--yes", action="store_true", help="yes, empty it (required)")
    reset.add_argument("--no-defaults", action="store_true", help="leave it empty: do not load the default lists")
    reset.set_defaults(handler=store_reset)
    store.add_parser("stop", help="stop the embedded redis-server").set_defaults(handler=store_stop)


def _seeded(seeded: dict[str, int]) -> str:
    return ", ".join(f"{category} {entries}" for category, entries in seeded.items()) or "no lists"


@dataclass(frozen=True)
class StatusRecord:
    """`store status`: where the store is (`embedded_dir` only for the embedded one), its identity (no epoch:
    not initialised; `epoch_at` as the store wrote it, ISO 8601 UTC), and what it holds (`lists`: entries
    per category)."""

    store: str  # configured (redis.url) or embedded
    embedded_dir: str | None
    epoch: str | None
    epoch_origin: str | None
    epoch_at: str | None
    epoch_by: str | None
    version: int
    lists: dict[str, int]
    approvals: int
    people: int


STATUS_TABLE = (
    Line("store", "embedded, in {embedded_dir}", when="embedded_dir", otherwise="redis.url (configured)"),
    Line(
        "epoch", "{epoch} ({epoch_origin} {epoch_at} by {epoch_by})", when="epoch", otherwise="none (not initialised)"
    ),
    Line("version", "{version}"),
    Line("lists", "{lists}", when="lists", otherwise="no lists"),
    Line("approvals", "{approvals}"),
    Line("people", "{people}"),
)


def store_status(args: argparse.Namespace, config: Config) -> StoreAction:
    async def action(store: PolicyStore) -> int:
        status = await store.store_status()
        epoch = status.epoch
        record = StatusRecord(
            store="configured" if config.redis.url else "embedded",
            embedded_dir=None if config.redis.url else str(embedded_directory(config)),
            epoch=epoch.id if epoch else None,
            epoch_origin=epoch.origin if epoch else None,
            epoch_at=epoch.at if epoch else None,
            epoch_by=epoch.by if epoch else None,
            version=status.version,
            lists=dict(status.entries),
            approvals=status.approvals,
            people=status.people,
        )
        print_record(args.format, record, STATUS_TABLE, ZoneInfo(config.policy.timezone))
        return 0

    return action


def store_init(args: argparse.Namespace, config: Config) -> StoreAction:
    redis_url(config, create=True)  # the embedded server, started here (the action then finds it)

    async def action(store: PolicyStore) -> int:
        initialised = await store.initialise(default_seed(config), args.actor)
        if initialised is None:
            epoch, _ = await store.identity()
            print(f"already initialised (epoch {epoch.id if epoch else '?'}); nothing changed")
        else:
            print(f"initialised: epoch {initialised.epoch.id}; loaded {_seeded(initialised.seeded)}")
        replaced = await refresh_curated(store, config, args.actor)  # an upgrade's shipped lists
        if replaced is not None:
            print(f"curated lists replaced by the installed ones: {_seeded(replaced.entries)}")
        return 0

    return action


def store_reset(args: argparse.Namespace, config: Config) -> StoreAction:
    if not args.yes:
        raise UsageError("store reset empties every approval, list, rule, exemption, request and the directory; "
                         "add --yes to do it")  # fmt: skip
    seed = {} if args.no_defaults else default_seed(config)

    async def action(store: PolicyStore) -> int:
        reset = await store.reset(seed, args.actor)
        print(f"reset: new epoch {reset.epoch.id} (version {reset.version}); loaded {_seeded(reset.seeded)}")
        return 0

    return action


def store_stop(args: argparse.Namespace, config: Config) -> int:
    if config.redis.url:
        raise UsageError("store stop: the store is not embedded (redis.url is set); stop that Redis itself")
    directory: Path = embedded_directory(config)
    pid = stop_embedded_redis(directory)
    print(f"stopped the embedded redis-server {pid} in {directory}" if pid else f"none runs in {directory}")
    return 0
