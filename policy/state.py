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
from .rules import RuleIndex


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

    def candidates(self, user: str | None, client_ip: str | None) -> list[Approval]:
        return self.approvals.candidates(user, self.directory.person(user), client_ip)
