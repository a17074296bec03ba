"""`/metrics`, `/healthz` and `/readyz` of a real `clearance serve` with two workers (issue 13).

After a mixed load spread over both workers, the per-decision transaction counts add up to the requests sent;
`/readyz` fails while the policy is not loaded (Redis not there yet) and passes once it is.
"""

from __future__ import annotations

import re
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from tests.conftest import CLI, PROJECT_ROOT, StartServer
from tests.support.icap_client import exchange, reqmod, wait_until_synced
from tests.support.net import free_port, wait_for_port
from tests.support.redis_server import running_redis
from tests.support.smtp import Inbox, smtp_sink
from tests.support.waiting import wait_until
from tests.test_portal import Portal, start_portal  # noqa: F401 - start_portal is a fixture

SAMPLE = re.compile(r"^clearance_icap_transactions_total\{([^}]*)\} ([0-9.e+]+)$", re.MULTILINE)


def config(metrics_port: int) -> str:
    return (
        "server:\n  workers: 2\npolicy:\n  load_default_lists: false\nlogging:\n  format: json\n"
        f"metrics:\n  listen: 127.0.0.1:{metrics_port}\n  ready_max_age_seconds: 5\n"
    )


def get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def by_decision(text: str) -> dict[str, float]:
    totals: dict[str, float] = {}
    for labels, value in SAMPLE.findall(text):
        decision = dict(re.findall(r'(\w+)="([^"]*)"', labels)).get("decision", "")
        totals[decision] = totals.get(decision, 0) + float(value)
    return totals


def test_decision_counts_add_up_across_both_workers(start_icap_server: StartServer, cli: CLI, redis_url: str) -> None:
    metrics_port = free_port()
    server = start_icap_server(config(metrics_port))
    wait_for_port(metrics_port)
    cli("categories", "add", "webmail", "mail.example")
    wait_until_synced(server.port, redis_url)
    wait_until(lambda: get(metrics_port, "/readyz")[0] == 200, timeout=10, what="/readyz 200")
    assert get(metrics_port, "/healthz") == (200, "ok\n")
    before = by_decision(get(metrics_port, "/metrics")[1])
    for _ in range(20):  # fresh connections: the kernel spreads them over both workers
        exchange(server.port, *[reqmod("http://news.example/")] * 3, reqmod("http://mail.example/", user="bob"))
    wait_until(
        lambda: {line.get("worker") for line in server.events("icap")} == {0, 1}, timeout=5, what="both workers serving"
    )

    def counted() -> dict[str, float] | None:
        after = by_decision(get(metrics_port, "/metrics")[1])
        delta = {key: after.get(key, 0) - before.get(key, 0) for key in after}
        return delta if delta.get("pass", 0) + delta.get("block", 0) >= 80 else None

    delta = wait_until(counted, timeout=5, interval=0.2, what="80 transactions counted")
    assert delta.get("pass") == 60 and delta.get("block") == 20, delta
    text = get(metrics_port, "/metrics")[1]
    assert 'reason="no-approval"' in text and 'category="webmail"' in text
    assert re.search(r"^clearance_icap_duration_seconds_count ([0-9.e+]+)$", text, re.MULTILINE)
    assert re.search(r"^clearance_workers 2\.0$", text, re.MULTILINE), text
    assert get(metrics_port, "/nope")[0] == 404
    # Every metric the Grafana dashboard charts is one /metrics gives.
    dashboard = (PROJECT_ROOT / "docs" / "grafana-dashboard.json").read_text(encoding="utf-8")
    charted = set(re.findall(r"clearance_[a-z_]+", dashboard))
    assert charted and all(name in text for name in charted), charted - {n for n in charted if n in text}


def test_readyz_fails_until_the_policy_is_loaded(start_icap_server: StartServer, tmp_path: Path) -> None:
    redis_port, metrics_port = free_port(), free_port()
    url = f"redis://127.0.0.1:{redis_port}/0"
    server = start_icap_server(config(metrics_port), redis=url, wait=False)
    wait_for_port(metrics_port, timeout=30)
    wait_for_port(server.port, timeout=30)  # the workers listen (and block: policy-unavailable) without Redis
    status, body = get(metrics_port, "/readyz")
    assert status == 503 and body.startswith("not ready:"), (status, body)
    assert get(metrics_port, "/healthz")[0] == 200  # alive all the same
    with running_redis(tmp_path / "late", port=redis_port):
        wait_until(lambda: get(metrics_port, "/readyz")[0] == 200, timeout=15, interval=0.2, what="/readyz 200")
    # Redis gone again: after ready_max_age_seconds without a word from the store, not ready.
    wait_until(lambda: get(metrics_port, "/readyz")[0] == 503, timeout=15, interval=0.5, what="/readyz 503 again")


def test_the_portal_counts_its_requests_and_mails(start_portal: Any) -> None:  # noqa: F811 - the fixture
    """The portal's process (two ICAP workers: a process of its own) counts its answers by route and status,
    and the mails it hands to the relay, into the same /metrics."""
    metrics_port = free_port()
    inbox = Inbox()
    with smtp_sink(inbox) as smtp:
        portal: Portal = start_portal(sections=smtp + f"metrics:\n  listen: 127.0.0.1:{metrics_port}\n")
        wait_for_port(metrics_port)
        assert portal.submit(portal.token()).status == 303  # a request: answered, and mailed to the heads
        assert portal.get("/nothing-here").status == 404
        wait_until(lambda: inbox.messages, timeout=10, what="the heads' mail")

        def counted() -> str | None:
            text = get(metrics_port, "/metrics")[1]
            mailed = 'clearance_portal_mails_total{kind="request",sent="true"} 1.0' in text
            return text if mailed and 'route="request",status="303"' in text else None

        text = wait_until(counted, timeout=5, interval=0.2, what="the portal's counts")
    assert re.search(r'clearance_portal_requests_total\{route="other",status="404"\} 1\.0', text), text
