"""Category lists: parsing list files, and choosing the entry that governs a host."""

from __future__ import annotations

import hashlib
import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass
from importlib import resources

from .hosts import host_suffixes, is_ip_literal, normalise_host

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
# IPv6 ranges that reach IPv4 addresses: a host spelt in them is canonicalised to the IPv4 address it reaches
# (policy.hosts), so a range inside them is kept as the IPv4 range it covers, or it could never match.
NOT_A_HOST = "not a host name or IP address"
_ADDRESS_CHARACTERS = "0123456789abcdefABCDEF.:"  # what an IPv4 or IPv6 address is written with
NOT_A_RANGE = "not a CIDR range (ADDRESS/PREFIX-LENGTH, IPv4 or IPv6)"
_IPV4_IN_IPV6 = (ipaddress.IPv6Network("::ffff:0:0/96"), ipaddress.IPv6Network("64:ff9b::/96"))

CATEGORY_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}\Z")  # \Z: "$" would let a final newline through
# The pseudo-category of protected hosts (never blocked by a list). No real category can be named so
# (`validate_category` refuses "@"), so it shares the index and the label walk at no extra cost.
PROTECTED = "@protected"
PROTECTED_FILE = "protected"  # policy/data/protected.txt


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
    """Entries from a list file (one per line, `#` comments); raises ListError naming the first bad line."""
    hosts: list[str] = []
    for number, raw in enumerate(lines, start=1):
        text = raw.split("#", 1)[0].strip()
        if not text:
            continue
        host = parse_list_entry(text)
        if host is None:
            raise ListError(number, f"{text!r} is {entry_problem(text)}")
        hosts.append(host)
    return hosts


def entry_problem(text: str) -> str:
    """Why a list entry was refused, worded for what it looks like (a range, or a host)."""
    address, slash, _ = text.partition("/")
    looks_numeric = bool(address) and not address.strip(_ADDRESS_CHARACTERS)
    if slash and looks_numeric and (":" in address or any(char.isdigit() for char in address)):
        return NOT_A_RANGE
    return NOT_A_HOST


def parse_list_entry(text: str) -> str | None:
    """A category list entry: a host as `parse_host_entry` reads it, or an IPv4/IPv6 CIDR range.

    Only lists hold ranges: a rule or an approval names a host (`parse_host_entry` refuses ranges), so a
    range there is an error rather than a scope that silently never matches.
    """
    if "/" in text:
        return parse_range_entry(text)
    return parse_host_entry(text)


def parse_range_entry(text: str) -> str | None:
    """`a.b.c.d/nn` or `x::/nn` in canonical form (host bits cleared, as `ip_network(strict=False)`), or None.

    A single-address range is the address itself (an exact entry), and an IPv4-mapped or NAT64 range is the
    IPv4 range it reaches, so each destination has one spelling, as hosts do.
    """
    address, slash, length = text.partition("/")
    if not (slash and length.isascii() and length.isdigit() and address.isascii()) or "%" in address:
        return None  # a prefix length, not a netmask; no zone index
    try:
        network: IPNetwork = ipaddress.ip_network(text, strict=False)
    except ValueError:
        return None
    if isinstance(network, ipaddress.IPv6Network) and network.prefixlen >= 96:
        for space in _IPV4_IN_IPV6:
            if network.subnet_of(space):
                low = int(network.network_address) & 0xFFFFFFFF
                network = ipaddress.IPv4Network((low, network.prefixlen - 96))
                break
    if network.prefixlen == network.max_prefixlen:
        return str(network.network_address)
    return str(network)


def lookup_keys(host: str) -> list[str]:
    """Every list entry that could govern this host: its name suffixes, or an IP's address and its ranges.

    For a store lookup of one host (SMISMEMBER); most specific first.
    """
    if not is_ip_literal(host):
        return host_suffixes(host)
    address = ipaddress.ip_address(host)
    width = address.max_prefixlen
    ranges = [str(ipaddress.ip_network((address, length), strict=False)) for length in range(width - 1, -1, -1)]
    return [host, *ranges]


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


def shipped_version() -> str:
    """A content hash of the shipped data (every file under policy/data/, names and bytes), 12 hex digits.

    Why: the store records it with the curated lists, so an installed upgrade that changes the shipped data is
    recognised at the next start and brings its entries in (and drops the ones it no longer ships).
    """
    digest = hashlib.sha256()
    pending = [resources.files("policy").joinpath("data")]
    files = []
    while pending:
        for item in pending.pop().iterdir():
            if item.is_dir():
                pending.append(item)
            elif item.is_file():
                files.append(item)
    for item in sorted(files, key=lambda entry: str(entry)):
        name = str(item).rpartition("/data/")[2].encode()
        data = item.read_bytes()
        digest.update(b"%d:%s%d:" % (len(name), name, len(data)) + data)
    return digest.hexdigest()[:12]


def _shipped(name: str) -> list[str]:
    text = resources.files("policy").joinpath("data", f"{name}.txt").read_text(encoding="utf-8")
    return parse_host_list(text.splitlines())


def protected_entries(extra: Iterable[str] = ()) -> tuple[str, ...]:
    """The protected hosts: the shipped `policy/data/protected.txt` and the config's additions, canonical.

    Raises ValueError naming an addition that is not a host name (a range cannot be protected: an IP
    destination is never an organisation's service by name).
    """
    entries = dict.fromkeys(_shipped(PROTECTED_FILE))
    for text in extra:
        host = parse_host_entry(text.strip())
        if host is None or is_ip_literal(host):
            raise ValueError(f"protected host {text!r} is not a host name")
        entries[host] = None
    return tuple(entries)


def protecting_entry(entry: str, protected: frozenset[str]) -> str | None:
    """The protected entry that a list entry equals or falls under, or None: an import leaves such entries out.

    An entry above a protected one (`microsoft.com` over `teams.microsoft.com`) is kept: the protected entry
    is more specific, so it wins the label walk.
    """
    if entry in protected:
        return entry
    if "/" in entry or is_ip_literal(entry):
        return None
    position = entry.find(".")  # the label walk of `CategoryIndex.match`: no list built per entry
    while position >= 0:
        suffix = entry[position + 1 :]
        if suffix in protected:
            return suffix
        position = entry.find(".", position + 1)
    return None
