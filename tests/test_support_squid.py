"""Self-test of the Squid + origin fixtures, using a tiny stand-in ICAP server (no Clearance code)."""

from __future__ import annotations

import socketserver
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from io import BufferedIOBase
from pathlib import Path

import pytest

from tests.support.net import free_port
from tests.support.origin import OriginServer
from tests.support.squid import SquidProxy

pytestmark = pytest.mark.squid

OPTIONS_RESPONSE = (
    b"ICAP/1.0 200 OK\r\n"
    b'ISTag: "standin-1"\r\n'
    b"Methods: REQMOD\r\n"
    b"Allow: 204\r\n"
    b"Preview: 0\r\n"
    b"Options-TTL: 3600\r\n"
    b"Encapsulated: null-body=0\r\n\r\n"
)
NO_CONTENT = b'ICAP/1.0 204 No Content\r\nISTag: "standin-1"\r\nEncapsulated: null-body=0\r\n\r\n'
BLOCK_BODY = b"blocked by stand-in"
BLOCK_HTTP = (
    b"HTTP/1.1 403 Forbidden\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n" % len(BLOCK_BODY)
)
BLOCKED = (
    b'ICAP/1.0 200 OK\r\nISTag: "standin-1"\r\nEncapsulated: res-hdr=0, res-body=%d\r\n\r\n' % len(BLOCK_HTTP)
    + BLOCK_HTTP + b"%x\r\n" % len(BLOCK_BODY) + BLOCK_BODY + b"\r\n0\r\n\r\n"
)


@dataclass(frozen=True)
class IcapRequest:
    method: str
    headers: dict[str, str]  # lower-cased names
    http_head: bytes  # the encapsulated HTTP request line and headers
    body: bytes  # de-chunked preview/body bytes


def _read_icap_request(rfile: BufferedIOBase) -> IcapRequest | None:
    """One complete ICAP request (headers, encapsulated HTTP head, chunked preview/body); None at EOF."""
    request_line = rfile.readline()
    if not request_line:
        return None
    headers: dict[str, str] = {}
    while (line := rfile.readline()) not in (b"\r\n", b"\n", b""):
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    sections = [part.strip().split("=") for part in headers.get("encapsulated", "").split(",") if "=" in part]
    body_offset = next((int(off) for name, off in sections if name.endswith("body")), 0)
    has_body = any(name in ("req-body", "res-body") for name, _ in sections)
    http_head = rfile.read(body_offset)
    body = bytearray()
    while has_body:
        size = int(rfile.readline().split(b";")[0].strip() or b"0", 16)  # "0; ieof" ends a full preview
        if size == 0:
            rfile.readline()  # the blank line after the last chunk
            break
        body += rfile.read(size)
        rfile.readline()
    return IcapRequest(request_line.split()[0].decode(), headers, http_head, bytes(body))


class StandInIcap(socketserver.ThreadingTCPServer):
    """OPTIONS -> the usual headers; REQMOD -> 204, except CONNECT -> 200 + encapsulated HTTP 403."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self) -> None:
        self.requests: list[IcapRequest] = []
        self.lock = threading.Lock()
        super().__init__(("127.0.0.1", free_port()), _IcapHandler)
        self.port = self.server_address[1]
        threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def reqmods(self) -> list[IcapRequest]:
        with self.lock:
            return [r for r in self.requests if r.method == "REQMOD"]


class _IcapHandler(socketserver.StreamRequestHandler):
    server: StandInIcap

    def handle(self) -> None:
        while (request := _read_icap_request(self.rfile)) is not None:  # persistent connection
            with self.server.lock:
                self.server.requests.append(request)
            if request.method == "OPTIONS":
                self.wfile.write(OPTIONS_RESPONSE)
            elif request.http_head.startswith(b"CONNECT "):
                self.wfile.write(BLOCKED)
            else:
                self.wfile.write(NO_CONTENT)  # also fine after a preview: Squid then sends the original


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[StandInIcap, OriginServer, SquidProxy]]:
    icap = StandInIcap()
    workdir: Path = tmp_path_factory.mktemp("squid")
    try:
        with OriginServer() as origin, SquidProxy(icap.port, ["mail.google.com"], workdir) as squid:
            yield icap, origin, squid
    finally:
        icap.shutdown()
        icap.server_close()


def test_get_goes_through_icap_to_the_origin(stack: tuple[StandInIcap, OriginServer, SquidProxy]) -> None:
    icap, origin, squid = stack
    result = squid.curl(f"http://mail.google.com:{origin.port}/hello", user="alice")
    assert result.status == 200, (result, squid.cache_log_text()[-2000:])
    assert result.text == f"origin-ok mail.google.com:{origin.port} /hello"
    assert result.headers["content-type"] == "text/plain"
    seen = origin.wait_for(lambda r: r.path == "/hello")
    assert (seen.method, seen.host) == ("GET", f"mail.google.com:{origin.port}")
    reqmod = next(r for r in icap.reqmods() if b"/hello " in r.http_head)
    assert reqmod.headers["x-client-username"] == "alice"
    assert reqmod.headers["x-client-ip"] == "127.0.0.1"


def test_post_body_reaches_the_origin(stack: tuple[StandInIcap, OriginServer, SquidProxy]) -> None:
    _icap, origin, squid = stack
    url = f"http://mail.google.com:{origin.port}/upload"
    result = squid.curl(url, user="bob", method="POST", data=b"x" * 5000)
    assert result.status == 200, result
    assert result.text.endswith("/upload received=5000")
    assert origin.wait_for(lambda r: r.path == "/upload").body == b"x" * 5000


def test_connect_gets_the_icap_block_answer(stack: tuple[StandInIcap, OriginServer, SquidProxy]) -> None:
    icap, _origin, squid = stack
    result = squid.curl("https://mail.google.com/", user="carol")
    assert result.connect_status == 403, result
    reqmod = next(r for r in icap.reqmods() if r.http_head.startswith(b"CONNECT mail.google.com:443 "))
    assert reqmod.headers["x-client-username"] == "carol"


def test_no_credentials_get_407(stack: tuple[StandInIcap, OriginServer, SquidProxy]) -> None:
    _icap, origin, squid = stack
    assert squid.curl(f"http://mail.google.com:{origin.port}/anon", user=None).status == 407
