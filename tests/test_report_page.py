"""The printable access report: the pure renderer (both languages, escaping, its own CSP), and `GET /report`,
shown only to a head or delegate of the department or to an auditor named in `portal.auditors`.

The route runs on the real portal app in-process (tests/support/asgi.py: the TCP peer is the test's to choose)
on a real Redis, with the data made by the real CLI (tests/test_report_cli.seed).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import re
from datetime import timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from icap_server.config import load_config
from icap_server.portal.app import Portal
from icap_server.portal.report_page import render_report_page
from policy.access_report import build_access_report
from policy.state import ServiceCatalogue
from policy.store import PolicyStore
from tests.conftest import CLI
from tests.support.asgi import Answer, call
from tests.test_report import DIRECTORY, NOW, SINCE, USAGE, make
from tests.test_report_cli import seed

HK = ZoneInfo("Asia/Hong_Kong")
ORG = {"en": "Test Department", "zh-HK": "測試部門"}
SECRET = "report-page-secret"
HEADER = "X-Clearance-User"


def style_hash(page: str) -> str:
    (style,) = re.findall(r"<style>(.*?)</style>", page, re.S)
    return base64.b64encode(hashlib.sha256(style.encode()).digest()).decode()


def test_the_page_in_both_languages_escaped_with_its_own_policy() -> None:
    approvals = [
        make(1, justification="<script>alert(1)</script> for the partner", ticket="SD-7"),
        make(2, subject="user2").revoked("head", NOW - timedelta(days=1), "moved on"),
    ]
    report = build_access_report(approvals, DIRECTORY, USAGE, ServiceCatalogue(), NOW, SINCE)
    english = render_report_page(report, HK, "en", ORG)
    page = english.html
    assert '<html lang="en">' in page and "Access report" in page and "存取權限報告" in page  # the other beside
    assert "Department IT" in page and "部門：IT" in page and "People with access now: 1" in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "<script>" not in page
    assert "User One" in page and "SD-7" in page and "moved on" in page and "2026-06-14 20:00" in page  # last use
    assert "@media print" in page and "table-header-group" in page  # headings repeated on each printed page
    assert f"style-src 'sha256-{style_hash(page)}'" in english.csp and "script-src" not in english.csp
    assert "default-src 'none'" in english.csp

    chinese = render_report_page(report, HK, "zh-HK", ORG).html
    assert '<html lang="zh-HK">' in chinese and chinese.index("存取權限報告") < chinese.index("Access report")
    assert "期內撤銷" in chinese and "現時有存取權限的人數：1" in chinese
    empty = render_report_page(build_access_report([], DIRECTORY, {}, ServiceCatalogue(), NOW, SINCE), HK, "en", ORG)
    assert "Nothing to report." in empty.html


def portal_config(tmp_path: Path, redis_url: str) -> Any:
    path = tmp_path / "portal.yaml"
    path.write_text(
        "policy:\n  load_default_lists: false\n"
        f"portal:\n  listen: 127.0.0.1:1\n  secret: {SECRET}\n  auditors: [Audit.Kim]\n"
        "logging:\n  format: json\n",
        encoding="utf-8",
    )
    return load_config(path, redis_url)


def test_the_route_shows_a_department_only_to_its_heads_and_to_auditors(
    cli: CLI, redis_url: str, tmp_path: Path
) -> None:
    ids = seed(cli, redis_url, tmp_path)
    config = portal_config(tmp_path, redis_url)

    async def scenario() -> None:
        store = PolicyStore.from_url(redis_url)
        try:
            app = Portal(config, store, SECRET).app

            async def get(path: str, user: str | None, peer: str = "127.0.0.1", language: str = "en") -> Answer:
                headers = [("accept-language", language)] + ([(HEADER, user)] if user else [])
                return await call(app, "GET", path, headers=headers, peer=peer)

            finance = await get("/report?department=Finance", "hfin")
            assert finance.status == 200, finance.text
            assert f"style-src 'sha256-{style_hash(finance.text)}'" in finance.headers["content-security-policy"]
            for fact in (
                "Alice Chan",
                "Bob Lee",
                "group finance-staff",
                "network 10.20.30.0/24",
                "SD-2",
                "still answering customers",
                "moved to the audit team",
                ids["recent"],
            ):
                assert fact in finance.text, fact  # fmt: skip
            assert "Carol Wong" not in finance.text and "Department IT" not in finance.text

            for path, user, peer in (
                ("/report?department=IT", "hfin", "127.0.0.1"),  # not his department
                ("/report", "hfin", "127.0.0.1"),  # every department: auditors only
                ("/report?department=Finance", None, "127.0.0.1"),  # nobody signed in
                ("/report?department=Finance", "hfin", "192.0.2.9"),  # the header from a peer no proxy
                ("/report?department=Finance", "alice", "127.0.0.1"),  # no head
            ):
                refused = await get(path, user, peer)
                assert refused.status == 403, (path, user, peer, refused.status)
                assert "Alice Chan" not in refused.text and "Carol Wong" not in refused.text

            everything = await get("/report", "audit.kim", language="zh-HK")  # named as `Audit.Kim`: normalised
            assert everything.status == 200 and everything.headers["content-language"] == "zh-HK"
            assert (
                "部門：Finance" in everything.text and "部門：IT" in everything.text and "Carol Wong" in everything.text
            )
            later = await get("/report?department=Finance&since=2099-01-01", "audit.kim")
            assert later.status == 200 and "moved to the audit team" not in later.text
            assert (await get("/report?since=last-week", "audit.kim")).status == 400
        finally:
            await store.close()

    asyncio.run(scenario())
