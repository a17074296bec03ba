"""The heads' workspace: who a head is (Squid's header from a trusted peer, or a single-use link), what they
see, and that each decision there is the CLI's own (rules, audit entry, announcement), refused whole otherwise.

The rules run against the real portal app in-process (tests/support/asgi.py: the TCP peer is the test's to
choose) on a real Redis, with the real CLI making the data and the decisions to compare with. The last test
is acceptance 1 end to end: a real `clearance serve` with its portal, reached over HTTP from 127.0.0.1 (a
trusted proxy), whose ICAP answer for the requester changes within a second of the head's click.
"""

from __future__ import annotations

import asyncio
import html
import json
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest
import redis

from icap_server.config import Config, load_config
from icap_server.portal.app import Portal
from icap_server.portal.heads_auth import action_link
from policy.store import PolicyStore
from policy.tokens import RequestClaim, form_token, sign
from tests.conftest import CLI, StartServer
from tests.support.asgi import Answer, call
from tests.support.icap_client import exchange, reqmod, wait_until_synced
from tests.support.net import free_port, wait_for_port

SECRET = "heads-test-secret"
WHY = "Exchanging documents with an overseas partner agency"
PREFIX = "clearance:"
DIRECTORY = """user,name,department,groups,heads,delegates,email
alice,Alice Chan,Finance,,,,alice@example.gov
bob,Bob Lee,Finance,,,,bob@example.gov
hfin,Henry Fung,Finance,,Finance,,hfin@example.gov
dfin,Dora Fok,Finance,,,Finance,dfin@example.gov
carol,Carol Wong,IT,,,,
hit,Ivy Tam,IT,,IT,,
"""
HEADER = "X-Clearance-User"


def config_text(portal_port: int, workers: int = 1) -> str:
    return (
        f"server:\n  workers: {workers}\n"
        "policy:\n  load_default_lists: false\n"
        "approvals:\n  require_department_head: true\n  min_justification_chars: 20\n  max_validity_days: 180\n"
        f"portal:\n  listen: 127.0.0.1:{portal_port}\n  secret: {SECRET}\n  expiring_within_days: 14\n"
        "logging:\n  format: json\n"
    )


@dataclass
class Setup:
    config: Config
    admin: Callable[..., Any]
    redis: redis.Redis


@pytest.fixture
def setup(cli: CLI, tmp_path: Path, redis_url: str, sync_redis: redis.Redis) -> Setup:
    path = tmp_path / "heads.yaml"
    path.write_text(config_text(free_port()), encoding="utf-8")

    def admin(*args: str, check: bool = True) -> Any:
        return cli("--config", str(path), "--actor", "it.admin", *args, check=check)

    directory = tmp_path / "directory.csv"
    directory.write_text(DIRECTORY, encoding="utf-8")
    admin("directory", "load", str(directory))
    admin("categories", "add", "webmail", "mail.google.com", "mail.yahoo.com", "outlook.com")
    return Setup(load_config(path, redis_url), admin, sync_redis)


@asynccontextmanager
async def portal_of(setup: Setup) -> AsyncIterator[tuple[Any, PolicyStore]]:
    store = PolicyStore.from_url(str(setup.config.redis.url))
    try:
        yield Portal(setup.config, store, SECRET).app, store
    finally:
        await store.close()


