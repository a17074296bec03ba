"""The block page Clearance sends, opened in a real headless Chromium."""

from __future__ import annotations

import re
import struct
import threading
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs

import pytest

from tests.conftest import CLI, StartServer
from tests.support.browser import dump_dom, screenshot
from tests.support.icap_client import exchange, reqmod, wait_until_synced
from tests.support.playwright_browser import chromium_page


def block_page_body(response: bytes) -> bytes:
    head, _, rest = response.partition(b"\r\n\r\n")
    offset = int(re.search(rb"res-body=(\d+)", head).group(1))  # type: ignore[union-attr]
    chunks = rest[offset:]
    body = bytearray()
    while True:
        size_line, _, chunks = chunks.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            return bytes(body)
        body += chunks[:size]
        chunks = chunks[size + 2 :]


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def distinct_colours(path: Path) -> int:
    """Rough check that the screenshot is not blank: count distinct pixels in the first rows."""
    data = path.read_bytes()
    idat = b"".join(
        data[pos + 8 : pos + 8 + struct.unpack(">I", data[pos : pos + 4])[0]]
        for pos in [m.start() - 4 for m in re.finditer(b"IDAT", data)]
    )
    raw = zlib.decompress(idat)
    return len(set(raw[: 200_000]))


@pytest.mark.browser
def test_block_page_renders_in_chromium(
    cli: CLI, icap_server: tuple[str, int], tmp_path: Path, redis_url: str
) -> None:
    cli("categories", "add", "webmail", "mail.google.com")
    wait_until_synced(icap_server[1], redis_url)
    (response,) = exchange(icap_server[1], reqmod("http://mail.google.com/mail/u/0/", user="<b>alice</b>"))
    page = tmp_path / "block.html"
    page.write_bytes(block_page_body(response))

    dom = dump_dom(page.as_uri(), tmp_path)
    assert "Access to this site is blocked" in dom and "此網站已被封鎖" in dom
    assert "mail.google.com" in dom
    assert "<b>alice</b>" not in dom and "&lt;b&gt;alice&lt;/b&gt;" in dom  # reflected, escaped
    reference = re.search(rb"X-Clearance-Reference: ([0-9a-f]+)", response).group(1).decode()  # type: ignore[union-attr]
    assert reference in dom

    shot = screenshot(page.as_uri(), tmp_path / "block.png", tmp_path)
    assert png_size(shot) == (1000, 1100)
    assert distinct_colours(shot) > 3


HOSTILE = "<script>document.title='pwned'</script>"


@pytest.mark.browser
def test_hostile_input_never_runs_in_chromium(
    cli: CLI, start_icap_server: StartServer, tmp_path: Path, redis_url: str
) -> None:
    """A script in the path, the user name and the config's contact text is shown as text, never run."""
    server = start_icap_server(
        f'organisation:\n  contact: "{HOSTILE}"\npolicy:\n  load_default_lists: false\nlogging:\n  format: json\n'
    )
    cli("categories", "add", "webmail", "mail.google.com")
    wait_until_synced(server.port, redis_url)
    (response,) = exchange(server.port, reqmod(f"http://mail.google.com/{HOSTILE}", user=HOSTILE))
    body = block_page_body(response)
    assert b"<script" not in body
    page = tmp_path / "hostile.html"
    page.write_bytes(body)

    dom = dump_dom(page.as_uri(), tmp_path)
    title = re.search(r"<title>(.*?)</title>", dom, re.DOTALL).group(1)  # type: ignore[union-attr]
    assert title.startswith("Access to this site is blocked · 此網站已被封鎖") and "pwned" not in title
    escaped = "&lt;script&gt;document.title='pwned'&lt;/script&gt;"
    assert dom.replace("<wbr>", "").count(escaped) >= 3, dom  # path, user, contact: as text
    assert "<script" not in dom


class _Recorder(ThreadingHTTPServer):
    """A local HTTP server: GET / serves a captured block page with its headers; POST /request records a form."""

    def __init__(self, head: bytes = b"", body: bytes = b"") -> None:
        self.head, self.body = head, body
        self.posts: list[dict[str, list[str]]] = []
        super().__init__(("127.0.0.1", 0), _Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(BaseHTTPRequestHandler):
    server: _Recorder

    def do_GET(self) -> None:
        self.wfile.write(self.server.head + self.server.body)

    def do_POST(self) -> None:
        length = int(self.headers["Content-Length"])
        self.server.posts.append(parse_qs(self.rfile.read(length).decode()))
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.end_headers()
        self.wfile.write(b"request recorded")

    def log_message(self, *args: object) -> None:
        pass


@pytest.mark.browser
def test_page_under_its_own_csp_is_styled_and_the_form_reaches_the_portal(tmp_path: Path) -> None:
    """Served with its real headers: the CSP lets its styles apply and the form post to the portal, and nothing
    else; the posted token is one the portal accepts."""
    from icap_server.config import load_config
    from icap_server.service.application import PortalLink
    from policy.tokens import verify
    from tests.support.pages import NOW, answer, application, icap_request

    portal = _Recorder()
    config_path = tmp_path / "c.yaml"
    config_path.write_text("blockpages:\n  primary_colour: '#123456'\n", encoding="utf-8")
    app = application(load_config(config_path))
    app.portal = PortalLink(portal.origin, "s3cret", 1800, 90)
    result = answer(app, icap_request("http://mail.google.com/mail/", "alice", "Accept-Language: zh-HK"))
    head = b"HTTP/1.1 403 Forbidden\r\n" + result.http_head.split(b"\r\n", 1)[1]
    site = _Recorder(head, result.body)
    try:
        with chromium_page(locale="zh-HK") as page:
            problems: list[str] = []
            page.on("console", lambda message: problems.append(message.text))
            response = page.goto(site.origin + "/")
            assert response is not None and response.status == 403
            assert "form-action " + portal.origin in response.headers["content-security-policy"]
            assert page.title().startswith("此網站已被封鎖")
            colour = page.eval_on_selector("main", "e => getComputedStyle(e).borderTopColor")
            assert colour == "rgb(18, 52, 86)"  # #123456: the inline <style> was allowed by its hash
            assert [text for text in problems if "Content Security Policy" in text or "Refused" in text] == []
            page.fill("#justification", "Exchange files with the Singapore office on a joint audit")
            page.fill("#days", "14")
            page.click("button[type=submit]")
            page.wait_for_load_state()
            assert "request recorded" in page.inner_text("body")
    finally:
        site.shutdown()
        portal.shutdown()
    (fields,) = portal.posts
    assert fields["justification"] == ["Exchange files with the Singapore office on a joint audit"]
    assert fields["days"] == ["14"]
    claim = verify(fields["token"][0], "s3cret", NOW)
    assert (claim.user, claim.category, claim.host) == ("alice", "webmail", "mail.google.com")
