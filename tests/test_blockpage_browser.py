"""The block page Clearance sends, opened in a real headless Chromium."""

from __future__ import annotations

import re
import struct
import zlib
from pathlib import Path

import pytest

from tests.conftest import CLI
from tests.support.browser import dump_dom, screenshot
from tests.support.icap_client import exchange, reqmod, wait_until_synced


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
