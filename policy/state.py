"""The policy each serve process holds in memory, so a decision needs no Redis round trip.

`PolicyState` is plain data: the category index (list entry -> categories), every user's approvals, the URL
rules and the policy version they reflect. The sync task keeps it fresh from Redis change notifications;
this module only applies changes, it does no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from .approvals import Approval
from .categories import NO_MATCH, CategoryMatch
from .rules import RuleIndex


class CategoryIndex:
    """List entry -> categories. Lookup walks the host's labels: cost independent of the number of entries.

    Category sets are interned, so millions of entries share a handful of frozensets.
    """

    __slots__ = ("_interned", "entries")

    def __init__(self) -> None:
        self.entries: dict[str, frozenset[str]] = {}
        self._interned: dict[frozenset[str], frozenset[str]] = {}

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
            elif category not in current:
                entries[host] = self._intern(current | single)

    def match(self, host: str) -> CategoryMatch:
        entries = self.entries
        found = entries.get(host)
        if found is not None:
            return CategoryMatch(host, found)
        if ":" in host or host[-1:].isdigit():  # IP literals match exactly; no TLD is all digits
            return NO_MATCH
        position = host.find(".")
        while position >= 0:
            suffix = host[position + 1 :]
            found = entries.get(suffix)
            if found is not None:
                return CategoryMatch(suffix, found)
            position = host.find(".", position + 1)
        return NO_MATCH

    def category_sizes(self) -> dict[str, int]:
        sizes: dict[str, int] = {}
        for categories in self.entries.values():
            for name in categories:
                sizes[name] = sizes.get(name, 0) + 1
        return sizes


@dataclass
class PolicyState:
    version: int = 0
    categories: CategoryIndex = field(default_factory=CategoryIndex)
    approvals: dict[str, tuple[Approval, ...]] = field(default_factory=dict)
    rules: RuleIndex = field(default_factory=RuleIndex)

    def approvals_of(self, user: str | None) -> tuple[Approval, ...]:
        if not user:
            return ()
        return self.approvals.get(user, ())

    def set_user_approvals(self, user: str, approvals: Iterable[Approval]) -> None:
        held = tuple(approvals)
        if held:
            self.approvals[user] = held
        else:
            self.approvals.pop(user, None)
