"""What a block page costs in process, pre-built and through Jinja: µs per blocked request (issue 12, item 1).

    .venv/bin/python bench/blockpage_cost.py [N]

Two measurements, each the best of five runs of N:
- rendering only: `Renderer.render` (Jinja every time, the reference) against `PrebuiltRenderer.render` (the page
  built once, filled per request), for each format, with the request form and without;
- whole requests through `Application`: a Squid-shaped REQMOD parsed by the sans-I/O connection, `evaluate`,
  `respond` (with the portal on, so a signed token per block) and `send`, for a blocked host and, beside it, a
  pass answered 204; once with pre-built pages and once with `block_pages(config, prebuilt=False)`.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime

import msgspec

from blockpages.render import BlockFacts, RequestForm, ServiceName
from icap_server.config import Config
from icap_server.protocol import ICAPConnection, ICAPRequest
from icap_server.service.application import Application, FixedPolicy, PortalLink
from icap_server.service.pages import block_pages
from policy.state import PolicyState

FACTS = BlockFacts(
    "mail.google.com",
    "/mail/u/0/#inbox",
    "webmail",
    "alice",
    "10.0.0.1",
    "no-approval",
    "0123456789ab",
    datetime(2026, 12, 2, 9, 30, tzinfo=UTC),
    ServiceName("gmail", "Gmail", "Gmail"),
)
FORM = RequestForm("https://portal.example.gov:8443/request", "e30.c2lnbmF0dXJl" * 8, 180, 20)


def best(action: Callable[[], object], count: int) -> float:
    """µs per call: the best of five runs (the VM is shared; the minimum is the least disturbed)."""
    action()
    runs = []
    for _ in range(5):
        started = time.perf_counter()
        for _ in range(count):
            action()
        runs.append((time.perf_counter() - started) / count * 1e6)
    return min(runs)


def rendering(config: Config, count: int) -> None:
    jinja, prebuilt = block_pages(config, prebuilt=False), block_pages(config)
    print(f"{'rendering only':34} {'Jinja':>9} {'pre-built':>10}")
    for fmt in ("html", "json", "text"):
        for form in (None, FORM):
            label = f"{fmt}, {'with' if form else 'no'} request form"
            before = best(lambda: jinja.render(FACTS, fmt, "en", form), count)  # noqa: B023
            after = best(lambda: prebuilt.render(FACTS, fmt, "en", form), count)  # noqa: B023
            print(f"  {label:32} {before:7.1f} µs {after:7.1f} µs")


def message(host: str) -> bytes:
    http = (
        f"GET http://{host}/mail/u/0/ HTTP/1.1\r\nHost: {host}\r\nAccept: text/html,*/*;q=0.8\r\n"
        "Accept-Language: en-GB,en;q=0.9\r\nUser-Agent: bench\r\n\r\n"
    ).encode()
    icap = (
        "REQMOD icap://127.0.0.1/reqmod ICAP/1.0\r\nHost: 127.0.0.1\r\nAllow: 204\r\nPreview: 0\r\n"
        "X-Client-IP: 10.0.0.1\r\nX-Client-Username: alice\r\n"
        f"Encapsulated: req-hdr=0, null-body={len(http)}\r\n\r\n"
    )
    return icap.encode() + http


def one_request(app: Application, conn: ICAPConnection, data: bytes) -> int:
    conn.receive_data(data)
    request = conn.next_event()
    assert isinstance(request, ICAPRequest)
    now = datetime.now(UTC)
    verdict = app.evaluate(request, now)
    conn.next_event()  # EndOfMessage
    response = app.respond(request, verdict, conn.can_send_204, None, now)
    conn.send(response)
    return response.status


def whole_requests(config: Config, count: int) -> None:
    state = PolicyState(version=1)
    state.categories.add("webmail", ["mail.google.com"])
    print(f"{'through Application.respond':34} {'Jinja':>9} {'pre-built':>10}")
    costs = {}
    cases = (
        ("blocked, portal on (page, form)", "mail.google.com", True),
        ("blocked, portal off (page)", "mail.google.com", False),
        ("allowed (204)", "www.example.com", False),
    )
    for prebuilt in (False, True):
        for label, host, portal in cases:
            app = Application(config, FixedPolicy(state))
            app.portal = PortalLink("https://portal.example.gov:8443", "s3cret", 1800, 180) if portal else None
            app.pages = block_pages(config, prebuilt=prebuilt)
            conn = ICAPConnection()
            data = message(host)
            costs[prebuilt, label] = best(lambda: one_request(app, conn, data), count)  # noqa: B023
    for label, _, _ in cases:
        print(f"  {label:32} {costs[False, label]:7.1f} µs {costs[True, label]:7.1f} µs")


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 5_000
    config = msgspec.convert({"policy": {"load_default_lists": False}}, Config)
    rendering(config, count)
    whole_requests(config, count)


if __name__ == "__main__":
    main()
