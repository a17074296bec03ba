"""The policy each serve process holds in memory, so a decision needs no Redis round trip.

`PolicyState` is plain data: the category index (list entry -> categories), every user's approvals, the URL
rules and the policy version they reflect. The sync task keeps it fresh from Redis change notifications;
this module only applies changes, it does no I/O.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field

from .approvals import SUBJECT_RANK, Approval, SubjectKind
from .categories import NO_MATCH, CategoryMatch
from .directory import Directory, Person
from .modes import GraceIndex, ModeTable
from .rules import Rule, RuleIndex
from .services import Service


class CategoryIndex:
    """List entry -> categories. Lookup walks the host's labels: cost independent of the number of entries.

    Category sets are interned, so millions of entries share a handful of frozensets. CIDR entries
    (`149.154.160.0/20`) are entries too, and are also kept in `_ranges`, which only an IP literal host
    consults: an exact address entry wins, then the longest prefix, one dict look-up per prefix length in use.
    """

    __slots__ = ("_interned", "_ranges", "entries")

    def __init__(self) -> None:
        self.entries: dict[str, frozenset[str]] = {}
        self._interned: dict[frozenset[str], frozenset[str]] = {}
        # per address width (32, 128): [(shift, {address >> shift: entry})], longest prefix first
        self._ranges: dict[int, list[tuple[int, dict[int, str]]]] = {}

    def __len__(self) -> int:
        return len(self.entries)

    def _intern(self, categories: frozenset[str]) -> frozenset[str]:
        return self._interned.setdefault(categories, categories)

    def add(self, category: str, hosts: Iterable[str]) -> None:
        entries = self.entries
        single = self._intern(frozenset((category,)))
        for host in hosts:
            current = entries.get(host)
            if current is None:
                entries[host] = single
                if "/" in host:
                    self._add_range(host)
            elif category not in current:
                entries[host] = self._intern(current | single)

    def _add_range(self, entry: str) -> None:
        """Index a canonical CIDR entry by its network bits, under its prefix length."""
        network = ipaddress.ip_network(entry)
        shift = network.max_prefixlen - network.prefixlen
        tables = self._ranges.setdefault(network.max_prefixlen, [])
        for table_shift, table in tables:
            if table_shift == shift:
                table[int(network.network_address) >> shift] = entry
                return
        tables.append((shift, {int(network.network_address) >> shift: entry}))
        tables.sort(key=lambda item: item[0])  # smallest shift = longest prefix first

    def discard(self, category: str, hosts: Iterable[str]) -> None:
        """Take `category` off these entries (an admin's override dropped them from a shipped service)."""
        entries = self.entries
        for host in hosts:
            current = entries.get(host)
            if current is None or category not in current:
                continue
            if len(current) > 1:
                entries[host] = self._intern(current - {category})
                continue
            del entries[host]
            if "/" in host:
                network = ipaddress.ip_network(host)
                shift = network.max_prefixlen - network.prefixlen
                for table_shift, table in self._ranges.get(network.max_prefixlen, ()):
                    if table_shift == shift:
                        table.pop(int(network.network_address) >> shift, None)

    def match(self, host: str) -> CategoryMatch:
        entries = self.entries
        found = entries.get(host)
        if found is not None:
            return CategoryMatch(host, found)
        if ":" in host or host[-1:].isdigit():  # IP literals match exactly or by range; no TLD is all digits
            return self._match_range(host) if self._ranges else NO_MATCH
        position = host.find(".")
        while position >= 0:
            suffix = host[position + 1 :]
            found = entries.get(suffix)
            if found is not None:
                return CategoryMatch(suffix, found)
            position = host.find(".", position + 1)
        return NO_MATCH

    def _match_range(self, host: str) -> CategoryMatch:
        """The most specific range holding this canonical IP address (a name ending in a digit holds none)."""
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return NO_MATCH
        value = int(address)
        for shift, table in self._ranges.get(address.max_prefixlen, ()):
            entry = table.get(value >> shift)
            if entry is not None:
                return CategoryMatch(entry, self.entries[entry])
        return NO_MATCH

    def category_sizes(self) -> dict[str, int]:
        sizes: dict[str, int] = {}
        for categories in self.entries.values():
            for name in categories:
                sizes[name] = sizes.get(name, 0) + 1
        return sizes


class ServiceCatalogue:
    """Services by id, and which service a host (or a path on a shared host) belongs to.

    Built from the shipped catalogue followed by the store's admin records, so an admin's record replaces the
    shipped one with its id. Host look-up is the category index's label walk over service entries (an entry
    "names" its service ids); path entries are category rules whose id is `SERVICE#N`.
    """

    __slots__ = ("by_id", "dropped", "index", "paths")

    def __init__(self, services: Iterable[Service] = ()) -> None:
        self.by_id: dict[str, Service] = {}
        self.dropped: dict[str, set[str]] = {}  # category -> shipped entries an admin override left out
        for service in services:
            previous = self.by_id.get(service.id)
            if previous is not None:
                kept = set(service.entries) if not service.disabled and service.category == previous.category else set()
                self.dropped.setdefault(previous.category, set()).update(set(previous.entries) - kept)
            self.by_id[service.id] = service
        self.index = CategoryIndex()
        rules: list[Rule] = []
        for service in self.active():
            self.index.add(service.id, service.entries)
            # one rule per path entry, its id the service's and the entry's number (a RuleIndex keys rules by id)
            rules += [Rule(f"{service.id}#{n}", "category", p.host, p.path, service.category)
                      for n, p in enumerate(service.paths)]
        self.paths = RuleIndex(rules)

    def __len__(self) -> int:
        return len(self.by_id)

    def active(self) -> list[Service]:
        return [service for service in self.by_id.values() if not service.disabled]

    def get(self, service_id: str | None) -> Service | None:
        service = self.by_id.get(service_id) if service_id else None
        return service if service is not None and not service.disabled else None

    def admin_records(self) -> list[Service]:
        return [service for service in self.by_id.values() if service.origin == "admin"]

    def service_of(self, host: str) -> str | None:
        """The service whose most specific entry governs this host (an admin's first, then by id)."""
        found = self.index.match(host).categories
        if not found:
            return None
        if len(found) == 1:
            return next(iter(found))
        return min(found, key=lambda service_id: (self.by_id[service_id].origin != "admin", service_id))

    def path_rule(self, host: str, path: str) -> tuple[Rule, str] | None:
        """A service's path entry covering host + path, with the service's id; None when none does."""
        rule = self.paths.match(host, path) if self.paths.by_host else None
        return (rule, rule.id.partition("#")[0]) if rule is not None else None

    def apply_to(self, categories: CategoryIndex) -> None:
        """Make the lists agree with the catalogue: each service's entries in its category, overrides' drops out."""
        for category, entries in self.dropped.items():
            categories.discard(category, entries)
        for service in self.active():
            categories.add(service.category, service.entries)


@dataclass(frozen=True, slots=True)
class Exemption:
    """Traffic from these addresses passes without an approval (e.g. government-issued mobile devices)."""

    id: str
    network: str
    categories: frozenset[str] = frozenset()  # empty: every restricted category
    note: str = ""

    def covers(self, client_ip: str | None, category: str) -> bool:
        if not client_ip or (self.categories and category not in self.categories):
            return False
        try:
            return ipaddress.ip_address(client_ip) in ipaddress.ip_network(self.network, strict=False)
        except ValueError:
            return False

    def to_json(self) -> str:
        record = asdict(self)
        record["categories"] = sorted(self.categories)
        return json.dumps(record, ensure_ascii=False, sort_keys=True)

    @classmethod
    def from_json(cls, text: str | bytes) -> Exemption:
        record = json.loads(text)
        record["categories"] = frozenset(record.get("categories", ()))
        return cls(**record)


class ApprovalIndex:
    """All approvals, indexed by subject, so a request's candidates are a few dict look-ups."""

    __slots__ = ("by_department", "by_group", "by_id", "by_user", "networks")

    def __init__(self, approvals: Iterable[Approval] = ()) -> None:
        self.by_id: dict[str, Approval] = {approval.id: approval for approval in approvals}
        self._index()

    def _index(self) -> None:
        self.by_user: dict[str, list[Approval]] = {}
        self.by_group: dict[str, list[Approval]] = {}
        self.by_department: dict[str, list[Approval]] = {}
        self.networks: list[Approval] = []
        tables = {
            SubjectKind.USER: self.by_user,
            SubjectKind.GROUP: self.by_group,
            SubjectKind.DEPARTMENT: self.by_department,
        }
        for approval in self.by_id.values():
            table = tables.get(approval.subject_kind)
            if table is None:
                self.networks.append(approval)
            else:
                table.setdefault(approval.subject, []).append(approval)

    def __len__(self) -> int:
        return len(self.by_id)

    def put_many(self, approvals: Iterable[Approval]) -> None:
        """Add or replace approvals, re-indexing once however many there are (an import sends many)."""
        for approval in approvals:
            self.by_id[approval.id] = approval
        self._index()

    def remove(self, approval_id: str) -> None:
        if self.by_id.pop(approval_id, None) is not None:
            self._index()

    def candidates(self, user: str | None, person: Person | None, client_ip: str | None) -> list[Approval]:
        """Every approval whose subject includes this request, most specific subject first."""
        found: list[Approval] = []
        if user:
            found += self.by_user.get(user, ())
        if person is not None:
            for group in person.groups:
                found += self.by_group.get(group, ())
            found += self.by_department.get(person.department, ())
        if client_ip and self.networks:
            found += [approval for approval in self.networks if approval.applies_to_network(client_ip)]
        if len(found) > 1:
            found.sort(key=lambda approval: SUBJECT_RANK[approval.subject_kind])
        return found


@dataclass(frozen=True, slots=True)
class StoreEpoch:
    """The identity of one store: written once, with the default lists, when the store is initialised.

    A worker compares it with the epoch its policy came from: a store whose epoch vanished (emptied, or
    replaced by an empty Redis) is not the store the policy came from, and an empty list there is no reason
    to stop blocking. `origin` is "initialised" (the first start, or an automatic re-seed) or "reset" (an
    admin's deliberate `clearance store reset`, whose result workers adopt even when it holds no lists).
    """

    id: str
    at: str
    origin: str = "initialised"
    by: str = ""

    @property
    def deliberate(self) -> bool:
        return self.origin == "reset"

    def to_json(self) -> str:
        return json.dumps(asdict(self), ensure_ascii=False, sort_keys=True)

    @classmethod
    def from_json(cls, text: str | bytes) -> StoreEpoch:
        """The stored marker; ValueError if it is not one (a hand-written key is not a store identity)."""
        try:
            record = json.loads(text)
            return cls(id=str(record["id"]), at=str(record["at"]), origin=str(record["origin"]), by=str(record["by"]))
        except (ValueError, KeyError, TypeError) as error:
            raise ValueError(f"not a store epoch: {str(text)[:80]!r}") from error


@dataclass
class PolicyState:
    version: int = 0
    epoch: StoreEpoch | None = None  # the store identity it was loaded from (None: an uninitialised store)
    categories: CategoryIndex = field(default_factory=CategoryIndex)
    approvals: ApprovalIndex = field(default_factory=ApprovalIndex)
    rules: RuleIndex = field(default_factory=RuleIndex)
    directory: Directory = field(default_factory=Directory)
    exemptions: tuple[Exemption, ...] = ()
    services: ServiceCatalogue = field(default_factory=ServiceCatalogue)
    modes: ModeTable = field(default_factory=ModeTable)  # the roll-out modes set in the store (over the config's)
    graces: GraceIndex = field(default_factory=GraceIndex)  # the caution pages' "continue"s in force

    def department_of(self, user: str | None) -> str | None:
        person = self.directory.person(user)
        return person.department if person is not None else None

    def match_listed(self, host: str, path: str) -> tuple[CategoryMatch, str | None]:
        """What the lists say of host + path: a service's path entry on a shared host (with that service), else
        the most specific list entry (its service, when wanted, is `services.service_of`)."""
        shared = self.services.path_rule(host, path)
        if shared is None:
            return self.categories.match(host), None
        rule, service = shared
        return CategoryMatch(rule.describe(), frozenset((rule.category or "",))), service

    def path_free(self, host: str) -> bool:
        """Whether what the rules and lists say of `host` cannot depend on the path: no URL rule and no service
        path entry is for it or a parent (the quick path's decision memo keys on the host alone then)."""
        return not self.rules.covers(host) and not self.services.paths.covers(host)

    def candidates(self, user: str | None, client_ip: str | None) -> list[Approval]:
        return self.approvals.candidates(user, self.directory.person(user), client_ip)
