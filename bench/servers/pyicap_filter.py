"""A pyicap 1.0b1 filter making Clearance's decision, as a benchmark peer.

Host from the request URL (else the Host header), a label-boundary suffix walk against a set of listed
hosts, then ICAP 204 when allowed (and the client sent `Allow: 204`), else 200 carrying an HTTP 403 page.
A threaded socketserver: one thread per connection, as pyicap is written to be run.

    python pyicap_filter.py PORT HOSTS_FILE
"""

from __future__ import annotations

import collections
import collections.abc
import socketserver
import sys
from urllib.parse import urlsplit

# pyicap 1.0b1 (2017) checks `isinstance(method, collections.Callable)`, an alias removed in Python 3.10;
# without this shim every request fails with AttributeError.
collections.Callable = collections.abc.Callable  # type: ignore[attr-defined]

from pyicap import BaseICAPRequestHandler, ICAPServer  # noqa: E402

ISTAG = b'"pyicap-bench-1"'
BLOCK_PAGE = (
    b"<!doctype html><html><head><meta charset=utf-8><title>Blocked</title></head>"
    b"<body><h1>Access to this site needs approval</h1></body></html>"
)


def load_hosts(path: str) -> frozenset[str]:
    with open(path, encoding="utf-8") as file:
        return frozenset(line.strip().lower() for line in file if line.strip() and not line.startswith("#"))


def is_listed(host: str, listed: frozenset[str]) -> bool:
    """True when the host or a parent domain on a label boundary is in the list."""
    while True:
        if host in listed:
            return True
        dot = host.find(".")
        if dot < 0:
            return False
        host = host[dot + 1 :]


def request_host(target: bytes, headers: dict[bytes, list[bytes]]) -> str:
    host = urlsplit(target.decode("latin-1")).hostname
    if not host:
        host = headers.get(b"host", [b""])[0].decode("latin-1").rsplit(":", 1)[0]
    return host.rstrip(".").lower()


class FilterHandler(BaseICAPRequestHandler):
    listed: frozenset[str] = frozenset()
    disable_nagle_algorithm = True  # otherwise a block (header write + chunk writes) waits on delayed ACKs

    def reqmod_OPTIONS(self) -> None:
        self.set_icap_response(200)
        self.set_icap_header(b"ISTag", ISTAG)
        self.set_icap_header(b"Methods", b"REQMOD")
        self.set_icap_header(b"Service", b"pyicap bench filter")
        self.set_icap_header(b"Preview", b"0")
        self.set_icap_header(b"Transfer-Preview", b"*")
        self.set_icap_header(b"Allow", b"204")
        self.send_headers(False)

    def reqmod_REQMOD(self) -> None:
        self.set_icap_header(b"ISTag", ISTAG)
        target = self.enc_req[1] if self.enc_req and len(self.enc_req) > 1 else b""
        if not is_listed(request_host(target, self.enc_req_headers), self.listed):
            self.no_adaptation_required()
            return
        while self.read_chunk() != b"":  # drain any request body before answering
            pass
        self.set_icap_response(200)
        self.set_enc_status(b"HTTP/1.1 403 Forbidden")
        self.set_enc_header(b"Content-Type", b"text/html; charset=utf-8")
        self.set_enc_header(b"Content-Length", str(len(BLOCK_PAGE)).encode())
        self.set_enc_header(b"Cache-Control", b"no-store")
        self.send_headers(True)
        self.write_chunk(BLOCK_PAGE)
        self.write_chunk(b"")


class ThreadingICAPServer(socketserver.ThreadingMixIn, ICAPServer):
    daemon_threads = True
    request_queue_size = 1024


def main() -> None:
    port, hosts_file = int(sys.argv[1]), sys.argv[2]
    FilterHandler.listed = load_hosts(hosts_file)
    with ThreadingICAPServer(("127.0.0.1", port), FilterHandler) as server:
        server.serve_forever()


if __name__ == "__main__":
    main()
