"""The CLI cases of issue 9's "Found 8": each mistake one line and exit 2; secrets off the command line;
`clearance audit | head` quiet; `revoke --by` / `suspend --by` must name someone with a say."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import redis

from icap_server.config import load_config
from tests.conftest import CLI, clearance_env

LAST_DAY = (datetime.now(UTC) + timedelta(days=30)).date().isoformat()
DIRECTORY = (
    "user,name,department,groups,heads,delegates\n"
    "alice,Alice Chan,Finance,,,\nhfin,Henry Fung,Finance,,Finance,\ndfin,Dora Fok,Finance,,,Finance\n"
    "hit,Ivy Tam,IT,,IT,\nmallory,Mallory,IT,,,\n"
)


def one_line_exit_2(result: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert result.returncode == 2, result
    assert result.stderr.startswith("clearance: ") and result.stderr.count("\n") == 1, result.stderr
    assert "Traceback" not in result.stderr
    for needle in needles:
        assert needle in result.stderr, (needle, result.stderr)


def test_bad_redis_urls_are_one_line_and_never_show_the_password(cli: CLI, sync_redis: redis.Redis) -> None:
    for url, problem in (
        ("localhost:6380", "expected a redis://, rediss:// or unix:// URL"),
        ("redis://127.0.0.1:port/0", "not a valid URL"),
        ("redis://:hunter2@127.0.0.1:99999/0", "not a valid URL"),
        ("http://:hunter2@example/", "got 'http://:***@example/'"),
        ("unix://", "names the socket's path"),
    ):
        result = cli("--redis", url, "categories", "stats", check=False)
        one_line_exit_2(result, "clearance: --redis: ", problem)
        assert "hunter2" not in result.stderr


def test_a_password_on_the_command_line_warns_and_the_safe_ways_work(
    cli: CLI, redis_url: str, config_file: Path, tmp_path: Path
) -> None:
    result = cli("--redis", "redis://:hunter2@127.0.0.1:1/0", "categories", "add", "Web Mail", "x.example", check=False)
    warning, error = result.stderr.splitlines()
    assert "warning: --redis carries a password" in warning and "$CLEARANCE_REDIS_URL or redis.url_file" in warning
    assert "hunter2" not in result.stderr and error.startswith("clearance: ")

    # redis.url_file: the URL (with its password) in a file of its own, named relative to the config file.
    (tmp_path / "redis.url").write_text(redis_url + "\n", encoding="utf-8")
    (tmp_path / "smtp.password").write_text("s3cret\n", encoding="utf-8")
    config = tmp_path / "secrets.yaml"
    config.write_text(
        config_file.read_text(encoding="utf-8")
        + "redis:\n  url_file: redis.url\nsmtp:\n  host: relay.example\n  username: clearance\n"
        "  password_file: smtp.password\n",
        encoding="utf-8",
    )
    env = clearance_env(redis_url, config)
    del env["CLEARANCE_REDIS_URL"]
    run = [sys.executable, "-m", "icap_server", "categories", "add", "webmail", "mail.example"]
    done = subprocess.run(run, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "1 added" in done.stdout, done.stderr
    loaded = load_config(config)
    assert loaded.smtp.password == "s3cret" and loaded.redis.url == redis_url
    (tmp_path / "smtp.password").write_text("", encoding="utf-8")
    done = subprocess.run(run, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "smtp.password_file:" in done.stderr


def test_audit_into_head_ends_quietly(cli: CLI, redis_url: str, config_file: Path, tmp_path: Path) -> None:
    grants = tmp_path / "grants.csv"  # 500 audit entries: well over a pipe's 64 KiB
    grants.write_text(
        "subject_kind,subject,category,approver,justification,valid_until\n"
        + "".join(f"user,u{n},webmail,head,Liaison with the overseas office,{LAST_DAY}\n" for n in range(500)),
        encoding="utf-8",
    )
    cli("approvals", "import", str(grants))
    assert len(cli("audit", "--format", "json").stdout) > 4 * 65536
    command = [sys.executable, "-m", "icap_server", "audit", "--format", "json"]
    proc = subprocess.Popen(
        command, env=clearance_env(redis_url, config_file), stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert proc.stdout is not None and proc.stderr is not None
    assert proc.stdout.readline().strip() == b"["  # `head -1`: read one line, then stop reading
    proc.stdout.close()
    stderr = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 141  # as if killed by SIGPIPE, like any Unix filter
    assert stderr == "", stderr


def test_unknown_state_action_and_department_are_refused(cli: CLI, tmp_path: Path) -> None:
    directory = tmp_path / "directory.csv"
    directory.write_text(DIRECTORY, encoding="utf-8")
    cli("directory", "load", str(directory))
    cli("approvals", "grant", "--user", "alice", "--category", "webmail", "--until", LAST_DAY,
        "--approver", "hfin", "--reason", "Liaison with the overseas office")  # fmt: skip
    one_line_exit_2(cli("approvals", "list", "--state", "actve", check=False), "invalid choice: 'actve'")
    one_line_exit_2(cli("audit", "--action", "grnat", check=False), "--action: unknown action 'grnat'")
    for command in (("approvals", "list"), ("requests", "list"), ("audit",), ("report",)):
        one_line_exit_2(cli(*command, "--department", "Fnance", check=False), "did you mean 'Finance'?")
    assert "A1" in cli("approvals", "list", "--department", "Finance", "--state", "active").stdout
    assert "grant" in cli("audit", "--action", "grant").stdout and "directory-load" in cli("audit").stdout
    assert cli("audit", "--action", "review").returncode == 0  # a prefix, as documented
    assert cli("report", "--department", "IT").returncode == 0  # in the directory, with nothing to report
    assert cli("audit", "--department", "-").returncode == 0


def test_revoke_and_suspend_by_must_have_a_say(cli: CLI, config_file: Path, tmp_path: Path) -> None:
    directory = tmp_path / "directory.csv"
    directory.write_text(DIRECTORY, encoding="utf-8")
    cli("directory", "load", str(directory))

    def grant() -> str:
        return cli("approvals", "grant", "--user", "alice", "--category", "webmail", "--until", LAST_DAY,
                   "--approver", "hfin", "--reason", "Liaison with the overseas office").stdout.strip()  # fmt: skip

    first, second, third = grant(), grant(), grant()
    for command in ("revoke", "suspend"):
        for stranger in ("mallory", "hit", "anybody"):  # not of Finance, another department's head, nobody
            refused = cli("approvals", command, first, "--by", stranger, check=False)
            one_line_exit_2(refused, f"'{stranger}' may not {command} {first}", "approvals.admins")
    assert "active" in cli("approvals", "show", first).stdout
    assert f"{first} suspended" in cli("approvals", "suspend", first, "--by", "dfin").stdout  # a delegate
    assert f"{first} revoked" in cli("approvals", "revoke", first, "--by", "hfin").stdout  # the approver, a head
    admins = tmp_path / "admins.yaml"
    admins.write_text(
        config_file.read_text(encoding="utf-8").replace("approvals:\n", "approvals:\n  admins: [SecOps]\n"),
        encoding="utf-8",
    )
    assert "suspended" in cli("--config", str(admins), "approvals", "suspend", second, "--by", "CORP\\secops").stdout
    assert "revoked" in cli("--config", str(admins), "approvals", "revoke", third, "--by", "secops").stdout
    audit = cli("audit", "--action", "revoke", "--format", "csv").stdout
    assert audit.count("\n") == 3 and "mallory" not in audit  # the header and two revocations
