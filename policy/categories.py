"""Category lists: parsing list files, and choosing the entry that governs a host."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from importlib import resources

from .hosts import normalise_host

CATEGORY_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}\Z")  # \Z: "$" would let a final newline through


@dataclass(frozen=True, slots=True)
class CategoryMatch:
    """The list entry that matched (most specific wins) and its categories; empty when nothing matched."""

    entry: str | None
    categories: frozenset[str]


NO_MATCH = CategoryMatch(entry=None, categories=frozenset())


class ListError(ValueError):
    """A list file line that is not a host; carries the line number for the admin."""

    def __init__(self, line_number: int, message: str) -> None:
        super().__init__(f"line {line_number}: {message}")
        self.line_number = line_number


def validate_category(name: str) -> str:
    if not CATEGORY_RE.match(name):
        raise ValueError(f"invalid category name {name!r}: use lower-case letters, digits, '-' or '_' (at most 63)")
    return name


def parse_host_list(lines: Iterable[str]) -> list[str]:
    """Hosts from a list file (one per line, `#` comments); raises ListError naming the first bad line."""
    hosts: list[str] = []
    for number, raw in enumerate(lines, start=1):
        text = raw.split("#", 1)[0].strip()
        if not text:
            continue
        host = parse_host_entry(text)
        if host is None:
            raise ListError(number, f"{text!r} is not a host name or IP address")
        hosts.append(host)
    return hosts


def parse_host_entry(text: str) -> str | None:
    """A list entry as a canonical host; accepts `host`, `.host` and `*.host` (all mean the host and below)."""
    if text.startswith("*."):
        text = text[2:]
    elif text.startswith("."):
        text = text[1:]
    if any(char in text for char in " /\\@*?"):
        return None
    if ":" in text and text.count(":") == 1:  # host:port has no place in a list
        return None
    return normalise_host(text)


def default_list(category: str) -> list[str]:
    """A list shipped with Clearance (policy/data/CATEGORY.txt)."""
    text = resources.files("policy").joinpath("data", f"{category}.txt").read_text(encoding="utf-8")
    return parse_host_list(text.splitlines())
