"""The clearance CLI as an admin uses it: real subprocesses against a real Redis."""

from datetime import UTC, datetime, timedelta
from pathlib import Path

import redis

from tests.conftest import CLI

LAST_DAY = (datetime.now(UTC) + timedelta(days=60)).date().isoformat()


def test_categories_add_load_lookup_stats(cli: CLI, tmp_path: Path) -> None:
    assert "1 added" in cli("categories", "add", "webmail", "Mail.Google.com.").stdout
    listing = tmp_path / "list.txt"
    listing.write_text("# cloud\n*.dropbox.com\nmega.nz  # MEGA\n\n", encoding="utf-8")
    assert "2 added" in cli("categories", "load", "cloud-storage", str(listing)).stdout
    assert cli("categories", "lookup", "https://a.mail.google.com/x").stdout.strip() == (
        "a.mail.google.com: webmail (list entry mail.google.com)"
    )
    assert "no category" in cli("categories", "lookup", "evilmail.google.com").stdout
    assert "no category" in cli("categories", "lookup", "google.com").stdout
    stats = cli("categories", "stats").stdout.splitlines()  # a category's line, then one per source, indented
    assert [line.split() for line in stats if not line.startswith(" ")] == [["cloud-storage", "2"], ["webmail", "1"]]
    assert [line.split("\t")[:2] for line in stats if line.startswith(" ")] == [["  admin", "2"], ["  admin", "1"]]


def test_bad_list_row_names_line_and_writes_nothing(cli: CLI, tmp_path: Path, sync_redis: redis.Redis) -> None:
    listing = tmp_path / "list.txt"
    listing.write_text("good.example\nalso.good.example\nhttp://bad.example/path\n", encoding="utf-8")
    result = cli("categories", "load", "webmail", str(listing), check=False)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1
    assert "line 3" in result.stderr and "bad.example" in result.stderr
    assert sync_redis.dbsize() == 0


def test_bad_input_one_line_exit_2(cli: CLI, sync_redis: redis.Redis, tmp_path: Path) -> None:
    cases = [
        ("categories", "add", "Web Mail", "x.example"),
        ("categories", "add", "webmail", "not a host"),
        ("categories", "load", "webmail", str(tmp_path / "missing.txt")),
        ("approvals", "grant", "--user", "a", "--category", "news", "--days", "1", "--approver", "h", "--reason", "r"),
        ("approvals", "grant", "--user", "a", "--category", "webmail", "--until", "2001-01-01",
         "--approver", "h", "--reason", "r"),
        ("approvals", "grant", "--user", "a", "--category", "webmail", "--until", "tomorrow",
         "--approver", "h", "--reason", "r"),
        ("approvals", "grant", "--user", "a", "--category", "webmail", "--days", "0", "--approver", "h",
         "--reason", "r"),
        ("approvals", "grant", "--user", "a", "--category", "webmail", "--days", "3", "--approver", "h",
         "--reason", "  "),
        ("approvals", "revoke", "A404", "--by", "h"),
        ("--config", str(tmp_path / "nope.yaml"), "categories", "stats"),
    ]
    for args in cases:
        result = cli(*args, check=False)
        assert result.returncode == 2, (args, result)
        assert result.stderr.startswith("clearance: "), (args, result.stderr)
        assert result.stderr.count("\n") == 1, (args, result.stderr)
    assert sync_redis.dbsize() == 0


def test_usage_errors_exit_2(cli: CLI) -> None:
    result = cli("approvals", "grant", "--user", "a", check=False)
    assert result.returncode == 2
    assert "required" in result.stderr


