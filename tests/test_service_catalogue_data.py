"""The shipped service catalogue as data: policy/data/services/<category>.yaml.

The catalogue replaces the three shipped host lists, so it must lose nothing they held (the old lists are kept
in tests/data/legacy_lists/ for that check), every entry must be one `policy.categories` reads back unchanged
(a non-canonical entry would never match), one host must belong to one service (or an approval for one service
would open, or fail to open, another's host), and nothing an organisation runs on (the protected hosts) may
become a catalogue entry. The files are read with PyYAML directly, so a mistake is named by file and service
whatever the loader does; the last tests read them through `policy.services` as well.
"""

from __future__ import annotations

import datetime
import functools
import ipaddress
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml

import policy
from policy.categories import (
    parse_host_entry,
    parse_host_list,
    parse_list_entry,
    parse_range_entry,
    protected_entries,
    protecting_entry,
)
from policy.hosts import is_ip_literal
from policy.services import SERVICE_ID_RE, default_list, shipped_catalogue

CATALOGUE = Path(policy.__file__).parent / "data" / "services"
LEGACY = Path(__file__).parent / "data" / "legacy_lists"
CATEGORIES = ("webmail", "cloud-storage", "web-im")
HOST_ROLES = ("web", "media", "desktop")
KEYS = {"id", "name_en", "name_zh", "checked", "sources", *HOST_ROLES, "ranges", "paths", "tenant"}
OPTIONAL_KEYS = {"note"}
TENANT_VENDORS = {"google", "microsoft", "dropbox", "slack", "zoom", "webex"}

# The services the guidelines name, complete for web and desktop: id -> (category, tenant vendor).
NAMED = {
    "whatsapp": ("web-im", None),
    "wechat": ("web-im", None),
    "telegram": ("web-im", None),
    "signal": ("web-im", None),
    "line": ("web-im", None),
    "messenger": ("web-im", None),
    "gmail": ("webmail", "google"),
    "outlook-com": ("webmail", "microsoft"),
    "yahoo-mail": ("webmail", None),
    "icloud-mail": ("webmail", None),
    "qq-mail": ("webmail", None),
    "netease-mail": ("webmail", None),
    "icloud-drive": ("cloud-storage", None),
    "google-drive": ("cloud-storage", "google"),
    "dropbox": ("cloud-storage", "dropbox"),
    "onedrive": ("cloud-storage", "microsoft"),
    "baidu-netdisk": ("cloud-storage", None),
    "alipan": ("cloud-storage", None),
    "wetransfer": ("cloud-storage", None),
}
# Hosts Facebook, Microsoft 365, organisational OneDrive, Google and Tencent share across their services.
SHARED_HOSTS = {"facebook.com", "fbcdn.net", "outlook.office365.com", "outlook.office.com", "sharepoint.com"}
SHARED_HOSTS |= {"login.live.com", "accounts.google.com", "google.com", "googleapis.com", "qq.com"}
NO_DESKTOP_CLIENT = {"wetransfer"}  # used in the browser only: its note must say so
# Characters found only in Simplified Chinese: a Hong Kong name is written in Traditional characters.
SIMPLIFIED_ONLY = set("邮网云华为讯书电机发门东这时话图库传")


@functools.cache
def load(category: str) -> dict[str, Any]:
    """One file as PyYAML reads it (read once: no test changes what it returns)."""
    document = yaml.safe_load((CATALOGUE / f"{category}.yaml").read_text(encoding="utf-8"))
    assert isinstance(document, dict), f"{category}.yaml: not a mapping"
    return document


def services() -> list[tuple[str, dict[str, Any]]]:
    """(file category, service record) for every service in the three files, in file order."""
    return [(category, record) for category in CATEGORIES for record in load(category)["services"]]


def entries(record: dict[str, Any]) -> list[str]:
    return [*(host for role in HOST_ROLES for host in record[role]), *record["ranges"]]


def by_id() -> dict[str, tuple[str, dict[str, Any]]]:
    return {record["id"]: (category, record) for category, record in services()}


def test_the_catalogue_is_exactly_the_three_category_files() -> None:
    assert sorted(path.name for path in CATALOGUE.iterdir()) == sorted(f"{name}.yaml" for name in CATEGORIES)


