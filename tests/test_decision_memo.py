"""The per-host decision memo (`icap_server.service.memo`) answers exactly as judging again would.

A memo that is wrong fails open: an unrestricted answer kept for a host that a change has since listed. So the
checks are: for many requests (hosts listed or not, under URL rules and service path entries or not, vendors'
hosts, users with and without approvals) the verdict with the memo is the verdict without it; and a host
listed, or given a rule, after its decision was memoised is judged again at once.
"""

from __future__ import annotations

import random
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from icap_server.service.application import Application, FixedPolicy
from icap_server.service.memo import DecisionMemo
from policy.identity import Identity
from policy.rules import Rule, RuleIndex
from policy.services import PathEntry, Service
from policy.state import ApprovalIndex, PolicyState, ServiceCatalogue
from tests.support.pages import load_config_text
from tests.test_tenant_restrictions import GMAIL, approval

NOW = datetime(2026, 12, 2, 9, 30, tzinfo=UTC)
CONFIG = "tenant_restrictions:\n  google: {domains: [example.gov.hk]}\n"
ICLOUD_MAIL = Service(
    "icloud-mail", "iCloud Mail", "iCloud 郵件", "webmail", paths=(PathEntry("www.icloud.com", "/mail"),)
)
HOSTS = [
    "mail.google.com",
    "www.google.com",
    "accounts.google.com",
    "www.icloud.com",
    "mail.example",
    "x.mail.example",
    "www.example.com",
    "news.example",
    "ruled.example",
    "sub.ruled.example",
    "10.0.0.9",
    "drive.example",
]
PATHS = ["/", "/mail", "/mail/inbox", "/open/x", "/docs"]
USERS = [Identity("alice", "10.0.0.1"), Identity("bob", "10.0.0.2"), Identity(None, None), Identity("carol", None)]


def state() -> PolicyState:
    bob = replace(
        approval("A-1", category="webmail"),
        subject="bob",
        valid_until=NOW + timedelta(30),
        review_due=NOW + timedelta(9),
    )
    policy = PolicyState(version=4, approvals=ApprovalIndex([bob]), services=ServiceCatalogue([GMAIL, ICLOUD_MAIL]))
    policy.categories.add("webmail", ["mail.google.com", "mail.example"])
    policy.categories.add("cloud-storage", ["drive.example"])
    policy.rules = RuleIndex(
        [
            Rule("R-1", "allow", "ruled.example", "/open"),
            Rule("R-2", "category", "news.example", "/docs", "cloud-storage"),
        ]
    )
    return policy


def app(policy: PolicyState, memo: bool) -> Application:
    application = Application(load_config_text(CONFIG), FixedPolicy(policy))
    if not memo:
        application.memo = _Forgetful()  # type: ignore[assignment]
    return application


class _Forgetful(DecisionMemo):
    def keep(self, *args: object, **kwargs: object) -> None:
        return None


def verdict_fields(application: Application, identity: Identity, host: str, path: str) -> tuple[object, ...]:
    verdict = application._judge(identity, "GET", f"http://{host}{path}", [], NOW)
    return (verdict.status, verdict.host, verdict.decision, verdict.version, verdict.reference is None)


def test_with_the_memo_every_verdict_is_the_one_judging_gives() -> None:
    policy = state()
    memoised, fresh = app(policy, memo=True), app(policy, memo=False)
    rng = random.Random(7)
    kept = 0
    for _ in range(5000):
        identity, host, path = rng.choice(USERS), rng.choice(HOSTS), rng.choice(PATHS)
        assert verdict_fields(memoised, identity, host, path) == verdict_fields(fresh, identity, host, path), (
            identity,
            host,
            path,
        )
    kept = len(memoised.memo._decisions)
    # The memo holds the hosts nothing names, and none that a rule, a path entry, a list or a vendor does.
    assert {"www.example.com", "10.0.0.9"} <= set(memoised.memo._decisions), memoised.memo._decisions
    assert not {
        "ruled.example",
        "sub.ruled.example",
        "news.example",
        "www.icloud.com",
        "www.google.com",
        "accounts.google.com",
        "mail.example",
        "mail.google.com",
    } & set(memoised.memo._decisions)
    assert kept >= 2


def test_a_host_listed_after_it_was_memoised_is_blocked_at_once() -> None:
    policy = state()
    application = app(policy, memo=True)
    alice = Identity("alice", "10.0.0.1")
    assert not application._judge(alice, "GET", "http://chat.example/", [], NOW).blocked
    assert "chat.example" in application.memo._decisions
    # What PolicySync does with a HostsAdded change: the index changed in place, then the version.
    policy.categories.add("web-im", ["chat.example"])
    policy.version += 1
    assert application._judge(alice, "GET", "http://chat.example/", [], NOW).blocked
    # A URL rule on a parent of a memoised host: judged again too.
    assert not application._judge(alice, "GET", "http://a.free.example/", [], NOW).blocked
    policy.rules = RuleIndex([Rule("R-9", "category", "free.example", "/", "webmail")])
    policy.version += 1
    assert application._judge(alice, "GET", "http://a.free.example/", [], NOW).blocked
    # A new state object (a resync) with the same version starts an empty memo.
    replacement = state()
    replacement.categories.add("webmail", ["www.example.com"])
    application.policy = FixedPolicy(replacement)
    application._judge(alice, "GET", "http://www.example.com/", [], NOW)
    assert application._judge(alice, "GET", "http://www.example.com/", [], NOW).blocked
