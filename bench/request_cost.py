"""What one Squid-shaped REQMOD costs in process, through `ICAPProtocol.data_received` (issue 12, item 3).

    .venv/bin/python bench/request_cost.py [N]

No sockets: a stand-in transport takes the answer. The whole request path otherwise runs as in a server:
the quick scan (C, its pure-Python twin, or none: every message through the reference parser), identity,
the decision, the answer's bytes and the access-log line (written directly into a discarded buffer). Four
requests: an allowed host (204), an allowed host without `Allow: 204` (echo), a blocked one (the block
page, with the portal's signed form), and a tenant-restricted pass (the modified request). µs per request,
best of five runs of N.
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script from anywhere

from blockpage_cost import best  # the same best-of-five timing

from icap_server.config import load_config
from icap_server.protocol import QuickScan, quick_scan
from icap_server.protocol._quick import scan
from icap_server.runtime.logs import FastTimeStamper, access_log
from icap_server.runtime.server import ICAPProtocol, ICAPServer
from icap_server.service.application import Application, FixedPolicy, PortalLink
from policy.state import PolicyState

CONFIG = "tenant_restrictions:\n  google: {domains: [example.gov.hk]}\n"
HEADERS = "User-Agent: Mozilla/5.0 (X11; Linux x86_64) Chrome/131\r\nAccept: text/html,*/*\r\nAccept-Language: en\r\n"


def message(url: str, host: str, allow: bool = True) -> bytes:
    http = f"GET {url} HTTP/1.1\r\nHost: {host}\r\n{HEADERS}\r\n".encode()
    allowed = "Allow: 204\r\n" if allow else ""
    icap = (
        "REQMOD icap://127.0.0.1:1344/reqmod ICAP/1.0\r\nHost: 127.0.0.1:1344\r\n"
        f"Date: Wed, 02 Dec 2026 05:00:00 GMT\r\nEncapsulated: req-hdr=0, null-body={len(http)}\r\n{allowed}"
        "Preview: 0\r\nX-Client-IP: 10.0.0.1\r\nX-Client-Username: alice\r\n\r\n"
    ).encode()
    return icap + http


REQUESTS = {
    "allowed, 204": message("http://www.example.com/index.html", "www.example.com"),
    "allowed, echo (no Allow: 204)": message("http://www.example.com/index.html", "www.example.com", allow=False),
    "blocked, page with form": message("http://mail.example.com/inbox", "mail.example.com"),
    "tenant header added": message("http://www.google.com/search?q=x", "www.google.com"),
}


class Transport:
    def write(self, data: bytes) -> None: ...

    def close(self) -> None: ...

    def is_closing(self) -> bool:
        return False


def application(folder: Path) -> Application:
    path = folder / "clearance.yaml"
    path.write_text(CONFIG, encoding="utf-8")
    state = PolicyState(version=1)
    state.categories.add("webmail", ["mail.example.com"] + [f"mail{n}.example.net" for n in range(2000)])
    app = Application(load_config(path), FixedPolicy(state))
    app.portal = PortalLink("https://portal.example.gov:8443", "s3cret", 1800, 90)
    return app


def main() -> None:
    import tempfile

    count = int(sys.argv[1]) if len(sys.argv) > 1 else 20000
    app = application(Path(tempfile.mkdtemp()))
    access_log.direct(lambda line: None, {"service_name": "clearance"}, FastTimeStamper())
    modes: list[tuple[str, QuickScan | None]] = []
    chosen = quick_scan(app.config.identity.username_header)
    if chosen.name == "c":
        modes.append(("C quick scan", chosen))
    modes += [("Python quick scan", QuickScan(scan, b"x-client-username", "python")), ("reference only", None)]
    print(f"{'µs per request (in process)':32}" + "".join(f"{name:>20}" for name, _ in modes))
    for label, data in REQUESTS.items():
        row = []
        for _, quick in modes:
            server = ICAPServer(app, quick=False)
            server.quick = quick
            protocol = ICAPProtocol(server)
            protocol.connection_made(Transport())  # type: ignore[arg-type]
            row.append(best(lambda protocol=protocol, data=data: protocol.data_received(data), count))
        print(f"{label:32}" + "".join(f"{value:>20.1f}" for value in row))
    print(f"(N={count}, best of 5; {datetime.now(UTC):%Y-%m-%d %H:%M} UTC)")


if __name__ == "__main__":
    main()
