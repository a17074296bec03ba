"""Destination ranges: CIDR list entries, matched against IP literals in every spelling (issue 10).

Desktop apps that connect by IP (Telegram publishes its server ranges) must be blocked like their web
clients: the index, the list parsers, the store's one-host look-up (the CLI's `explain`) and a real
`clearance serve` answering `CONNECT 149.154.167.51:443` and its other spellings.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from policy.categories import (
    NOT_A_RANGE,
    ListError,
    lookup_keys,
    parse_host_entry,
    parse_host_list,
    parse_list_entry,
)
from policy.hosts import request_host
from policy.services import default_list
from policy.sources.lines import parse_line
from policy.state import CategoryIndex
from tests.conftest import CLI, ServerHandle, StartServer
from tests.support.icap_client import exchange, reqmod, wait_until_synced
from tests.support.icap_grammar import parse_one
from tests.support.waiting import wait_until

TELEGRAM_RANGES = {
    "91.108.4.0/22", "91.108.8.0/22", "91.108.12.0/22", "91.108.16.0/22", "91.108.20.0/22", "91.108.56.0/22",
    "91.105.192.0/23", "149.154.160.0/20", "185.76.151.0/24", "2001:b28:f23d::/48", "2001:b28:f23f::/48",
    "2001:67c:4e8::/48", "2001:b28:f23c::/48", "2a0a:f280::/32",
}


# ---- parsing ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "entry"),
    [
        ("149.154.160.0/20", "149.154.160.0/20"),
        ("149.154.167.51/20", "149.154.160.0/20"),  # host bits cleared, as ip_network(strict=False)
        ("2001:B28:F23D::1/48", "2001:b28:f23d::/48"),
        ("10.0.0.7/32", "10.0.0.7"),  # a one-address range is the address: an exact entry
        ("::ffff:149.154.160.0/116", "149.154.160.0/20"),  # IPv4-mapped: the IPv4 range it reaches
        ("64:ff9b::9500:0/104", "149.0.0.0/8"),  # NAT64, likewise
        ("0.0.0.0/0", "0.0.0.0/0"),
        ("10.0.0.0/33", None),
        ("10.0.0.0/255.0.0.0", None),  # a netmask is not a prefix length
        ("10.0.0.0/", None),
        ("10.0.0.0/ 8", None),
        ("fe80::1%eth0/64", None),
        ("*.10.0.0.0/8", None),
        ("example.com/8", None),
        ("10.0.0.0/8/8", None),
    ],
)
def test_a_cidr_entry_is_canonical_or_refused(text: str, entry: str | None) -> None:
    assert parse_list_entry(text) == entry


def test_rules_and_approvals_name_hosts_not_ranges() -> None:
    """`parse_host_entry` (rules, host approvals) refuses a range: there it would be a scope that never matches."""
    assert parse_host_entry("149.154.160.0/20") is None
    assert parse_list_entry("mail.example.com") == parse_host_entry("mail.example.com") == "mail.example.com"


def test_a_bad_cidr_in_a_list_file_names_its_line() -> None:
    assert parse_host_list(["# Telegram", "91.108.4.0/22", "2a0a:f280::/32"]) == ["91.108.4.0/22", "2a0a:f280::/32"]
    with pytest.raises(ListError) as caught:
        parse_host_list(["91.108.4.0/22", "", "91.108.8.0/40"])
    assert str(caught.value) == f"line 3: '91.108.8.0/40' is {NOT_A_RANGE}"


def test_importer_lines_accept_ranges_and_name_bad_ones() -> None:
    assert parse_line("91.108.4.0/22  # Telegram\n") == ("91.108.4.0/22", None)
    assert parse_line("2001:67C:4E8::/48\n") == ("2001:67c:4e8::/48", None)
    assert parse_line("91.108.4.0/40\n") == (None, NOT_A_RANGE)


def test_the_shipped_web_im_list_holds_telegrams_published_ranges() -> None:
    assert {entry for entry in default_list("web-im") if "/" in entry} == TELEGRAM_RANGES


# ---- the index ----------------------------------------------------------------------------------


def index() -> CategoryIndex:
    categories = CategoryIndex()
    categories.add("web-im", [*sorted(TELEGRAM_RANGES), "telegram.org"])
    categories.add("cloud-storage", ["149.154.167.0/24", "149.154.167.99", "10.0.0.0/8"])
    categories.add("webmail", ["10.1.0.0/16", "2001:db8::/32"])
    categories.add("social", ["10.1.2.0/24"])
    categories.add("webmail", ["10.1.0.0/16"])  # a second add of the same range changes nothing
    return categories


@pytest.mark.parametrize(
    ("host", "entry", "category"),
    [
        ("149.154.160.1", "149.154.160.0/20", "web-im"),
        ("149.154.175.255", "149.154.160.0/20", "web-im"),
        ("149.154.167.51", "149.154.167.0/24", "cloud-storage"),  # the longest prefix wins
        ("149.154.167.99", "149.154.167.99", "cloud-storage"),  # an exact address beats every range
        ("10.1.2.3", "10.1.2.0/24", "social"),
        ("10.1.3.3", "10.1.0.0/16", "webmail"),
        ("10.2.0.1", "10.0.0.0/8", "cloud-storage"),
        ("2001:b28:f23d::1", "2001:b28:f23d::/48", "web-im"),
        ("2a0a:f280:ffff::1", "2a0a:f280::/32", "web-im"),
        ("2001:db8::1", "2001:db8::/32", "webmail"),
        ("web.telegram.org", "telegram.org", "web-im"),
    ],
)
def test_an_ip_host_finds_its_most_specific_range(host: str, entry: str, category: str) -> None:
    assert index().match(host).entry == entry
    assert index().match(host).categories == {category}


@pytest.mark.parametrize("host", ["149.154.176.1", "149.154.159.255", "11.0.0.1", "2001:b28:f23e::1", "printer1"])
def test_an_address_outside_every_range_matches_nothing(host: str) -> None:
    assert index().match(host).entry is None


def test_a_range_and_a_name_are_counted_as_entries() -> None:
    assert index().category_sizes()["webmail"] == 2


def test_lookup_keys_hold_every_range_that_could_hold_an_address() -> None:
    keys = lookup_keys("149.154.167.51")
    assert len(keys) == 33 and keys[0] == "149.154.167.51" and keys[-1] == "0.0.0.0/0"
    assert "149.154.160.0/20" in keys
    assert len(lookup_keys("2001:b28:f23d::1")) == 129
    assert lookup_keys("a.example") == ["a.example", "example"]


# ---- the store's one-host look-up: the CLI --------------------------------------------------------


def test_lookup_and_explain_name_the_range(cli: CLI) -> None:
    assert "2 added" in cli("categories", "add", "web-im", "149.154.160.0/20", "2001:b28:f23d::1/48").stdout
    assert cli("categories", "lookup", "0x95.0x9a.0xa7.0x33").stdout.strip() == (
        "149.154.167.51: web-im (list entry 149.154.160.0/20)"
    )
    assert "list entry 2001:b28:f23d::/48" in cli("categories", "lookup", "https://[2001:b28:f23d::7]/").stdout
    assert "no category" in cli("categories", "lookup", "149.154.176.1").stdout
    out = cli("explain", "http://149.154.167.51/api", "--user", "alice").stdout
    assert "decision:  block" in out and "reason:    no-approval" in out
    assert "web-im (list entry 149.154.160.0/20)" in out
    bad = cli("categories", "add", "web-im", "149.154.160.0/33", check=False)
    assert bad.returncode == 2 and f"'149.154.160.0/33' is {NOT_A_RANGE}" in bad.stderr


def test_a_bad_cidr_in_a_loaded_file_writes_nothing(cli: CLI, tmp_path: Path) -> None:
    listing = tmp_path / "ranges.txt"
    listing.write_text("91.108.4.0/22\n91.108.8.0/99\n", encoding="utf-8")
    result = cli("categories", "load", "web-im", str(listing), check=False)
    assert result.returncode == 2 and f"{listing}: line 2: '91.108.8.0/99' is {NOT_A_RANGE}" in result.stderr
    assert "no category" in cli("categories", "lookup", "91.108.4.1").stdout


# ---- a real server --------------------------------------------------------------------------------

# The same Telegram address spelt as a desktop client, a URL or a trick might spell it.
TELEGRAM_SPELLINGS = {
    "CONNECT dotted": reqmod("https://149.154.167.51:443", "alice", method="CONNECT"),
    "CONNECT decimal": reqmod("https://2509940531:443", "alice", method="CONNECT"),
    "CONNECT hex": reqmod("https://0x95.0x9a.0xa7.0x33:443", "alice", method="CONNECT"),
    "CONNECT IPv4-mapped": reqmod("https://[::ffff:149.154.167.51]:443", "alice", method="CONNECT"),
    "CONNECT IPv6": reqmod("https://[2001:b28:f23d::a]:443", "alice", method="CONNECT"),
    "absolute URI": reqmod("http://149.154.167.51/api", "alice"),
}


def test_the_spellings_are_one_address() -> None:
    assert request_host("CONNECT", "2509940531:443") == "149.154.167.51"


@pytest.fixture
def shipped_lists_server(start_icap_server: StartServer, redis_url: str) -> ServerHandle:
    """A server that initialised the store with the shipped lists (web-im holds Telegram's ranges)."""
    server = start_icap_server("policy:\n  load_default_lists: true\nlogging:\n  format: json\n")
    wait_until_synced(server.port, redis_url)
    return server


def answers(server: ServerHandle) -> dict[str, tuple[int, bytes]]:
    results = {}
    for name, message in TELEGRAM_SPELLINGS.items():
        response = parse_one(exchange(server.port, message)[0])
        results[name] = (response.status, response.res_hdr or b"")
    return results


def test_telegram_by_ip_is_blocked_as_web_im_until_approved(
    shipped_lists_server: ServerHandle, cli: CLI, redis_url: str
) -> None:
    blocked = answers(shipped_lists_server)
    wrong = [name for name, (status, head) in blocked.items() if status != 200 or not head.startswith(b"HTTP/1.1 403")]
    assert not wrong, f"not blocked: {wrong}"
    outside = parse_one(exchange(shipped_lists_server.port, reqmod("https://149.154.176.1:443", "alice", "CONNECT"))[0])
    assert outside.status == 204  # just outside 149.154.160.0/20: not restricted

    def logged() -> list[dict[str, object]] | None:
        lines = [line for line in shipped_lists_server.events("icap") if line.get("decision") == "block"]
        return lines if len(lines) >= len(TELEGRAM_SPELLINGS) else None

    lines = wait_until(logged, 5.0, interval=0.05, what="a log line for every block")
    assert {(line["category"], line["reason"]) for line in lines} == {("web-im", "no-approval")}
    assert {line["catalogue_service"] for line in lines} == {"telegram"}  # blocked as Telegram, every spelling
    assert {line["matched_entry"] for line in lines} == {"149.154.160.0/20", "2001:b28:f23d::/48"}
    assert {line["host"] for line in lines} == {"149.154.167.51", "2001:b28:f23d::a"}

    cli(
        "approvals", "grant", "--user", "alice", "--category", "web-im", "--days", "30",
        "--approver", "head", "--justification", "Liaison with a partner office on Telegram",
    )
    wait_until_synced(shipped_lists_server.port, redis_url)
    passed = answers(shipped_lists_server)
    assert {name: status for name, (status, _) in passed.items()} == dict.fromkeys(TELEGRAM_SPELLINGS, 204)
