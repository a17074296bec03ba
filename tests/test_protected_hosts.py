"""Protected hosts: the shipped never-block list, its precedence, imports that leave it out, explain, a server."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
import redis

from icap_server.service.sync import PolicySync
from policy.categories import PROTECTED, protected_entries, protecting_entry
from policy.decision import DecisionSettings, Reason, RequestFacts, judge
from policy.rules import Rule, RuleIndex
from policy.services import default_list
from policy.sources.formats import open_source
from policy.sources.lists import CategoryMap, Tally, scan
from policy.state import PolicyState
from policy.store import PolicyStore
from tests.conftest import CLI, StartServer
from tests.support.icap_client import exchange, reqmod, wait_until_synced
from tests.support.icap_grammar import parse_one

NOW = datetime(2026, 12, 1, tzinfo=UTC)
SETTINGS = DecisionSettings(frozenset({"webmail", "web-im"}), forbidden=frozenset({"malware"}))
SHIPPED = protected_entries()


def policy_with(**lists: list[str]) -> PolicyState:
    state = PolicyState(version=1)
    for category, hosts in lists.items():
        state.categories.add(category.replace("_", "-"), hosts)
    state.categories.add(PROTECTED, SHIPPED)  # as PolicySync adds them to every load
    return state


def reason(state: PolicyState, host: str, path: str = "/") -> Reason:
    return judge(state, RequestFacts(host, path, user="alice"), SETTINGS, NOW).reason


# ---- the shipped list ---------------------------------------------------------------------------------


def test_the_shipped_list_protects_organisational_services_and_not_personal_ones() -> None:
    shield = frozenset(SHIPPED)
    for host in ("outlook.office365.com", "teams.microsoft.com", "login.microsoftonline.com", "accounts.google.com",
                 "www.gov.hk", "swcdn.apple.com", "update.googleapis.com", "ocsp.digicert.com"):
        assert protecting_entry(host, shield) is not None, host
    for host in ("login.live.com", "outlook.live.com", "outlook.com", "mail.google.com", "drive.google.com",
                 "contoso-my.sharepoint.com", "google.com", "microsoft.com", "149.154.167.51"):
        assert protecting_entry(host, shield) is None, host


def test_no_shipped_list_entry_is_protected() -> None:
    """The curated lists and the protected list never disagree: an upgrade cannot silently unblock a list."""
    shield = frozenset(SHIPPED)
    for category in ("webmail", "cloud-storage", "web-im"):
        clashes = [entry for entry in default_list(category) if protecting_entry(entry, shield)]
        assert clashes == [], category


def test_config_additions_are_checked_and_canonical() -> None:
    assert "intranet.example" in protected_entries(["*.Intranet.Example."])
    with pytest.raises(ValueError, match=re.escape("'10.0.0.1' is not a host name")):
        protected_entries(["10.0.0.1"])


# ---- precedence -----------------------------------------------------------------------------------------

PRECEDENCE = [
    # (host, path, expected reason): imported parents lose to a more specific protected entry, and the other way
    ("outlook.office365.com", "/", Reason.PROTECTED),  # protected office365.com, itself imported as webmail
    ("teams.microsoft.com", "/", Reason.PROTECTED),  # beats an imported microsoft.com (web-im)
    ("skype.microsoft.com", "/", Reason.NO_APPROVAL),  # the imported parent still governs its other names
    ("outlook.com", "/", Reason.NO_APPROVAL),
    ("mail.google.com", "/", Reason.NO_APPROVAL),  # a restricted entry below a protected parent wins
    ("accounts.google.com", "/", Reason.PROTECTED),
    ("ocsp.digicert.com", "/", Reason.PROTECTED),  # a forbidden entry above it (digicert.com) does not reach it
    ("www.digicert.com", "/", Reason.NOT_PERMITTED),
    ("office.com", "/blocked/", Reason.NO_APPROVAL),  # a category (path) rule still applies
    ("office.com", "/", Reason.PROTECTED),
]


@pytest.mark.parametrize(("host", "path", "expected"), PRECEDENCE)
def test_the_most_specific_entry_decides(host: str, path: str, expected: Reason) -> None:
    state = policy_with(
        webmail=["office365.com", "outlook.com", "mail.google.com"],
        web_im=["microsoft.com"],
        malware=["digicert.com"],
    )
    state.rules = RuleIndex([Rule("R1", "category", "office.com", "/blocked/", "webmail")])
    assert reason(state, host, path) is expected


def test_a_protected_host_in_a_list_still_passes_and_no_host_still_blocks() -> None:
    state = policy_with(webmail=["teams.microsoft.com"], malware=["gov.hk"])
    assert reason(state, "teams.microsoft.com") is Reason.PROTECTED
    assert reason(state, "www.gov.hk") is Reason.PROTECTED  # forbidden, and protected at the same entry
    assert judge(state, RequestFacts(None), SETTINGS, NOW).reason is Reason.BAD_REQUEST


def test_an_allow_rule_still_comes_first() -> None:
    state = policy_with()
    state.rules = RuleIndex([Rule("R1", "allow", "teams.microsoft.com")])
    assert reason(state, "teams.microsoft.com") is Reason.ALLOW_LISTED


# ---- imports ---------------------------------------------------------------------------------------------


def ut1_webmail(root: Path) -> Path:
    tree = root / "blacklists"
    (tree / "webmail").mkdir(parents=True)
    (tree / "webmail" / "domains").write_text(
        "office365.com\noutlook.com\nmail.teams.microsoft.com\nmicrosoft.com\nwebmail-one.example\n", encoding="utf-8"
    )
    return tree


def test_scan_leaves_protected_entries_out_on_both_reads(tmp_path: Path) -> None:
    source = open_source(ut1_webmail(tmp_path), "ut1", None)
    for keep in (100, 0):  # kept in memory, and read a second time
        report = scan(source, CategoryMap({"webmail": "webmail"}), keep=keep, protected=frozenset(SHIPPED))
        batches = [host for batch in report.batches("webmail", 2) for host in batch]
        assert batches == ["outlook.com", "microsoft.com", "webmail-one.example"]
        described = [conflict.describe("UT1") for conflict in report.tally.conflicts]
        assert described == [
            "office365.com from UT1 webmail: protected, skipped",
            "mail.teams.microsoft.com from UT1 webmail: protected (under teams.microsoft.com), skipped",
        ]
        assert report.tally.protected == 2


def test_import_reports_conflicts_and_keeps_curated_entries(
    cli: CLI, tmp_path: Path, sync_redis: redis.Redis, start_icap_server: StartServer, redis_url: str
) -> None:
    cli("categories", "add", "webmail", "mail.google.com")  # a curated entry, there before the import
    result = cli("categories", "import", str(ut1_webmail(tmp_path)))
    assert "office365.com from UT1 webmail: protected, skipped" in result.stdout
    assert "left out (protected hosts): 2 entries" in result.stdout
    assert "outlook.office365.com: protected" in cli("categories", "lookup", "outlook.office365.com").stdout
    assert "webmail (list entry outlook.com)" in cli("categories", "lookup", "outlook.com").stdout
    explained = cli("explain", "https://teams.microsoft.com/", "--user", "alice").stdout
    assert "reason:    protected" in explained and "(list entry teams.microsoft.com): a protected host" in explained

    server = start_icap_server()
    wait_until_synced(server.port, redis_url)
    statuses = {}
    for host in ("outlook.office365.com", "teams.microsoft.com", "outlook.com", "mail.google.com", "microsoft.com"):
        statuses[host] = parse_one(exchange(server.port, reqmod(f"https://{host}/", "alice"))[0]).status
    assert statuses == {
        "outlook.office365.com": 204,
        "teams.microsoft.com": 204,
        "outlook.com": 200,  # the block page
        "mail.google.com": 200,  # the curated entry survived the import
        "microsoft.com": 200,  # above a protected entry: kept
    }


def test_adding_a_protected_host_is_refused(cli: CLI, tmp_path: Path) -> None:
    refused = cli("categories", "add", "webmail", "fine.example", "outlook.office365.com", check=False)
    assert refused.returncode == 2
    assert "outlook.office365.com: a protected host (under office365.com), never blocked by a list" in refused.stderr
    assert "no category" in cli("categories", "lookup", "fine.example").stdout  # nothing half-written
    listing = tmp_path / "list.txt"
    listing.write_text("gov.hk\n", encoding="utf-8")
    loaded = cli("categories", "load", "webmail", str(listing), check=False)
    assert loaded.returncode == 2 and f"{listing}: gov.hk: a protected host" in loaded.stderr


def test_the_protected_hosts_do_not_count_as_lists_the_store_lost(redis_url: str) -> None:
    """A store with no lists (load_default_lists: false) reloads as before: the protected entries are not its own."""

    async def scenario() -> tuple[bool, bool, str | None]:
        store = PolicyStore.from_url(redis_url)
        try:
            sync = PolicySync(store, check_interval=3600, static_protected=SHIPPED)
            first = await sync.resync("start")
            again = await sync.resync("reconnect")
            return first, again, sync.state.categories.match("teams.microsoft.com").entry
        finally:
            await store.close()

    assert asyncio.run(scenario()) == (True, True, "teams.microsoft.com")


def test_a_category_named_protected_gets_no_shipped_list() -> None:
    with pytest.raises(FileNotFoundError):
        default_list("protected")


@pytest.mark.parametrize("value", ["10.0.0.1", "a..b", "a/b"])
def test_a_bad_protected_host_in_the_config_is_one_line_and_exit_2(tmp_path: Path, value: str) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text(f'policy:\n  protected_hosts: ["{value}"]\n', encoding="utf-8")
    command = [sys.executable, "-m", "icap_server", "--config", str(config), "categories", "lookup", "x.example"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 2
    assert result.stderr.strip().endswith(f"expected a host name, got '{value}'")
    assert "policy.protected_hosts[0]" in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_the_quick_filter_misses_nothing() -> None:
    shield = frozenset({"intranet", "teams.microsoft.com", "gov.hk"})
    hosts = ["a.intranet", "intranet", "x.teams.microsoft.com", "microsoft.com", "gov.hk", "hk", "1.2.3.0/24"]
    hosts.append("ok.example")
    assert Tally().unprotected(hosts, "webmail", shield) == ["microsoft.com", "hk", "1.2.3.0/24", "ok.example"]
    assert Tally().unprotected(hosts, "webmail", shield - {"intranet"}) == [
        "a.intranet", "intranet", "microsoft.com", "hk", "1.2.3.0/24", "ok.example"
    ]