def run(scenario: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(scenario())


async def submit(app: Any, user: str, host: str = "mail.google.com") -> str:
    """A request as a block page's form makes it (the token signed with the portal's secret); its id."""
    token = sign(RequestClaim(user, None, "webmail", host, int(time.time()) + 600), SECRET)
    answer = await call(app, "POST", "/request", form={"token": token, "justification": WHY, "days": "30"})
    assert answer.status == 303, answer.text
    return answer.headers["location"].split("/")[2].split("?")[0]


def csrf_of(page: str) -> str:
    (value,) = set(re.findall(r'name="csrf" value="([^"]*)"', page))
    return html.unescape(value)


def section(page: str, name: str) -> str:
    match = re.search(rf'<section id="{name}".*?</section>', page, re.S)
    assert match, f"no #{name} in the page"
    return match.group(0)


async def workspace(app: Any, head: str, peer: str = "127.0.0.1", language: str = "en") -> Answer:
    return await call(app, "GET", "/heads", headers=[(HEADER, head), ("accept-language", language)], peer=peer)


async def act(app: Any, head: str, form: dict[str, str], peer: str = "127.0.0.1", **headers: str) -> Answer:
    pairs = [(HEADER, head), *((name.replace("_", "-"), value) for name, value in headers.items())]
    return await call(app, "POST", "/heads/act", headers=pairs, form=form, peer=peer)


def snapshot(client: redis.Redis) -> tuple[Any, ...]:
    """What a refused action must leave as it was: requests, approvals, the audit and the policy version."""
    return (
        client.hgetall(PREFIX + "requests"),
        client.hgetall(PREFIX + "approvals"),
        client.xlen(PREFIX + "audit"),
        client.get(PREFIX + "policy:version"),
    )


def audit(setup: Setup) -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = json.loads(setup.admin("audit", "--format", "json").stdout)
    return entries


def last_audit(setup: Setup, action: str, target: str) -> dict[str, Any]:
    (entry,) = [item for item in audit(setup) if item["action"] == action and item["target"] == target]
    return entry


def shape(entry: dict[str, Any]) -> tuple[Any, ...]:
    """An audit entry's shape: its fields, and those of its before and after records (values aside)."""
    return (
        sorted(entry),
        sorted(entry.get("before") or {}),
        sorted(entry.get("after") or {}),
        entry["department"],
    )


# ---- who the head is ---------------------------------------------------------------------------


def test_the_header_is_believed_from_a_trusted_proxy_only_and_shows_the_heads_own_departments(
    setup: Setup,
) -> None:
    async def scenario() -> None:
        async with portal_of(setup) as (app, _):
            finance, it = await submit(app, "alice"), await submit(app, "carol")
            page = await workspace(app, "hfin")
            assert page.status == 200, page.text
            pending = section(page.text, "pending")
            assert f"{finance} · alice" in pending and f"{it} · carol" not in pending
            assert 'class="approve"' in pending and 'class="deny"' in pending
            assert "<script" not in page.text and "default-src 'none'" in page.headers["content-security-policy"]
            other = await workspace(app, "hit")
            assert f"{it} · carol" in section(other.text, "pending") and "alice" not in other.text

            forged = await workspace(app, "hfin", peer="10.9.9.9")  # not a trusted proxy: the header is ignored
            assert forged.status == 403 and "Sign in" in forged.text and "hfin" not in forged.text
            assert (await call(app, "GET", "/heads")).status == 403  # no header at all
            two = await call(app, "GET", "/heads", headers=[(HEADER, "alice"), (HEADER, "hfin")])
            assert two.status == 403  # a client copy that slipped past Squid's delete: believe neither
            assert (await workspace(app, "-")).status == 403  # Squid's %ul without a user
            nobody = await workspace(app, "alice")
            assert nobody.status == 403 and "Nothing to decide" in nobody.text
            assert (await workspace(app, "HFIN")).status == 200  # normalised as the ICAP identity is

            chinese = await workspace(app, "hfin", language="zh-HK,zh;q=0.9")
            assert "待決申請" in section(chinese.text, "pending") and "批准" in chinese.text
            assert "Pending requests" not in section(chinese.text, "pending")

    run(scenario)


def test_a_forged_header_from_an_untrusted_peer_changes_nothing(setup: Setup) -> None:
    async def scenario() -> None:
        async with portal_of(setup) as (app, _):
            request_id = await submit(app, "alice")
            before = snapshot(setup.redis)
            token = form_token(SECRET, "hfin", "heads", int(time.time()) + 600)  # even with a valid CSRF token
            forged = await act(app, "hfin", {"item": request_id, "action": "approve", "csrf": token}, peer="10.9.9.9")
            assert forged.status == 403 and "Sign in" in forged.text
            assert snapshot(setup.redis) == before

    run(scenario)


def test_a_head_of_another_department_is_refused_and_nothing_changes(setup: Setup) -> None:
    async def scenario() -> None:
        async with portal_of(setup) as (app, _):
            request_id = await submit(app, "alice")  # Finance
            assert request_id not in (await workspace(app, "hit")).text  # the head of IT
            csrf = form_token(SECRET, "hit", "heads", int(time.time()) + 600)  # a valid token of hit's own
            before = snapshot(setup.redis)
            refused = await act(app, "hit", {"item": request_id, "action": "approve", "csrf": csrf})
            assert refused.status == 403 and "Not your department" in refused.text
            assert "並非你的部門" in refused.text
            assert snapshot(setup.redis) == before

    run(scenario)


# ---- each decision is the CLI's own ------------------------------------------------------------


def test_approve_and_deny_write_the_cli_audit_entries_with_the_head_as_actor(setup: Setup) -> None:
    async def scenario() -> None:
        async with portal_of(setup) as (app, store):
            ids = [
                await submit(app, user, host)
                for user in ("alice", "bob")
                for host in ("mail.google.com", "outlook.com")
            ]
            csrf = csrf_of((await workspace(app, "hfin")).text)
            done = await act(
                app, "hfin", {"item": ids[0], "action": "approve", "days": "7", "note": "ok", "csrf": csrf}
            )
            assert done.status == 200, done.text
            assert f"{ids[0]} approved: A1 (user alice, category webmail, until " in done.text
            denied = await act(
                app, "hfin", {"item": ids[1], "action": "deny", "note": "use the shared box", "csrf": csrf}
            )
            assert denied.status == 200 and f"{ids[1]} denied" in denied.text
            stored = await store.get_request(ids[0])
            assert stored.status == "approved" and stored.decided_by == "hfin" and stored.approval_id == "A1"
            approval = await store.get_approval("A1")
            assert approval.approver == "hfin" and approval.created_by == "portal:hfin" and approval.ticket == ids[0]
            assert (await store.get_request(ids[1])).note == "use the shared box"

        setup.admin("requests", "approve", ids[2], "--by", "hfin", "--days", "7", "--note", "ok")
        setup.admin("requests", "deny", ids[3], "--by", "hfin", "--note", "use the shared box")
        for action, portal_target, cli_target in (
            ("request-approve", ids[0], ids[2]),
            ("grant", "A1", "A2"),
            ("request-deny", ids[1], ids[3]),
        ):
            ours, theirs = last_audit(setup, action, portal_target), last_audit(setup, action, cli_target)
            assert ours["actor"] == "portal:hfin" and theirs["actor"] == "it.admin"
            assert shape(ours) == shape(theirs)

    run(scenario)


def grant(setup: Setup, user: str, *, days: int, started_days_ago: int = 0) -> None:
    start = date.today() - timedelta(days=started_days_ago)
    setup.admin(
        "approvals", "grant", "--user", user, "--category", "webmail", "--approver", "hfin",
        "--justification", WHY, "--from", start.isoformat(), "--days", str(days),
    )  # fmt: skip


def test_keep_revoke_and_suspend_write_the_cli_audit_entries(setup: Setup) -> None:
    for user in ("alice", "bob"):  # A1..A4 overdue for review (the portal's), A5..A8 the CLI's
        grant(setup, user, days=150, started_days_ago=100)
        grant(setup, user, days=150, started_days_ago=100)
    for user in ("alice", "bob"):
        grant(setup, user, days=150, started_days_ago=100)
        grant(setup, user, days=150, started_days_ago=100)

    async def scenario() -> None:
        async with portal_of(setup) as (app, store):
            page = await workspace(app, "hfin")
            reviews = section(page.text, "reviews")
            assert all(f">A{number}<" in reviews for number in range(1, 9))
            assert 'class="keep"' in reviews and 'class="revoke"' in reviews and 'class="suspend"' in reviews
            csrf = csrf_of(page.text)
            for item, action, field in (("A1", "keep", "note"), ("A2", "review-revoke", "note"),
                                        ("A3", "revoke", "reason"), ("A4", "suspend", "reason")):  # fmt: skip
                done = await act(app, "hfin", {"item": item, "action": action, field: "checked", "csrf": csrf})
                assert done.status == 200, done.text
            assert (await store.get_approval("A1")).reviews[-1].by == "hfin"
            assert (await store.get_approval("A3")).revoked_by == "hfin"

    run(scenario)
    setup.admin("approvals", "review", "A5", "--by", "hfin", "--keep", "--note", "checked")
    setup.admin("approvals", "review", "A6", "--by", "hfin", "--revoke", "--note", "checked")
    setup.admin("approvals", "revoke", "A7", "--by", "hfin", "--reason", "checked")
    setup.admin("approvals", "suspend", "A8", "--by", "hfin", "--reason", "checked")
    for action, ours, theirs in (("review-keep", "A1", "A5"), ("review-revoke", "A2", "A6"),
                                 ("revoke", "A3", "A7"), ("suspend", "A4", "A8")):  # fmt: skip
        portal_entry, cli_entry = last_audit(setup, action, ours), last_audit(setup, action, theirs)
        assert portal_entry["actor"] == "portal:hfin" and cli_entry["actor"] == "it.admin"
        assert shape(portal_entry) == shape(cli_entry)
        assert portal_entry["after"]["status"] == cli_entry["after"]["status"]


# ---- links and forms that are refused ----------------------------------------------------------


def test_a_link_works_once_and_an_expired_or_forged_one_not_at_all(setup: Setup) -> None:
    async def scenario() -> None:
        async with portal_of(setup) as (app, _):
            first, second = await submit(app, "alice"), await submit(app, "bob")
            link = action_link("http://portal", SECRET, "hfin", first, ("approve", "deny"), 600)
            path = link.removeprefix("http://portal")
            page = await call(app, "GET", path, peer="10.1.2.3")  # from anywhere: the link is the proof
            assert page.status == 200, page.text
            assert f"{first} · alice" in section(page.text, "pending") and "bob" not in page.text
            token = html.unescape(re.findall(r'name="link" value="([^"]*)"', page.text)[0])
            form = {"item": first, "action": "approve", "csrf": csrf_of(page.text), "link": token}
            wrong_item = await call(app, "POST", "/heads/act", form={**form, "item": second}, peer="10.1.2.3")
            assert wrong_item.status == 403 and "does not allow" in wrong_item.text
            done = await call(app, "POST", "/heads/act", form=form, peer="10.1.2.3")
            assert done.status == 200 and f"{first} approved: A1" in done.text

            before = snapshot(setup.redis)
            replayed = await call(app, "POST", "/heads/act", form={**form, "action": "deny"}, peer="10.1.2.3")
            assert replayed.status == 409 and "used already" in replayed.text
            assert (await call(app, "GET", path)).status == 409
            expired = action_link("http://portal", SECRET, "hfin", second, ("approve",), -5)
            answer = await call(app, "GET", expired.removeprefix("http://portal"))
            assert answer.status == 410 and "expired" in answer.text
            forged = action_link("http://portal", "another-secret", "hfin", second, ("approve",), 600)
            assert (await call(app, "GET", forged.removeprefix("http://portal"))).status == 400
            block_token = sign(RequestClaim("hfin", None, "webmail", "x", int(time.time()) + 60), SECRET)
            assert (await call(app, "GET", f"/heads/link?t={block_token}")).status == 400  # not a link
            assert snapshot(setup.redis) == before

    run(scenario)


def test_csrf_missing_wrong_or_expired_and_cross_site_posts_are_refused(setup: Setup) -> None:
    async def scenario() -> None:
        async with portal_of(setup) as (app, _):
            item = await submit(app, "alice")
            good = csrf_of((await workspace(app, "hfin")).text)
            before = snapshot(setup.redis)
            base = {"item": item, "action": "approve"}
            cases = {
                "missing": (base, {}),
                "another head's": ({**base, "csrf": form_token(SECRET, "dfin", "heads", int(time.time()) + 600)}, {}),
                "another page's": ({**base, "csrf": form_token(SECRET, "hfin", "link:x", int(time.time()) + 600)}, {}),
                "expired": ({**base, "csrf": form_token(SECRET, "hfin", "heads", int(time.time()) - 1)}, {}),
                "another secret's": ({**base, "csrf": form_token("other", "hfin", "heads", int(time.time()) + 60)}, {}),
                "cross-site origin": ({**base, "csrf": good}, {"origin": "https://evil.example"}),
                "cross-site fetch": ({**base, "csrf": good}, {"sec_fetch_site": "cross-site"}),
            }
            for name, (form, headers) in cases.items():
                answer = await act(app, "hfin", form, **headers)
                assert answer.status == 403, name
                assert snapshot(setup.redis) == before, name
            done = await act(app, "hfin", {**base, "csrf": good}, origin="null", sec_fetch_site="same-origin")
            assert done.status == 200, done.text

    run(scenario)


# ---- acceptance 1, end to end ------------------------------------------------------------------


def http(url: str, headers: dict[str, str], form: dict[str, str] | None = None) -> tuple[int, str]:
    body = urllib.parse.urlencode(form).encode() if form is not None else None
    request = urllib.request.Request(url, data=body, headers=headers, method="POST" if body else "GET")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def icap_passes(port: int, user: str) -> bool:
    (answer,) = exchange(port, reqmod("http://mail.google.com/", user=user, extra_headers=("X-Client-IP: 10.1.2.3",)))
    return answer.startswith(b"ICAP/1.0 204")


def test_a_head_approves_in_the_browser_and_the_next_request_passes_then_a_revoke_blocks(
    start_icap_server: StartServer, cli: CLI, tmp_path: Path, redis_url: str
) -> None:
    portal_port = free_port()
    text = config_text(portal_port, workers=2)  # the portal in a process of its own
    path = tmp_path / "serve.yaml"
    path.write_text(text, encoding="utf-8")
    directory = tmp_path / "directory.csv"
    directory.write_text(DIRECTORY, encoding="utf-8")
    cli("--config", str(path), "directory", "load", str(directory))
    cli("--config", str(path), "categories", "add", "webmail", "mail.google.com")
    server = start_icap_server(text)
    wait_for_port(portal_port)
    url = f"http://127.0.0.1:{portal_port}"
    assert not icap_passes(server.port, "alice")

    token = sign(RequestClaim("alice", None, "webmail", "mail.google.com", int(time.time()) + 600), SECRET)
    status, _ = http(url + "/request", {}, {"token": token, "justification": WHY, "days": "30"})
    assert status == 200  # urllib follows the 303 to the status page
    signed_in = {HEADER: "hfin"}  # as Squid adds it; 127.0.0.1 is in portal.trusted_proxies
    status, page = http(url + "/heads", signed_in)
    assert status == 200 and "Q1 · alice" in section(page, "pending")

    status, done = http(url + "/heads/act", signed_in, {"item": "Q1", "action": "approve", "csrf": csrf_of(page)})
    assert status == 200 and "Q1 approved: A1" in done
    wait_until_synced(server.port, redis_url, timeout=1.0)
    assert icap_passes(server.port, "alice")

    status, page = http(url + "/heads", signed_in)
    assert ">A1<" in section(page, "active") and 'class="revoke"' in section(page, "active")
    form = {"item": "A1", "action": "revoke", "reason": "project over", "csrf": csrf_of(page)}
    status, done = http(url + "/heads/act", signed_in, form)
    assert status == 200 and "A1 revoked" in done
    wait_until_synced(server.port, redis_url, timeout=1.0)
    assert not icap_passes(server.port, "alice")
