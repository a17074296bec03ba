"""Clearance against an independent ICAP implementation: the c-icap project's `c-icap-client`.

How c-icap-client reports (c-icap 0.5.x): with -v it prints to stderr the OPTIONS it learned, then an
"ICAP HEADERS:" section (the ICAP status line and headers) and, for REQMOD/RESPMOD, a "REQMOD HEADERS:" or
"RESPMOD HEADERS:" section with the encapsulated HTTP headers it got back (or sent, after a 204); each
line is tab-indented. The encapsulated body goes to stdout, or to the file given with -o. It exits 0 even
for an ICAP 404, so the tests read what it printed.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import CLI
from tests.support.icap_client import exchange, reqmod, wait_until_synced
from tests.support.requirements import require_program
from tests.support.waiting import wait_until

pytestmark = pytest.mark.cicap


@dataclass(frozen=True)
class CICAPResult:
    returncode: int
    stderr: str
    sections: dict[str, list[str]]  # "ICAP HEADERS" -> ["ICAP/1.0 200 OK", "ISTag: ...", ...]
    body: bytes | None  # what -o wrote; None when c-icap-client wrote no file (no body came back)

    def status_line(self) -> str:
        return self.sections["ICAP HEADERS"][0]

    def header(self, section: str, name: str) -> str | None:
        for line in self.sections.get(section, [])[1:]:
            key, sep, value = line.partition(":")
            if sep and key.strip().lower() == name.lower():
                return value.strip()
        return None


def parse_sections(text: str) -> dict[str, list[str]]:
    """The "NAME:" sections of c-icap-client -v output, each with its tab-indented lines (last one wins)."""
    sections: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in text.splitlines():
        if line.startswith("\t"):
            if current is not None:
                current.append(line.strip())
        elif re.fullmatch(r"[A-Z0-9 ]+:", line):
            current = sections[line[:-1]] = []
        else:
            current = None
    return sections


def c_icap_client(port: int, *args: str, out: Path, timeout: float = 30) -> CICAPResult:
    program = require_program("c-icap-client")
    out.unlink(missing_ok=True)
    proc = subprocess.run(
        [program, "-i", "127.0.0.1", "-p", str(port), *args, "-v", "-o", str(out)],
        capture_output=True,
        timeout=timeout,
    )
    stderr = proc.stderr.decode("utf-8", errors="replace")
    sections = parse_sections(stderr)
    assert "ICAP HEADERS" in sections, f"c-icap-client printed no ICAP headers (exit {proc.returncode}):\n{stderr}"
    body = out.read_bytes() if out.exists() else None
    return CICAPResult(proc.returncode, stderr, sections, body)


def icap_records(tmp_path: Path) -> list[dict[str, Any]]:
    """Log lines of the test's own transactions (after the set-up's sync checks, see `server`)."""
    offset_file = tmp_path / "serve.log.offset"
    offset = int(offset_file.read_text()) if offset_file.exists() else 0
    with (tmp_path / "serve.log").open("rb") as log:
        log.seek(offset)
        lines = log.read().decode("utf-8").splitlines()
    return [record for line in lines if line.startswith("{") and (record := json.loads(line)).get("event") == "icap"]


def wait_for_record(tmp_path: Path, **fields: Any) -> dict[str, Any]:
    """The one log line with these field values (the server logs just after it answers)."""
    deadline = time.monotonic() + 5
    while True:
        found = [r for r in icap_records(tmp_path) if all(r.get(k) == v for k, v in fields.items())]
        if found or time.monotonic() > deadline:
            assert len(found) == 1, (fields, icap_records(tmp_path))
            return found[0]
        time.sleep(0.05)


@pytest.fixture
def server(icap_server: tuple[str, int], cli: CLI, redis_url: str, tmp_path: Path) -> int:
    """The ICAP port of a running Clearance with mail.google.com in webmail (restricted)."""
    require_program("c-icap-client")
    cli("categories", "add", "webmail", "mail.google.com")
    wait_until_synced(icap_server[1], redis_url)
    mark_log_start(tmp_path, icap_server[1])
    return icap_server[1]


def mark_log_start(tmp_path: Path, port: int) -> None:
    """Remember where the test's own log lines will start, once the set-up's lines have all been written.

    Log lines are written in batches, in order (one worker): once a marker request's line is in the file,
    every earlier line is too, and the test's own start after it.
    """
    marker = f"log-mark-{uuid.uuid4().hex[:12]}.example"
    exchange(port, reqmod(f"http://{marker}/"))
    log = tmp_path / "serve.log"

    def marker_end() -> int | None:
        data = log.read_bytes()
        at = data.find(f'"host":"{marker}"'.encode())
        return None if at < 0 or data.find(b"\n", at) < 0 else data.find(b"\n", at) + 1

    (tmp_path / "serve.log.offset").write_text(str(wait_until(marker_end, timeout=5, what="the marker's log line")))


def test_options(server: int, tmp_path: Path) -> None:
    result = c_icap_client(server, "-s", "reqmod", "-method", "OPTIONS", out=tmp_path / "out")
    assert result.returncode == 0, result.stderr
    assert result.status_line() == "ICAP/1.0 200 OK", result.stderr
    assert result.header("ICAP HEADERS", "Methods") == "REQMOD"
    assert re.fullmatch(r'"[^"]{1,30}"', result.header("ICAP HEADERS", "ISTag") or ""), result.stderr
    assert result.header("ICAP HEADERS", "Allow") == "204"
    assert result.header("ICAP HEADERS", "Preview") == "0"
    assert result.header("ICAP HEADERS", "Encapsulated") == "null-body=0"
    assert int(result.header("ICAP HEADERS", "Options-TTL") or "0") > 0
    # and c-icap-client understood them
    assert "Allow 204: Yes" in result.sections["OPTIONS"]
    assert "Preview: 0" in result.sections["OPTIONS"]
    assert result.body is None
    record = wait_for_record(tmp_path, method="OPTIONS", service="/reqmod")
    assert record["status"] == 200


def test_respmod_service_options_list_respmod(server: int, tmp_path: Path) -> None:
    result = c_icap_client(server, "-s", "respmod", out=tmp_path / "out")
    assert result.status_line() == "ICAP/1.0 200 OK", result.stderr
    assert result.header("ICAP HEADERS", "Methods") == "RESPMOD"


def test_allowed_url_gets_204(server: int, tmp_path: Path) -> None:
    result = c_icap_client(server, "-s", "reqmod", "-req", "http://example.org/", out=tmp_path / "out")
    assert result.status_line() == "ICAP/1.0 204 No Content", result.stderr
    assert "No modification needed" in result.stderr
    assert result.body is None
    record = wait_for_record(tmp_path, method="REQMOD")
    assert (record["status"], record["decision"], record["host"]) == (204, "pass", "example.org")


def test_restricted_url_gets_the_block_page(server: int, tmp_path: Path) -> None:
    result = c_icap_client(
        server, "-s", "reqmod", "-req", "http://mail.google.com/", "-x", "X-Client-Username: alice",
        out=tmp_path / "page.html",
    )
    assert result.status_line() == "ICAP/1.0 200 OK", result.stderr
    encapsulated = result.header("ICAP HEADERS", "Encapsulated") or ""
    assert re.fullmatch(r"res-hdr=0, res-body=\d+", encapsulated), encapsulated
    http = "RESPMOD HEADERS"  # c-icap-client's label for the encapsulated HTTP response
    assert result.sections[http][0] == "HTTP/1.1 403 Forbidden", result.stderr
    assert result.header(http, "Content-Type") == "text/html; charset=utf-8"
    assert result.header(http, "Cache-Control") == "no-store"
    reference = result.header(http, "X-Clearance-Reference") or ""
    assert re.fullmatch(r"[0-9a-f]+", reference), result.stderr

    assert result.body is not None, result.stderr
    assert result.header(http, "Content-Length") == str(len(result.body))
    page = result.body.decode("utf-8")
    assert page.lstrip().startswith("<!DOCTYPE html>")
    assert "Access to this site is blocked" in page
    assert "此網站已被封鎖" in page
    assert "<dd>mail.google.com</dd>" in page
    assert "<dd>alice</dd>" in page
    assert f"<dd>{reference}</dd>" in page

    record = wait_for_record(tmp_path, reference=reference)
    assert (record["method"], record["status"], record["decision"], record["reason"]) == (
        "REQMOD", 200, "block", "no-approval",
    )
    assert (record["user"], record["host"], record["category"]) == ("alice", "mail.google.com", "webmail")


def test_restricted_url_with_an_approval_gets_204(server: int, cli: CLI, tmp_path: Path, redis_url: str) -> None:
    approval_id = cli(
        "approvals", "grant", "--user", "alice", "--category", "webmail", "--days", "1",
        "--approver", "head", "--reason", "c-icap test",
    ).stdout.strip()
    wait_until_synced(server, redis_url)
    mark_log_start(tmp_path, server)
    args = ("-s", "reqmod", "-req", "http://mail.google.com/", "-x", "X-Client-Username: CORP\\Alice")
    result = c_icap_client(server, *args, out=tmp_path / "out")
    assert result.status_line() == "ICAP/1.0 204 No Content", result.stderr
    record = wait_for_record(tmp_path, method="REQMOD")
    assert (record["reason"], record["user"], record["approval_id"]) == ("approved", "alice", approval_id)

    # someone else is still blocked
    other = c_icap_client(
        server, "-s", "reqmod", "-req", "http://mail.google.com/", "-x", "X-Client-Username: bob",
        out=tmp_path / "out",
    )
    assert other.sections["RESPMOD HEADERS"][0] == "HTTP/1.1 403 Forbidden", other.stderr


def test_unknown_service_gets_404(server: int, tmp_path: Path) -> None:
    result = c_icap_client(server, "-s", "nosuch", out=tmp_path / "out")
    assert result.status_line().startswith("ICAP/1.0 404 "), result.stderr
    assert result.header("ICAP HEADERS", "ISTag"), result.stderr  # RFC 3507: ISTag in every response
    assert result.header("ICAP HEADERS", "Encapsulated") == "null-body=0"
    assert result.body is None
    record = wait_for_record(tmp_path, service="/nosuch")
    assert (record["method"], record["status"]) == ("OPTIONS", 404)


def test_unknown_service_reqmod_ends_with_404_not_a_hang(server: int, tmp_path: Path) -> None:
    # c-icap-client asks OPTIONS first; a 404 there (answered with Connection: close) ends its run cleanly.
    proc = subprocess.run(
        [require_program("c-icap-client"), "-i", "127.0.0.1", "-p", str(server), "-s", "nosuch",
         "-req", "http://example.org/", "-v"],
        capture_output=True, timeout=10,
    )
    assert proc.returncode == 0
    record = wait_for_record(tmp_path, service="/nosuch")  # the server writes its log lines in batches
    assert record["status"] == 404


def test_respmod_passes_content_unchanged(server: int, tmp_path: Path) -> None:
    content = tmp_path / "content.bin"
    content.write_bytes(os.urandom(50_000))
    allowed_204 = c_icap_client(
        server, "-s", "respmod", "-resp", "http://example.org/file.bin", "-f", str(content), out=tmp_path / "a.out"
    )
    assert allowed_204.status_line() == "ICAP/1.0 204 No Content", allowed_204.stderr
    assert allowed_204.body is None

    # without 204 (and without preview, where 204 is always allowed) the content must come back as it went
    echoed = c_icap_client(
        server, "-s", "respmod", "-resp", "http://example.org/file.bin", "-f", str(content), "-no204", "-nopreview",
        out=tmp_path / "b.out",
    )
    assert echoed.status_line() == "ICAP/1.0 200 OK", echoed.stderr
    assert echoed.sections["RESPMOD HEADERS"][0] == "HTTP/1.0 200 OK", echoed.stderr
    assert echoed.header("RESPMOD HEADERS", "Content-Length") == str(content.stat().st_size)
    assert echoed.body == content.read_bytes()


def test_reqmod_without_204_echoes_a_large_request_body(server: int, tmp_path: Path) -> None:
    content = tmp_path / "upload.bin"
    content.write_bytes(os.urandom(100 * 1024))
    result = c_icap_client(
        server, "-s", "reqmod", "-req", "http://example.org/upload", "-method", "POST", "-f", str(content),
        "-no204", "-nopreview", out=tmp_path / "out",
    )
    assert result.status_line() == "ICAP/1.0 200 OK", result.stderr
    assert result.sections["REQMOD HEADERS"][0] == "POST http://example.org/upload HTTP/1.0", result.stderr
    assert result.body == content.read_bytes()