def test_grant_list_revoke_explain(cli: CLI) -> None:
    cli("categories", "add", "webmail", "mail.google.com")
    before = cli("explain", "http://mail.google.com/", "--user", "CORP\\Alice", "--client-ip", "10.0.0.5").stdout
    assert "decision:  block" in before and "reason:    no-approval" in before
    assert "user:      alice" in before and "client ip: 10.0.0.5" in before
    approval_id = cli(
        "approvals", "grant", "--user", "Alice", "--category", "webmail", "--until", LAST_DAY,
        "--approver", "head.it", "--reason", "Liaison with overseas partner",
    ).stdout.strip()
    assert approval_id.startswith("A")
    after = cli("explain", "https://a.mail.google.com/", "--user", "alice@CORP").stdout
    assert "decision:  pass" in after and f"approval:  {approval_id}" in after
    listed = cli("approvals", "list", "--user", "ALICE").stdout
    assert approval_id in listed and "active" in listed and f"{LAST_DAY} 23:59" in listed  # until is inclusive
    assert cli("approvals", "list", "--user", "bob").stdout.count("\n") == 1  # header only
    assert f"{approval_id} revoked" in cli("approvals", "revoke", approval_id, "--by", "head.it").stdout
    revoked = cli("explain", "http://mail.google.com/", "--user", "alice").stdout
    assert "approval-revoked" in revoked and "decision:  block" in revoked
    again = cli("approvals", "revoke", approval_id, "--by", "head.it", check=False)
    assert again.returncode == 2 and "already revoked" in again.stderr
    assert "revoked" in cli("approvals", "list").stdout


def test_explain_uncategorised_and_no_user(cli: CLI) -> None:
    out = cli("explain", "example.org").stdout
    assert "decision:  pass" in out and "not-restricted" in out and "user:      -" in out


def test_non_ascii_user_through_explain(cli: CLI) -> None:
    cli("categories", "add", "web-im", "web.whatsapp.com")
    cli("approvals", "grant", "--user", "陳大文", "--category", "web-im", "--days", "2", "--approver", "主管",
        "--reason", "與海外夥伴聯絡")
    out = cli("explain", "https://web.whatsapp.com/", "--user", "陳大文").stdout
    assert "decision:  pass" in out and "user:      陳大文" in out


def test_unreachable_redis_is_one_line(cli: CLI, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from tests.support.net import free_port

    result = cli("--redis", f"redis://127.0.0.1:{free_port()}/0", "categories", "stats", check=False)
    assert result.returncode == 1
    assert result.stderr.startswith("clearance: Redis is not reachable") and result.stderr.count("\n") == 1


def test_rules_allow_and_path_category_show_in_explain(cli: CLI) -> None:
    cli("categories", "add", "webmail", "mail.google.com")
    cli("categories", "add", "cloud-storage", "drive.example.net")
    allow_id = cli("rules", "allow", "mail.google.com", "--path", "/a/agency.gov.hk/",
                   "--note", "department mail on Workspace").stdout.strip()
    path_id = cli(
        "rules", "category", "portal.example.com", "--path", "/personal/", "--category", "cloud-storage"
    ).stdout.strip()
    whole_id = cli("rules", "allow", "drive.example.net").stdout.strip()

    allowed = cli("explain", "https://mail.google.com/a/agency.gov.hk/inbox", "--user", "bob").stdout
    assert "decision:  pass" in allowed and "allow-listed" in allowed and allow_id in allowed
    personal = cli("explain", "https://mail.google.com/mail/u/0/", "--user", "bob").stdout
    assert "decision:  block" in personal and "rule:      -" in personal
    shared = cli("explain", "https://portal.example.com/personal/files", "--user", "bob").stdout
    assert "decision:  block" in shared and "cloud-storage" in shared and path_id in shared
    corporate = cli("explain", "https://portal.example.com/team/", "--user", "bob").stdout
    assert "decision:  pass" in corporate and "not-restricted" in corporate
    sanctioned = cli("explain", "https://x.drive.example.net/", "--user", "bob").stdout
    assert "allow-listed" in sanctioned and whole_id in sanctioned

    listed = cli("rules", "list").stdout
    assert allow_id in listed and "department mail on Workspace" in listed and "-> cloud-storage" in listed
    cli("rules", "remove", whole_id)
    assert "decision:  block" in cli("explain", "https://x.drive.example.net/", "--user", "bob").stdout
    bad = cli("rules", "remove", whole_id, check=False)
    assert bad.returncode == 2 and "no rule" in bad.stderr
    bad_path = cli("rules", "allow", "x.example", "--path", "nope", check=False)
    assert bad_path.returncode == 2 and "--path" in bad_path.stderr