@pytest.mark.parametrize("category", CATEGORIES)
def test_each_file_has_its_category_and_the_schema(category: str) -> None:
    document = load(category)
    assert set(document) == {"category", "services"}
    assert document["category"] == category
    assert isinstance(document["services"], list) and document["services"]
    for record in document["services"]:
        where = f"{category}.yaml: {record.get('id')!r}"
        assert KEYS <= set(record) <= KEYS | OPTIONAL_KEYS, f"{where}: keys {sorted(set(record) ^ KEYS)}"
        for key in ("id", "name_en", "name_zh"):
            assert isinstance(record[key], str) and record[key].strip() == record[key] != "", f"{where}: {key}"
        assert isinstance(record["sources"], list) and record["sources"], f"{where}: no sources"
        assert all(isinstance(source, str) and source.strip() for source in record["sources"]), where
        for key in (*HOST_ROLES, "ranges", "paths"):
            assert isinstance(record[key], list), f"{where}: {key} is not a list"
        for key in (*HOST_ROLES, "ranges"):
            assert all(isinstance(entry, str) for entry in record[key]), f"{where}: {key} holds a non-string"
        for path in record["paths"]:
            assert isinstance(path, dict) and set(path) == {"host", "path"}, f"{where}: path {path!r}"
            assert isinstance(path["host"], str) and isinstance(path["path"], str), f"{where}: path {path!r}"
        assert record["tenant"] is None or record["tenant"] in TENANT_VENDORS, f"{where}: tenant"
        assert isinstance(record.get("note", ""), str), f"{where}: note"
        assert entries(record) or record["paths"], f"{where}: a service with nothing to match"


def test_ids_are_well_formed_and_unique_across_the_files() -> None:
    ids = [record["id"] for _, record in services()]
    assert all(SERVICE_ID_RE.match(ident) for ident in ids), [i for i in ids if not SERVICE_ID_RE.match(i)]
    assert [ident for ident, count in Counter(ids).items() if count > 1] == []


def test_checked_dates_are_iso_dates_not_in_the_future() -> None:
    today = datetime.date.today()
    for category, record in services():
        checked = record["checked"]
        # PyYAML reads an unquoted YYYY-MM-DD as a date and nothing else as one; a timestamp is a datetime.
        assert type(checked) is datetime.date, f"{category}: {record['id']}: checked {checked!r} is no ISO date"
        assert checked <= today, f"{category}: {record['id']}: checked {checked} is in the future"


def test_every_entry_parses_and_is_in_canonical_form() -> None:
    for _, record in services():
        for role in HOST_ROLES:
            for host in record[role]:
                assert "/" not in host and parse_list_entry(host) == host, f"{record['id']}: {role} {host!r}"
        for text in record["ranges"]:
            # A range stays a range: a single-address "range" is canonicalised to the address, an entry of its own.
            assert "/" in text and parse_range_entry(text) == text, f"{record['id']}: range {text!r}"
        for path in record["paths"]:
            host = path["host"]
            assert parse_host_entry(host) == host and not is_ip_literal(host), f"{record['id']}: path host {host!r}"
            assert path["path"].startswith("/") and not set(path["path"]) & set(" ?#"), f"{record['id']}: {path}"


def test_no_entry_belongs_to_two_services_or_twice_to_one() -> None:
    owners: dict[str, list[str]] = {}
    for _, record in services():
        for entry in entries(record):
            owners.setdefault(entry, []).append(record["id"])
    assert {entry: ids for entry, ids in owners.items() if len(ids) > 1} == {}


def test_a_path_host_is_not_a_plain_entry_of_its_own_service() -> None:
    for _, record in services():
        plain = set(entries(record))
        assert [path for path in record["paths"] if path["host"] in plain] == [], record["id"]


def test_no_catalogue_entry_is_or_falls_under_a_protected_host() -> None:
    protected = frozenset(protected_entries())
    assert protected, "the protected list is empty: this test would prove nothing"
    found = [
        (record["id"], entry, protecting_entry(entry, protected))
        for _, record in services()
        for entry in [*entries(record), *(path["host"] for path in record["paths"])]
        if protecting_entry(entry, protected) is not None
    ]
    assert found == []


@pytest.mark.parametrize("category", CATEGORIES)
def test_the_catalogue_holds_every_entry_of_the_old_list(category: str) -> None:
    legacy = parse_host_list((LEGACY / f"{category}.txt").read_text(encoding="utf-8").splitlines())
    assert len(legacy) > 100, "the legacy fixture is missing or truncated"
    held = {entry for file_category, record in services() if file_category == category for entry in entries(record)}
    assert [entry for entry in legacy if entry not in held] == []


def test_every_service_block_of_the_old_lists_became_a_service() -> None:
    """Each `# Service — sources` block is one service; only NetEase's 163, 126 and yeah.net became one."""
    for category in CATEGORIES:
        text = (LEGACY / f"{category}.txt").read_text(encoding="utf-8")
        blocks = sum(1 for line in text.splitlines() if line.startswith("# "))
        merged = 2 if category == "webmail" else 0  # NetEase 163 + 126 + yeah.net -> netease-mail
        assert len(load(category)["services"]) == blocks - merged, category


