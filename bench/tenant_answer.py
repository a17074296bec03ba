"""What a tenant-restricted answer costs next to a 204, in process: evaluate + respond + serialise, µs/request.

    .venv/bin/python bench/tenant_answer.py [N]

Both paths parse the same kind of REQMOD with the sans-I/O connection, judge it from in-memory policy and
serialise the answer; the only difference is the answer (a cached 204, or the head re-serialised with the
vendor's headers, which are built once per policy).
"""

from __future__ import annotations

import sys
import time
from datetime import UTC, datetime

import msgspec

from icap_server.config import Config
from icap_server.protocol import ICAPConnection, ICAPRequest
from icap_server.service.application import Application, FixedPolicy
from policy.services import Service
from policy.state import PolicyState, ServiceCatalogue


def message(host: str) -> bytes:
    http = f"GET https://{host}/mail/u/0/ HTTP/1.1\r\nHost: {host}\r\nAccept: */*\r\nUser-Agent: bench\r\n\r\n".encode()
    icap = (
        "REQMOD icap://127.0.0.1/reqmod ICAP/1.0\r\nHost: 127.0.0.1\r\nAllow: 204\r\nPreview: 0\r\n"
        f"X-Client-Username: alice\r\nEncapsulated: req-hdr=0, null-body={len(http)}\r\n\r\n"
    )
    return icap.encode() + http


def run(app: Application, data: bytes, count: int) -> tuple[float, int]:
    conn = ICAPConnection()
    status = 0
    started = time.perf_counter()
    for _ in range(count):
        conn.receive_data(data)
        request = conn.next_event()
        assert isinstance(request, ICAPRequest)
        now = datetime.now(UTC)
        verdict = app.evaluate(request, now)
        conn.next_event()  # EndOfMessage
        response = app.respond(request, verdict, conn.can_send_204, None, now)
        status = response.status
        conn.send(response)
    return (time.perf_counter() - started) / count * 1e6, status


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 50_000
    gmail = Service("gmail", "Gmail", "Gmail", "webmail", web=("mail.google.com",), tenant="google")
    state = PolicyState(version=1, services=ServiceCatalogue([gmail]))
    state.categories.add("webmail", ["mail.google.com"])
    config = msgspec.convert(
        {
            "policy": {"load_default_lists": False},
            "tenant_restrictions": {"google": {"domains": ["example.gov.hk", "dept.example.gov.hk"]}},
        },
        Config,
    )
    app = Application(config, FixedPolicy(state))
    plain = Application(msgspec.convert({"policy": {"load_default_lists": False}}, Config), FixedPolicy(state))
    for label, application, host in (
        ("204, no tenant restrictions configured", plain, "www.example.com"),
        ("204, tenant restrictions configured", app, "www.example.com"),
        ("modified request, unrestricted vendor host", app, "www.google.com"),
        ("modified request (tenant-restricted)", app, "mail.google.com"),
    ):
        run(application, message(host), 2000)  # warm the caches
        micros, status = min(run(application, message(host), count) for _ in range(3))
        print(f"{label:42} ICAP {status}  {micros:6.2f} µs/request")


if __name__ == "__main__":
    main()
