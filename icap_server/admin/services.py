"""`clearance services …`: the service catalogue — what an approval, a block page and a report name.

`list` and `show` read the shipped catalogue with the admins' records over it; `add` stores an admin's service
(a new id, or a shipped id to override its definition), `remove` drops an admin's record (an overridden
shipped service is itself again). Every value is checked before anything is written.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path
from zoneinfo import ZoneInfo

import yaml

from icap_server.admin.output import Line, add_format, print_record, print_rows
from icap_server.admin.support import Commands, StoreAction, UsageError, add_group
from icap_server.config import Config
from icap_server.service.catalogue import shipped_services
from policy.services import Service, ServiceError, service_from_record
from policy.state import ServiceCatalogue
from policy.store import PolicyStore

ROLES = ("web", "media", "desktop", "ranges")


def register(commands: Commands) -> None:
    services = add_group(commands, "services", "the service catalogue: list, show, add or override, remove")
    listing = services.add_parser("list", help="every service, with its category and entry counts")
    listing.add_argument("--category", help="only this category's services")
    add_format(listing)
    listing.set_defaults(handler=services_list)
    show = services.add_parser("show", help="one service in full: names, hosts by role, ranges, paths, sources")
    show.add_argument("id")
    add_format(show)
    show.set_defaults(handler=services_show)
    add = services.add_parser("add", help="add a service, or override a shipped one with the same id")
    add.add_argument("id")
    add.add_argument("--file", type=Path, help="the service as YAML or JSON (the catalogue's fields)")
    add.add_argument("--name-en")
    add.add_argument("--name-zh")
    add.add_argument("--category")
    for role in ("web", "media", "desktop"):
        add.add_argument(f"--{role}", action="append", default=[], metavar="HOST", help=f"a {role} host (repeat)")
    add.add_argument("--range", dest="ranges", action="append", default=[], metavar="CIDR")
    add.add_argument("--path", action="append", default=[], metavar="HOST/PATH", help="a path on a shared host")
    add.add_argument("--tenant", help="tenant-restriction vendor: google, microsoft, dropbox, slack, zoom, webex")
    add.add_argument("--source", dest="sources", action="append", default=[], help="where the entries come from")
    add.add_argument("--note", default="")
    add.add_argument("--disable", action="store_true", help="switch a shipped service off (its entries stop blocking)")
    add.set_defaults(handler=services_add)
    remove = services.add_parser("remove", help="remove an admin's service (or override)")
    remove.add_argument("id")
    remove.set_defaults(handler=services_remove)


async def catalogue(config: Config, store: PolicyStore) -> ServiceCatalogue:
    """What the workers hold: the shipped services first, the store's records over them."""
    return ServiceCatalogue((*shipped_services(config), *await store.admin_services()))


@dataclass(frozen=True)
class ServiceRow:
    """One service as `services list` shows it: the table counts the hosts of each role, CSV and JSON list them."""

    id: str
    name_en: str
    name_zh: str
    category: str
    web: tuple[str, ...]
    media: tuple[str, ...]
    desktop: tuple[str, ...]
    ranges: tuple[str, ...]
    origin: str  # shipped or admin


SERVICE_TABLE = (
    Line("id", "{id}"),
    Line("name", "{name_en}"),
    Line("名稱", "{name_zh}"),
    Line("category", "{category}"),
    *(Line(role, f"{{{role}:count}}") for role in ROLES),
    Line("origin", "{origin}"),
)


@dataclass(frozen=True)
class ServiceRecord:
    """One service in full, as `services show` shows it; `paths` are HOST/PATH entries on shared hosts."""

    id: str
    name_en: str
    name_zh: str
    category: str
    origin: str
    web: tuple[str, ...]
    media: tuple[str, ...]
    desktop: tuple[str, ...]
    ranges: tuple[str, ...]
    paths: tuple[str, ...]
    tenant: str | None
    checked: str | None  # ISO date the entries were last checked against the sources
    sources: tuple[str, ...]
    note: str | None


SERVICE_LINES = (
    Line("id", "{id}"),
    Line("name", "{name_en} / {name_zh}"),
    Line("category", "{category}"),
    Line("origin", "{origin}"),
    *(Line(role, f"{{{role}: }}") for role in ROLES),
    Line("paths", "{paths: }"),
    Line("tenant", "{tenant}"),
    Line("checked", "{checked}"),
    Line("sources", "{sources:; }"),
    Line("note", "{note}", when="note"),
)


