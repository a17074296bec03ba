"""Shared by the approval-lifecycle tests: the approval rules as shipped, a directory, and CLI helpers.

The fixtures (rules_config, warn_config, admin, org) reach the tests as a conftest's do; the helpers and
constants are imported from here.
"""

from __future__ import annotations

import json
from datetime import date, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import redis

from tests.conftest import CLI

ZONE = ZoneInfo("Asia/Hong_Kong")  # policy.timezone's default: --from/--until dates are local days
PREFIX = "clearance:"
WHY = "Exchanging documents with an overseas partner agency"

RULES = (
    "policy:\n  load_default_lists: false\n"
    "approvals:\n"
    "  require_department_head: true\n"
    "  min_justification_chars: 20\n"
    "  max_validity_days: 180\n"
    "  review_interval_days: 90\n"
    "  on_review_overdue: {overdue}\n"
    "logging:\n  format: json\n"
)

DIRECTORY = """user,name,department,groups,heads,delegates
alice,Alice Chan,Finance,finance-staff;travel,,
bob,Bob Lee,Finance,finance-staff,,
hfin,Henry Fung,Finance,finance-staff,Finance,
dfin,Dora Fok,Finance,,,Finance
carol,Carol Wong,IT,travel,,
hit,Ivy Tam,IT,,IT,
"""


@pytest.fixture
def rules_config(tmp_path: Path) -> Path:
    path = tmp_path / "rules.yaml"
    path.write_text(RULES.format(overdue="suspend"), encoding="utf-8")
    return path


@pytest.fixture
def warn_config(tmp_path: Path) -> Path:
    path = tmp_path / "rules-warn.yaml"
    path.write_text(RULES.format(overdue="warn"), encoding="utf-8")
    return path


@pytest.fixture
def admin(cli: CLI, rules_config: Path) -> CLI:
    """`clearance --config rules.yaml ARGS…`."""

    def run(*args: str, check: bool = True, config: Path | None = None) -> Any:
        return cli("--config", str(config or rules_config), *args, check=check)

    return run


@pytest.fixture
def org(admin: CLI, tmp_path: Path) -> CLI:
    """The directory above loaded, and one host in each restricted category."""
    directory = tmp_path / "directory.csv"
    directory.write_text(DIRECTORY, encoding="utf-8")
    admin("directory", "load", str(directory))
    admin("categories", "add", "webmail", "mail.google.com")
    admin("categories", "add", "web-im", "web.whatsapp.com", "web.telegram.org")
    admin("categories", "add", "cloud-storage", "drive.google.com")
    return admin


def grant(admin: CLI, *args: str, approver: str = "hfin", days: str = "30", **options: str) -> str:
    extra = [item for name, value in options.items() for item in (f"--{name.replace('_', '-')}", value)]
    result = admin(
        "approvals", "grant", *args, *extra, "--days", days, "--approver", approver, "--justification", WHY
    )
    approval_id: str = result.stdout.strip()
    assert approval_id.startswith("A") and "\n" not in approval_id, result.stdout
    return approval_id


def explain(admin: CLI, url: str, user: str | None = None, client_ip: str | None = None) -> dict[str, str]:
    args = ["explain", url]
    if user:
        args += ["--user", user]
    if client_ip:
        args += ["--client-ip", client_ip]
    lines = admin(*args).stdout.splitlines()
    return {label.strip(): value.strip() for label, _, value in (line.partition(":") for line in lines)}


def show(admin: CLI, approval_id: str, config: Path | None = None) -> dict[str, str]:
    fields: dict[str, str] = {}
    for line in admin("approvals", "show", approval_id, config=config).stdout.splitlines():
        label, _, value = line.partition(":")
        fields.setdefault(label.strip(), value.strip())
    return fields


def stored(client: redis.Redis, approval_id: str) -> dict[str, Any]:
    text = client.hget(PREFIX + "approvals", approval_id)
    assert text, f"{approval_id} is not in Redis"
    record: dict[str, Any] = json.loads(text)
    return record


def snapshot(client: redis.Redis) -> dict[str, Any]:
    """Everything a refused command must leave as it was."""
    return {
        "approvals": client.hgetall(PREFIX + "approvals"),
        "directory": client.hgetall(PREFIX + "directory"),
        "seq": client.get(PREFIX + "approval:seq"),
        "version": client.get(PREFIX + "policy:version"),
    }


def assert_refused(result: Any, *fragments: str) -> None:
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    assert result.stderr.startswith("clearance: ") and result.stderr.count("\n") == 1, result.stderr
    for fragment in fragments:
        assert fragment in result.stderr, (fragment, result.stderr)
    assert not result.stdout.strip(), result.stdout


def local_today() -> date:
    return datetime.now(ZONE).date()
