"""URL rules: exceptions to the category lists, matched on host and path prefix.

Two kinds: an `allow` rule lets a host (or a path under it) through whatever its categories say (the
organisation's own mail, a sanctioned cloud); a `category` rule puts a path under a category where personal
and corporate services share a host. The most specific host wins, then the longest path prefix.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Literal

from .hosts import is_ip_literal

RuleKind = Literal["allow", "category"]


@dataclass(frozen=True, slots=True)
class Rule:
    id: str
    kind: RuleKind
    host: str
    path_prefix: str = "/"
    category: str | None = None
    note: str = ""

    def describe(self) -> str:
        target = self.host + ("" if self.path_prefix == "/" else self.path_prefix)
        if self.kind == "allow":
            return f"allow {target}"
        return f"{target} -> {self.category}"

    def to_json(self) -> str:
        return json.dumps(asdict(self), ensure_ascii=False, sort_keys=True)

    @classmethod
    def from_json(cls, text: str | bytes) -> Rule:
        return cls(**json.loads(text))


class RuleIndex:
    """Rules by host, each host's rules longest path prefix first."""

    __slots__ = ("by_host", "rules")

    def __init__(self, rules: Iterable[Rule] = ()) -> None:
        self.rules: dict[str, Rule] = {rule.id: rule for rule in rules}
        grouped: dict[str, list[Rule]] = {}
        for rule in self.rules.values():
            grouped.setdefault(rule.host, []).append(rule)
        self.by_host: dict[str, tuple[Rule, ...]] = {
            host: tuple(sorted(group, key=lambda rule: (-len(rule.path_prefix), rule.kind != "allow", rule.id)))
            for host, group in grouped.items()
        }

    def __len__(self) -> int:
        return len(self.rules)

    def match(self, host: str, path: str) -> Rule | None:
        """The rule for host + path: most specific host on label boundaries, then longest path prefix."""
        by_host = self.by_host
        if not by_host:
            return None
        for suffix in walk_suffixes(host):
            rules = by_host.get(suffix)
            if rules:
                for rule in rules:
                    if path.startswith(rule.path_prefix):
                        return rule
        return None


    def covers(self, host: str) -> bool:
        """Whether any rule is for this host or a parent of it (at any path)."""
        by_host = self.by_host
        return bool(by_host) and any(suffix in by_host for suffix in walk_suffixes(host))


def walk_suffixes(host: str) -> Iterable[str]:
    """host, then each parent on label boundaries; an IP literal only itself."""
    yield host
    if is_ip_literal(host):
        return
    position = host.find(".")
    while position >= 0:
        yield host[position + 1 :]
        position = host.find(".", position + 1)


def normalise_path_prefix(prefix: str) -> str:
    if not prefix.startswith("/"):
        raise ValueError(f"a path prefix starts with '/', got {prefix!r}")
    if any(char in prefix for char in " ?#\r\n"):
        raise ValueError(f"a path prefix has no spaces, query or fragment, got {prefix!r}")
    return prefix