def services_list(args: argparse.Namespace, config: Config) -> StoreAction:
    async def action(store: PolicyStore) -> int:
        services = [s for s in (await catalogue(config, store)).active() if args.category in (None, s.category)]
        services.sort(key=lambda service: (service.category, service.id))
        rows = [
            ServiceRow(s.id, s.name_en, s.name_zh, s.category, s.web, s.media, s.desktop, s.ranges, s.origin)
            for s in services
        ]
        print_rows(args.format, ServiceRow, rows, SERVICE_TABLE, ZoneInfo(config.policy.timezone))
        return 0

    return action


def services_show(args: argparse.Namespace, config: Config) -> StoreAction:
    async def action(store: PolicyStore) -> int:
        service = (await catalogue(config, store)).get(args.id)
        if service is None:
            raise UsageError(f"no service {args.id!r} (`clearance services list`)")
        print_record(args.format, describe(service), SERVICE_LINES, ZoneInfo(config.policy.timezone))
        return 0

    return action


def describe(service: Service) -> ServiceRecord:
    return ServiceRecord(
        id=service.id,
        name_en=service.name_en,
        name_zh=service.name_zh,
        category=service.category,
        origin=service.origin,
        web=service.web,
        media=service.media,
        desktop=service.desktop,
        ranges=service.ranges,
        paths=tuple(f"{path.host}{path.path}" for path in service.paths),
        tenant=service.tenant or None,
        checked=service.checked or None,
        sources=service.sources,
        note=service.note or None,
    )


def services_add(args: argparse.Namespace, config: Config) -> StoreAction:
    record = _file_record(args.file) if args.file else {}
    record["id"] = args.id
    flags = {"name_en": args.name_en, "name_zh": args.name_zh, "category": args.category, "tenant": args.tenant}
    record.update({key: value for key, value in flags.items() if value})
    for role in (*ROLES, "sources"):
        values = getattr(args, role)
        if values:
            record[role] = [*_listed(record.get(role)), *values]
    if args.path:
        record["paths"] = [*_listed(record.get("paths")), *(_path(text) for text in args.path)]
    if args.note:
        record["note"] = args.note
    record["origin"] = "admin"
    shipped = {s.id: s for s in shipped_services(config)}
    if args.disable:
        if args.id not in shipped:
            raise UsageError(f"--disable: {args.id!r} is not a shipped service (remove an admin's with `remove`)")
        base = json.loads(shipped[args.id].to_json())
        record = {**{key: base[key] for key in ("id", "name_en", "name_zh", "category")}, "disabled": True}
        record.update(origin="admin", note=args.note)
    try:
        service = service_from_record(record)
    except ServiceError as error:
        raise UsageError(str(error)) from None
    if not service.entries and not service.paths and not service.disabled:
        raise UsageError(f"service {service.id!r}: give at least one host, range or path")

    async def action(store: PolicyStore) -> int:
        await store.put_service(service, args.actor)
        said = "overrides the shipped service" if service.id in shipped else "added"
        if service.disabled:
            said = "switched off (its shipped entries no longer block)"
        print(f"{service.id} {said}: {len(service.entries)} entries, {len(service.paths)} paths")
        return 0

    return action


def _file_record(path: Path) -> dict[str, object]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))  # JSON is YAML
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
        raise UsageError(f"{path}: {error}") from None
    if not isinstance(data, dict):
        raise UsageError(f"{path}: expected one service (a mapping of its fields)")
    return {str(key): value for key, value in data.items()}


def _listed(value: object) -> list[object]:
    """A field from the file that the flags add to: a list, or nothing (a wrong type is the record's check)."""
    return list(value) if isinstance(value, list) else [] if value is None else [value]


def _path(text: str) -> dict[str, str]:
    host, slash, path = text.partition("/")
    if not slash or not host:
        raise UsageError(f"--path: expected HOST/PATH, e.g. www.icloud.com/mail, got {text!r}")
    return {"host": host, "path": "/" + path}


def services_remove(args: argparse.Namespace, config: Config) -> StoreAction:
    async def action(store: PolicyStore) -> int:
        if args.id not in {service.id for service in await store.admin_services()}:
            shipped = any(service.id == args.id for service in shipped_services(config))
            why = "a shipped service: override it with `services add`" if shipped else "no such service"
            raise UsageError(f"{args.id!r} has no admin record ({why})")
        await store.remove_service(args.id, args.actor)
        print(f"{args.id} removed")
        return 0

    return action
