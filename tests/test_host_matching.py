"""One host-matching table, run against every matcher that decides whether a host falls under an entry.

There are four: the store's lookup (the CLI's `categories lookup`, against a real Redis), the in-memory
category index every request uses, an approval's host scope, and URL rules. They are separate code, so a
label-boundary mistake in one is invisible to tests of another: `evilmail.google.com` must never fall
under `mail.google.com`, nor `xweb.whatsapp.com` under `web.whatsapp.com`. Hosts are canonicalised first
(`normalise_host`), as the request path does, so case and a trailing dot are part of the table too.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

from policy.approvals import Approval, SubjectKind
from policy.hosts import normalise_host
from policy.rules import Rule, RuleIndex
from policy.state import CategoryIndex, PolicyState
from policy.store import PolicyStore

# (list entry, host as a request names it, whether the host falls under the entry)
TABLE: list[tuple[str, str, bool]] = [
    # exact, and deeper subdomains on label boundaries
    ("mail.google.com", "mail.google.com", True),
    ("mail.google.com", "a.mail.google.com", True),
    ("mail.google.com", "x.y.z.mail.google.com", True),
    ("web.whatsapp.com", "web.whatsapp.com", True),
    ("web.whatsapp.com", "a.web.whatsapp.com", True),
    ("google.com", "mail.google.com", True),
    # label-boundary negatives: a string suffix is not a parent domain
    ("mail.google.com", "evilmail.google.com", False),
    ("web.whatsapp.com", "xweb.whatsapp.com", False),
    ("web.whatsapp.com", "a.xweb.whatsapp.com", False),
    ("oogle.com", "google.com", False),
    ("gle.com", "mail.google.com", False),
    ("mail.google.com", "ail.google.com", False),
    # an entry covers neither its parent, nor a sibling, nor a host that merely contains it
    ("mail.google.com", "google.com", False),
    ("web.whatsapp.com", "whatsapp.com", False),
    ("mail.google.com", "docs.google.com", False),
    ("web.whatsapp.com", "web-whatsapp.com", False),
    ("mail.google.com", "mail.google.com.evil.example", False),
    ("mail.google.com", "mail.google.co", False),
    # canonical spelling: case and a trailing dot do not matter
    ("mail.google.com", "Mail.Google.COM", True),
    ("web.whatsapp.com", "WEB.whatsapp.com.", True),
    ("mail.google.com", "EvilMail.Google.com.", False),
    # IP literals match exactly, never as a "subdomain"
    ("10.0.0.1", "10.0.0.1", True),
    ("10.0.0.1", "110.0.0.1", False),
    ("0.0.1", "10.0.0.1", False),
    ("0.1", "192.168.0.1", False),
    ("2001:db8::1", "2001:DB8::1", True),
    ("2001:db8::1", "2001:db8::11", False),
    # spellings a browser reads as the same host (percent-escapes, UTS #46, IPv4 forms, IPv4-mapped IPv6)
    ("mail.google.com", "mail%2egoogle%2ecom", True),
    ("mail.google.com", "ｍａｉｌ．ｇｏｏｇｌｅ．ｃｏｍ", True),
    ("mail.google.com", "a.mail。google。com", True),
    ("mail.google.com", "evilｍａｉｌ.google.com", False),
    ("203.0.113.7", "3405803783", True),
    ("203.0.113.7", "0xcb.0x0.0x71.0x7", True),
    ("203.0.113.7", "0313.0.0161.07", True),
    ("203.0.113.7", "[::ffff:203.0.113.7]:443", True),
    ("10.0.0.1", "10.1", True),
    ("0.0.1", "10.1", False),
]

NOW = datetime(2026, 1, 15, 9, 0, tzinfo=UTC)


def _host(raw: str) -> str:
    host = normalise_host(raw)
    assert host is not None, raw
    return host


def memory_match(entry: str, host: str) -> bool:
    index = CategoryIndex()
    index.add("webmail", [entry])
    state = PolicyState(categories=index)  # what Application.evaluate asks on every request
    found = state.categories.match(host)
    assert found.entry in (None, entry)
    return found.entry == entry


def approval_match(entry: str, host: str) -> bool:
    approval = Approval(
        id="A1",
        subject_kind=SubjectKind.USER,
        subject="alice",
        category=None,
        host=entry,
        department="Finance",
        approver="head",
        justification="table",
        created_by="admin",
        created_at=NOW,
        valid_from=NOW,
        valid_until=NOW + timedelta(days=1),
        review_due=NOW + timedelta(days=1),
    )
    return approval.covers("webmail", host)


def rule_match(entry: str, host: str) -> bool:
    index = RuleIndex([Rule(id="R1", kind="allow", host=entry)])
    return index.match(host, "/inbox") is not None


async def _store_lookup(url: str, prefix: str, entry: str, host: str) -> bool:
    store = PolicyStore.from_url(url, prefix)
    try:
        await store.add_hosts("webmail", [entry])
        found = await store.lookup_categories(host)
    finally:
        await store.close()
    assert found.entry in (None, entry)
    return found.entry == entry


_prefixes = itertools.count()


MATCHERS: dict[str, Callable[[str, str], bool]] = {
    "category-index": memory_match,
    "approval-covers": approval_match,
    "url-rules": rule_match,
}


def _cases() -> list[object]:
    cases: list[object] = []
    for matcher in sorted(MATCHERS):
        for entry, raw_host, expected in TABLE:
            case_id = f"{matcher}-{entry}~{raw_host}"
            cases.append(pytest.param(matcher, entry, raw_host, expected, id=case_id))
    return cases


@pytest.mark.parametrize(("matcher", "entry", "raw_host", "expected"), _cases())
def test_in_memory_matchers(matcher: str, entry: str, raw_host: str, expected: bool) -> None:
    assert MATCHERS[matcher](entry, _host(raw_host)) is expected, f"{matcher}: {raw_host} under {entry}"


def test_store_lookup(redis_url: str) -> None:
    """The whole table against a real redis-server, each row under a key prefix of its own."""
    wrong = []
    for entry, raw_host, expected in TABLE:
        prefix = f"hostmatch{next(_prefixes)}:"
        if asyncio.run(_store_lookup(redis_url, prefix, entry, _host(raw_host))) is not expected:
            wrong.append(f"{raw_host} under {entry}: expected {expected}")
    assert not wrong, wrong