@pytest.mark.parametrize("ident", sorted(NAMED))
def test_the_named_services_are_complete_for_web_and_desktop(ident: str) -> None:
    catalogue = by_id()
    assert ident in catalogue, f"{ident} is missing from the catalogue"
    category, record = catalogue[ident]
    expected_category, tenant = NAMED[ident]
    assert category == expected_category
    assert record["tenant"] == tenant
    # iCloud Mail's web client is a path on www.icloud.com, a host it shares with iCloud Drive.
    assert record["web"] or (ident == "icloud-mail" and record["paths"]), f"{ident}: no web entries"
    assert record["sources"] and record["checked"]
    if ident in NO_DESKTOP_CLIENT:
        assert record["desktop"] == [] and "no desktop client" in record["note"]
    else:
        assert record["desktop"] or record["media"], f"{ident}: no desktop or media entries"


def test_the_web_client_hosts_the_approvals_are_about_are_in_their_services() -> None:
    """The hosts people type belong to the service they ask for (the block page names that service)."""
    catalogue = by_id()
    expected = {
        "whatsapp": "whatsapp.com",
        "wechat": "wx.qq.com",
        "telegram": "telegram.org",
        "gmail": "mail.google.com",
        "outlook-com": "outlook.live.com",
        "google-drive": "drive.google.com",
        "onedrive": "onedrive.live.com",
        "icloud-drive": "icloud.com",
    }
    for ident, host in expected.items():
        assert host in catalogue[ident][1]["web"], ident
    assert {"host": "www.icloud.com", "path": "/mail"} in catalogue["icloud-mail"][1]["paths"]
    assert "whatsapp.net" in catalogue["whatsapp"][1]["media"]
    assert "whatsapp.biz" in catalogue["whatsapp"][1]["desktop"]
    assert {"long.weixin.qq.com", "short.weixin.qq.com"} <= set(catalogue["wechat"][1]["desktop"])


def test_telegram_has_its_published_v4_and_v6_ranges() -> None:
    ranges = [ipaddress.ip_network(text) for text in by_id()["telegram"][1]["ranges"]]
    assert {network.version for network in ranges} == {4, 6}
    assert any(ipaddress.ip_address("149.154.167.51") in network for network in ranges)


def test_shared_vendor_hosts_stay_out() -> None:
    """Hosts shared with Facebook, Microsoft 365 and organisational OneDrive are no service's entries."""
    held = {entry for _, record in services() for entry in entries(record)}
    assert sorted(SHARED_HOSTS & held) == []


def test_every_service_has_names_in_english_and_traditional_chinese() -> None:
    for _, record in services():
        assert record["name_en"] and record["name_zh"], record["id"]
        simplified = set(record["name_zh"]) & SIMPLIFIED_ONLY
        assert not simplified, f"{record['id']}: {record['name_zh']} uses Simplified characters {simplified}"
    catalogue = by_id()
    names = {
        "wechat": "微信",
        "baidu-netdisk": "百度網盤",
        "alipan": "阿里雲盤",
        "qq-mail": "QQ 郵箱",
        "netease-mail": "網易郵箱",
        "google-drive": "Google 雲端硬碟",
        "line": "LINE",
        "telegram": "Telegram",
    }
    assert {ident: catalogue[ident][1]["name_zh"] for ident in names} == names


def test_the_loader_reads_the_same_catalogue() -> None:
    """`policy.services` reads the files to the same services, entries and categories as this test does."""
    shipped_catalogue.cache_clear()  # the files on disk, not a copy another test left behind
    loaded = {service.id: service for service in shipped_catalogue()}
    assert sorted(loaded) == sorted(by_id())
    for ident, (category, record) in by_id().items():
        service = loaded[ident]
        assert service.category == category
        assert (service.web, service.media, service.desktop) == tuple(tuple(record[role]) for role in HOST_ROLES)
        assert service.ranges == tuple(record["ranges"])
        assert [(path.host, path.path) for path in service.paths] == [(p["host"], p["path"]) for p in record["paths"]]
        assert service.tenant == record["tenant"]
        assert service.checked == record["checked"].isoformat()
    for category in CATEGORIES:
        legacy = parse_host_list((LEGACY / f"{category}.txt").read_text(encoding="utf-8").splitlines())
        assert set(legacy) <= set(default_list(category)), category
