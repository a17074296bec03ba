"""The service catalogue: what a department approves is a service (WhatsApp), not a list of hosts.

The guidelines name services and personal accounts — WhatsApp and WeChat on the web and the desktop, personal
e-mail, public cloud storage — so an approval, a block page and a report speak of a service. A service holds
everything its clients need: the web client's hosts, media/CDN/API hosts, the desktop clients' endpoints, the
IP ranges they connect to by address, path rules on hosts it shares with another service (iCloud Mail is
`www.icloud.com/mail`), and the vendor whose tenant-restriction header keeps personal accounts out, if it has one.

The catalogue ships as `policy/data/services/<category>.yaml` (sources and a check date per service); admins add
services and override shipped ones by id in the store. This module parses and checks records; the in-memory
index is `policy.state.ServiceCatalogue`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date
from functools import lru_cache
from importlib import resources
from typing import Literal

import msgspec
import yaml

from .categories import parse_host_entry, parse_list_entry, parse_range_entry, validate_category
from .hosts import is_ip_literal
from .rules import normalise_path_prefix

_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml's, where PyYAML has it: ~10x faster
SERVICE_ID_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}\Z")
SERVICES_DIR = ("data", "services")
Origin = Literal["shipped", "admin"]


class ServiceError(ValueError):
    """A service record that cannot be used; the message names the service and the field."""


@dataclass(frozen=True, slots=True)
class PathEntry:
    """A path under a host the service shares with others: `www.icloud.com` + `/mail` is iCloud Mail."""

    host: str
    path: str


@dataclass(frozen=True, slots=True)
class Service:
    id: str
    name_en: str
    name_zh: str
    category: str
    web: tuple[str, ...] = ()  # the web client, sign-in, links
    media: tuple[str, ...] = ()  # media, CDN, API and upload hosts
    desktop: tuple[str, ...] = ()  # hosts only the desktop (and mobile) clients use
    ranges: tuple[str, ...] = ()  # CIDR ranges the clients reach by address
    paths: tuple[PathEntry, ...] = ()
    tenant: str | None = None  # the tenant-restriction vendor (policy.tenants), e.g. "google"
    sources: tuple[str, ...] = ()
    checked: str = ""  # ISO date the entries were last checked against the sources
    note: str = ""
    origin: Origin = "shipped"
    disabled: bool = False  # an admin override that switches a shipped service off

    @property
    def entries(self) -> tuple[str, ...]:
        """Every list entry of the service (hosts and ranges); path entries are rules, not entries."""
        return (*self.web, *self.media, *self.desktop, *self.ranges)

    def name(self, language: str) -> str:
        return self.name_zh if language.startswith("zh") else self.name_en

    def to_json(self) -> str:
        return msgspec.json.encode(_Record.from_service(self)).decode()

    @classmethod
    def from_json(cls, text: str | bytes) -> Service:
        return _Record.decode(text, "store").to_service("admin")


class _Path(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    host: str
    path: str


class _Record(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The file and store shape of a service; `to_service` checks and canonicalises every value."""

    id: str
    name_en: str
    name_zh: str
    checked: date | None = None  # ISO in the files and the store
    sources: tuple[str, ...] = ()
    web: tuple[str, ...] = ()
    media: tuple[str, ...] = ()
    desktop: tuple[str, ...] = ()
    ranges: tuple[str, ...] = ()
    paths: tuple[_Path, ...] = ()
    tenant: str | None = None
    note: str = ""
    category: str | None = None  # in a catalogue file the file's category; in the store, the record's own
    origin: str = "admin"
    disabled: bool = False

    @classmethod
    def decode(cls, text: str | bytes, where: str) -> _Record:
        try:
            return msgspec.json.decode(text, type=cls)
        except msgspec.DecodeError as error:  # not JSON, or not a service (ValidationError is a DecodeError)
            raise ServiceError(f"{where}: {error}") from None

    @classmethod
    def from_service(cls, service: Service) -> _Record:
        return cls(
            id=service.id,
            name_en=service.name_en,
            name_zh=service.name_zh,
            checked=date.fromisoformat(service.checked) if service.checked else None,
            sources=service.sources,
            web=service.web,
            media=service.media,
            desktop=service.desktop,
            ranges=service.ranges,
            paths=tuple(_Path(p.host, p.path) for p in service.paths),
            tenant=service.tenant,
            note=service.note,
            category=service.category,
            origin=service.origin,
            disabled=service.disabled,
        )

    def to_service(self, origin: Origin, category: str | None = None) -> Service:
        where = f"service {self.id!r}"
        if not SERVICE_ID_RE.match(self.id):
            raise ServiceError(f"{where}: an id is lower-case letters, digits and '-' (at most 63)")
        category = category or self.category
        if not category:
            raise ServiceError(f"{where}: no category")
        try:
            validate_category(category)
            paths = tuple(_path_entry(p.host, p.path) for p in self.paths)
        except ValueError as error:
            raise ServiceError(f"{where}: {error}") from None
        if not self.name_en.strip() or not self.name_zh.strip():
            raise ServiceError(f"{where}: name_en and name_zh are both required")
        return Service(
            id=self.id,
            name_en=self.name_en.strip(),
            name_zh=self.name_zh.strip(),
            category=category,
            web=_hosts(self.web, where, "web"),
            media=_hosts(self.media, where, "media"),
            desktop=_hosts(self.desktop, where, "desktop"),
            ranges=_ranges(self.ranges, where),
            paths=paths,
            tenant=self.tenant or None,
            sources=tuple(self.sources),
            checked=self.checked.isoformat() if self.checked else "",
            note=self.note,
            origin=origin,
            disabled=self.disabled,
        )


