"""The one bilingual catalog: every message of the block pages, the portal and its e-mail is translated,
the category names come from one table, and the page library stands on its own."""

from __future__ import annotations

import subprocess
import sys
import unicodedata
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from babel.messages.extract import DEFAULT_KEYWORDS, extract_from_dir

from blockpages.catalog import CATEGORY_LABELS, category_label, category_title, load_translations
from blockpages.render import Renderer
from blockpages.settings import TemplateError
from icap_server.config import Config, ConfigError
from icap_server.portal.mail import request_message
from icap_server.portal.texts import MESSAGES, message_texts, status_texts
from icap_server.service.pages import page_settings
from policy.requests import AccessRequest
from tests.conftest import PROJECT_ROOT

KEYWORDS = {**DEFAULT_KEYWORDS, "N_": None, "alt": None}  # as `make messages` extracts them
TEMPLATES = {"templates/**": {"extensions": "jinja2.ext.i18n"}}


def extracted(folder: Path, method_map: list[tuple[str, str]]) -> set[str]:
    found = extract_from_dir(str(folder), method_map, TEMPLATES, keywords=KEYWORDS)
    return {message for _, _, message, _, _ in found if isinstance(message, str)}


def untranslated(messages: set[str]) -> list[str]:
    chinese = load_translations()["zh-HK"]
    return sorted(message for message in messages if chinese.gettext(message) == message)


def test_every_message_has_a_chinese_translation() -> None:
    """The catalog covers every message the templates and render.py use (run `make messages` when not)."""
    method_map = [("**.py", "python"), ("templates/**.html", "jinja2"), ("templates/**.txt", "jinja2")]
    found = extracted(PROJECT_ROOT / "blockpages", method_map)
    assert len(found) > 30
    assert untranslated(found) == []


def test_every_message_of_the_portal_and_its_mail_has_a_chinese_translation() -> None:
    found = extracted(PROJECT_ROOT / "icap_server" / "portal", [("**.py", "python"), ("templates/**.html", "jinja2")])
    assert len(found) > 40
    assert untranslated(found) == []


def test_one_table_of_category_names_for_pages_portal_and_mail() -> None:
    for category, label in CATEGORY_LABELS.items():
        assert category_label(category, "en") == label
        assert category_title(category, "en") == label[:1].upper() + label[1:]
        chinese = category_label(category, "zh-HK")
        assert chinese != label and category_title(category, "zh-HK") == chinese
    assert category_title("webmail", "en") == "Personal webmail"
    assert category_label("news", "zh-HK") == category_title("news", "en") == "news"  # unlabelled: its name
    assert category_label(None, "zh-HK") == "此服務"


def test_portal_texts_are_the_catalogs_in_both_languages() -> None:
    for kind in MESSAGES:
        _, title_en, title_zh, text_en, text_zh = message_texts(kind, 30, "IT helpdesk")
        assert title_zh != title_en and text_zh != text_en, kind
    assert "30 分鐘" in message_texts("expired", 30, "x")[4]
    assert "請聯絡IT helpdesk更新目錄" in message_texts("no-approver", 30, "IT helpdesk")[4]
    pending = status_texts(request(department=""), lambda moment: "2026-11-20 10:00")
    assert pending[:2] == ("Waiting for a decision", "等待決定")
    assert "the head of your department" in pending[2] and "送交你部門的主管" in pending[3]


def request(**changes: object) -> AccessRequest:
    values: dict[str, object] = {
        "id": "Q7", "user": "alice", "client_ip": "10.1.2.3", "category": "webmail", "host": "mail.google.com",
        "justification": "Exchanging documents", "days": 30, "created_at": datetime(2026, 11, 20, 2, 0, tzinfo=UTC),
        "department": "Finance", "approvers": ("hfin",), "key": "k",
    }
    values.update(changes)
    return AccessRequest(**values)  # type: ignore[arg-type]


def test_the_mail_is_bilingual_with_its_facts_lined_up() -> None:
    message = request_message(request(), "clearance@example.gov", ["hfin@example.gov"], ZoneInfo("Asia/Hong_Kong"))
    assert message["Subject"] == "Access request Q7: alice – Personal webmail (mail.google.com)"
    body = message.get_content()
    assert body.startswith("alice asks for access to a restricted service.\nalice 申請使用受限制的網上服務。\n")
    assert "Request / 申請編號:     Q7\n" in body and "Category / 類別:        Personal webmail (webmail)\n" in body
    facts = [line for line in body.splitlines() if " / " in line and ":  " in line]
    assert len(facts) == 8
    for line in facts:  # every value starts in column 24, a Chinese character taking two
        label = line[: line.index(":") + 1]
        padding = len(line[len(label):]) - len(line[len(label):].lstrip(" "))
        assert sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in label) + padding == 24, line


def test_the_page_library_stands_on_its_own() -> None:
    """blockpages imports nothing of the server or the policy, and raises its own error, not a ConfigError."""
    code = "import sys, blockpages.render; print(' '.join(sys.modules))"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    packages = {name.split(".")[0] for name in loaded.stdout.split()}
    assert "blockpages" in packages and not packages & {"icap_server", "policy"}
    settings = replace(page_settings(Config()), template_dir="/nonexistent/templates")
    with pytest.raises(TemplateError, match="is not a directory") as caught:
        Renderer(settings)
    assert not isinstance(caught.value, ConfigError)
