"""Discovery (issue 14): sightings in monitor and caution mode counted in memory, flushed in batches, and
`report discovery` giving exactly the figures the traffic implies; no Redis command per request."""

from __future__ import annotations

import csv
import io
import json
import time
from datetime import UTC, date, datetime
from pathlib import Path

import redis

from policy.discovery import DiscoveryCount, Sighting, summarise
from tests.conftest import CLI, StartServer
from tests.support.icap_client import exchange, reqmod, wait_until_synced
from tests.support.waiting import wait_until
from tests.test_workers import command_calls, running_workers, status

CONFIG = (
    "server:\n  workers: 2\npolicy:\n  load_default_lists: false\n"
    "approvals:\n  usage_flush_interval: 0.5\n"
    "modes:\n  departments: {finance: monitor, legal: caution}\n"
    "logging:\n  format: json\n"
)
PEOPLE = (
    "user,name,department,groups,heads\namy,Amy,finance,,\nben,Ben,finance,,\ncat,Cat,legal,,\n"
    "dan,Dan,works,,\nhf,Hui Fan,finance,,finance\n"
)


def test_summarise_groups_by_person_and_service_and_filters() -> None:
    day1, day2 = date(2026, 12, 1), date(2026, 12, 2)
    at = datetime(2026, 12, 2, 3, 0, tzinfo=UTC)
    amy = Sighting("would-block", "finance", "amy", "whatsapp", "web-im", "web.whatsapp.com")
    counts = [
        DiscoveryCount(day1, amy, 4, at.replace(day=1)),
        DiscoveryCount(day2, amy, 2, at),
        DiscoveryCount(day2, Sighting("caution", "legal", "cat", "", "webmail", "mail.example"), 1, at),
    ]
    rows = summarise(counts)
    assert [(r.department, r.user, r.total, r.first_day) for r in rows] == [
        ("finance", "amy", 6, day1),
        ("legal", "cat", 1, day2),
    ]
    assert summarise(counts, "finance", day2)[0].would_block == 2
    assert summarise(counts, "works") == []


def test_discovery_counts_exactly_and_costs_no_redis_command_per_request(
    start_icap_server: StartServer, cli: CLI, redis_url: str, sync_redis: redis.Redis, tmp_path: Path
) -> None:
    people = tmp_path / "people.csv"
    people.write_text(PEOPLE, encoding="utf-8")
    server = start_icap_server(CONFIG)
    running_workers(server)
    cli("categories", "add", "webmail", "mail.example")
    cli("categories", "add", "cloud-storage", "drive.example")
    cli("directory", "load", str(people))
    wait_until_synced(server.port, redis_url)
    traffic = {  # (user, host): requests, per connection
        ("amy", "mail.example"): 7,
        ("amy", "drive.example"): 3,
        ("ben", "mail.example"): 1,
        ("cat", "mail.example"): 2,
        ("dan", "mail.example"): 5,  # enforce: blocked, not a sighting
    }
    messages = [reqmod(f"http://{host}/x", user=user) for (user, host), n in traffic.items() for _ in range(n)]
    expected = [204] * 11 + [200] * 7
    before = command_calls(sync_redis)
    started = time.monotonic()
    connections = 20
    for _ in range(connections):  # spread over both workers by the kernel
        assert [status(r) for r in exchange(server.port, *messages)] == expected
    elapsed = time.monotonic() - started

    def report() -> list[dict[str, str]]:
        return list(csv.DictReader(io.StringIO(cli("report", "discovery", "--format", "csv").stdout)))

    def complete() -> list[dict[str, str]] | None:
        rows = report()
        return rows if sum(int(r["total"]) for r in rows) == 13 * connections else None

    rows = wait_until(complete, timeout=10, what="every sighting flushed")
    figures = [(r["department"], r["user"], r["category"], r["would_block"], r["caution"], r["total"]) for r in rows]
    assert figures == [
        ("finance", "amy", "cloud-storage", "60", "0", "60"),
        ("finance", "amy", "webmail", "140", "0", "140"),
        ("finance", "ben", "webmail", "20", "0", "20"),
        ("legal", "cat", "webmail", "0", "40", "40"),
    ]
    assert rows[1]["hosts"] == "mail.example"
    only = list(
        csv.DictReader(io.StringIO(cli("report", "discovery", "--department", "legal", "--format", "csv").stdout))
    )
    assert [r["user"] for r in only] == ["cat"]

    after = command_calls(sync_redis)
    delta = {name: after.get(name, 0) - before.get(name, 0) for name in after}
    requests = len(messages) * connections
    # The flushes write a few commands per distinct sighting every 0.5 s per worker; nothing per request.
    flushes = 2 * (elapsed / 0.5 + 2)
    assert delta.get("hincrby", 0) <= flushes * len(traffic), (delta, elapsed)
    assert delta.get("hincrby", 0) < requests / 4, delta


def csv_rows(cli: CLI, *args: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(cli(*args, "--format", "csv").stdout)))


def readiness_figures(cli: CLI) -> list[tuple[str, str, str, str, str]]:
    rows = csv_rows(cli, "report", "readiness", "--department", "finance")
    return [
        (r["category"], r["people_seen"], r["blocked"], r["pending"], r["blocked_if_pending_approved"]) for r in rows
    ]


def test_readiness_and_requests_from_discovery(
    start_icap_server: StartServer, cli: CLI, redis_url: str, tmp_path: Path
) -> None:
    people = tmp_path / "people.csv"
    people.write_text(PEOPLE, encoding="utf-8")
    server = start_icap_server(CONFIG)
    cli("categories", "add", "webmail", "mail.example")
    cli("categories", "add", "cloud-storage", "drive.example")
    cli("directory", "load", str(people))
    wait_until_synced(server.port, redis_url)
    messages = [reqmod("http://mail.example/", user=user) for user in ("amy", "ben", "ben")]
    messages.append(reqmod("http://drive.example/", user="amy"))
    assert [status(r) for r in exchange(server.port, *messages)] == [204] * 4
    wait_until(lambda: len(csv_rows(cli, "report", "discovery")) == 3 or None, timeout=10, what="the flush")
    assert readiness_figures(cli) == [("cloud-storage", "1", "1", "0", "1"), ("webmail", "2", "2", "0", "2")]

    cli(
        "approvals",
        "grant",
        "--user",
        "amy",
        "--category",
        "webmail",
        "--days",
        "7",
        "--approver",
        "hf",
        "--reason",
        "Liaison with the overseas office",
    )
    assert readiness_figures(cli)[1] == ("webmail", "2", "1", "0", "1")  # amy is approved now
    made = cli(
        "--actor", "sec.admin", "requests", "create-from-discovery", "--department", "finance", "--category", "webmail"
    ).stdout
    assert made.splitlines()[-1] == "created 1, skipped 1 (already pending, approved or exempt)", made
    again = cli("requests", "create-from-discovery", "--department", "finance", "--category", "webmail").stdout
    assert again.splitlines()[-1].startswith("created 0, skipped 2"), again
    assert readiness_figures(cli)[1] == ("webmail", "2", "1", "1", "0")  # ben's request, once approved
    pending = csv_rows(cli, "requests", "list", "--status", "pending")
    assert [(r["user"], r["category"]) for r in pending] == [("ben", "webmail")]
    assert len(csv_rows(cli, "approvals", "list")) == 1  # no approval was made by it
    trail = json.loads(cli("audit", "--format", "json").stdout)
    assert [r["actor"] for r in trail if r["action"] == "request-submit"] == ["sec.admin"]