def _hosts(values: Iterable[str], where: str, role: str) -> tuple[str, ...]:
    hosts = []
    for text in values:
        host = parse_list_entry(str(text))
        if host is None or "/" in host:
            raise ServiceError(f"{where}: {role} entry {text!r} is not a host name or address")
        hosts.append(host)
    return tuple(hosts)


def _ranges(values: Iterable[str], where: str) -> tuple[str, ...]:
    ranges = []
    for text in values:
        entry = parse_range_entry(str(text))
        if entry is None:
            raise ServiceError(f"{where}: range {text!r} is not a CIDR range (ADDRESS/PREFIX-LENGTH)")
        ranges.append(entry)
    return tuple(ranges)


def _path_entry(host_text: str, path: str) -> PathEntry:
    host = parse_host_entry(host_text)
    if host is None or is_ip_literal(host):
        raise ValueError(f"path entry host {host_text!r} is not a host name")
    return PathEntry(host, normalise_path_prefix(path))


class _File(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    category: str
    services: tuple[_Record, ...] = field(default=())


def parse_catalogue(text: str, where: str) -> tuple[Service, ...]:
    """One catalogue file (YAML); ServiceError naming the file and the service at fault."""
    try:
        document = msgspec.convert(yaml.load(text, Loader=_LOADER), type=_File, strict=False)
    except (yaml.YAMLError, msgspec.ValidationError) as error:
        raise ServiceError(f"{where}: {error}") from None
    try:
        return tuple(record.to_service("shipped", document.category) for record in document.services)
    except ServiceError as error:
        raise ServiceError(f"{where}: {error}") from None


@lru_cache(maxsize=1)
def shipped_catalogue() -> tuple[Service, ...]:
    """Every shipped service, in file then file order (read once per process: the files ship with the code)."""
    folder = resources.files("policy").joinpath(*SERVICES_DIR)
    services: list[Service] = []
    for item in sorted(folder.iterdir(), key=lambda entry: entry.name):
        if item.name.endswith(".yaml"):
            services += parse_catalogue(item.read_text(encoding="utf-8"), f"policy/data/services/{item.name}")
    return tuple(services)


def default_list(category: str) -> list[str]:
    """The curated list of one category: the entries of its shipped services (what a new store is seeded with).

    FileNotFoundError for a category the catalogue has no services of (one an admin invented, or `protected`:
    the protected hosts are a never-block list, `policy/data/protected.txt`, no category's).
    """
    entries = [entry for service in shipped_catalogue() if service.category == category for entry in service.entries]
    if not entries:
        raise FileNotFoundError(f"no shipped services in category {category!r}")
    return entries


def service_from_record(record: dict[str, object]) -> Service:
    """An admin's service (from `clearance services add` or a file), checked like a shipped one."""
    return _Record.decode(json.dumps(record), f"service {record.get('id')!r}").to_service("admin")
