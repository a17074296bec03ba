"""`clearance services list|show|add|remove`, `explain` naming the service, and a running server following it.

Real CLI subprocesses, a real Redis and a real `clearance serve`: an admin's service blocks from the moment it
is added, can be approved on its own, and stops when removed; a shipped one can be overridden or switched off.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import CLI, ServerHandle, StartServer, cli_config_text
from tests.support.icap_client import exchange, reqmod, wait_until_synced
from tests.support.icap_grammar import parse_one
from tests.support.waiting import wait_until

SERVE_CONFIG = "policy:\n  load_default_lists: true\nlogging:\n  format: json\n"


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    """The CLI's config: the shipped catalogue on, as the server's."""
    path = tmp_path / "clearance.yaml"
    path.write_text(cli_config_text(load_default_lists=True), encoding="utf-8")
    return path


def blocked(server: ServerHandle, url: str, user: str = "alice", method: str = "GET") -> bool:
    response = parse_one(exchange(server.port, reqmod(url, user, method=method))[0])
    return response.status == 200 and (response.res_hdr or b"").startswith(b"HTTP/1.1 403")


def audit_actions(cli: CLI) -> list[dict[str, Any]]:
    return [record for record in json.loads(cli("audit", "--format", "json").stdout)
            if str(record["action"]).startswith("service-")]


def test_list_and_show_the_shipped_catalogue(cli: CLI) -> None:
    table = cli("services", "list").stdout.splitlines()
    assert table[0].split()[:4] == ["id", "name", "名稱", "category"]
    assert any(line.split()[:1] == ["whatsapp"] and "web-im" in line for line in table)
    listed = json.loads(cli("services", "list", "--category", "webmail", "--format", "json").stdout)
    assert {record["category"] for record in listed} == {"webmail"}
    assert {"gmail", "outlook-com", "qq-mail", "netease-mail"} <= {record["id"] for record in listed}
    shown = cli("services", "show", "wechat").stdout
    assert "WeChat / 微信" in shown and "wx.qq.com" in shown and "sources:" in shown and "checked:" in shown
    shown = cli("services", "show", "telegram").stdout
    assert "149.154.160.0/20" in shown and "2001:b28:f23d::/48" in shown
    missing = cli("services", "show", "nope", check=False)
    assert missing.returncode == 2 and "no service 'nope'" in missing.stderr


def test_explain_names_the_service(cli: CLI) -> None:
    out = cli("explain", "https://mmg.whatsapp.net/d/f/x.enc", "--user", "alice").stdout
    assert "decision:  block" in out and "service:   whatsapp (WhatsApp / WhatsApp)" in out
    out = cli("explain", "https://www.icloud.com/mail/", "--user", "alice").stdout
    assert "service:   icloud-mail" in out and "category:  webmail" in out
    out = cli("explain", "https://www.icloud.com/photos/", "--user", "alice").stdout
    assert "service:   icloud-drive" in out and "category:  cloud-storage" in out


def test_an_admin_service_blocks_is_approved_alone_and_is_removed(
    start_icap_server: StartServer, cli: CLI, redis_url: str
) -> None:
    server = start_icap_server(SERVE_CONFIG)
    wait_until_synced(server.port, redis_url)
    assert not blocked(server, "https://chat.teamtalk.example/")
    said = cli(
        "--actor", "it-admin", "services", "add", "teamtalk", "--name-en", "TeamTalk", "--name-zh", "團隊通",
        "--category", "web-im",
        "--web", "chat.teamtalk.example", "--media", "cdn.teamtalk.example", "--range", "203.0.113.0/24",
        "--source", "TeamTalk admin guide",
    ).stdout
    assert "teamtalk added: 3 entries, 0 paths" in said
    wait_until_synced(server.port, redis_url)
    for url, method in [("https://chat.teamtalk.example/", "GET"), ("https://a.cdn.teamtalk.example/x", "GET"),
                        ("https://203.0.113.9:443", "CONNECT")]:
        assert blocked(server, url, method=method), url
    cli("approvals", "grant", "--user", "alice", "--service", "teamtalk", "--days", "10", "--approver", "head",
        "--justification", "Coordinates the joint exercise with TeamTalk users")
    wait_until_synced(server.port, redis_url)
    assert not blocked(server, "https://a.cdn.teamtalk.example/x")
    assert blocked(server, "https://a.cdn.teamtalk.example/x", user="bob")
    assert blocked(server, "https://web.whatsapp.com/")  # alice's approval is for TeamTalk only
    cli("--actor", "it-admin", "services", "remove", "teamtalk")
    wait_until_synced(server.port, redis_url)
    assert not blocked(server, "https://chat.teamtalk.example/", user="bob")
    actions = audit_actions(cli)
    assert [(record["action"], record["actor"], record["target"]) for record in actions] == [
        ("service-add", "it-admin", "teamtalk"), ("service-remove", "it-admin", "teamtalk"),
    ]
    assert actions[0]["after"]["web"] == ["chat.teamtalk.example"]


def test_a_shipped_service_is_overridden_or_switched_off(
    start_icap_server: StartServer, cli: CLI, redis_url: str, tmp_path: Path
) -> None:
    server = start_icap_server(SERVE_CONFIG)
    wait_until_synced(server.port, redis_url)
    override = tmp_path / "line.yaml"
    override.write_text(
        "name_en: LINE\nname_zh: LINE\ncategory: web-im\nweb: [line.me]\n"
        "sources: ['our own review of LINE, 2026-12']\n",
        encoding="utf-8",
    )
    assert "overrides the shipped service" in cli("services", "add", "line", "--file", str(override)).stdout
    cli("services", "add", "wechat", "--disable", "--note", "trial: WeChat open while the policy is consulted")
    wait_until_synced(server.port, redis_url)
    assert blocked(server, "https://line.me/R/ti/p/x")
    assert not blocked(server, "https://line-apps.com/")  # the override left it out
    assert not blocked(server, "https://wx.qq.com/")  # switched off
    assert "switched off" not in cli("services", "list").stdout and "wechat" not in cli("services", "list").stdout
    cli("services", "remove", "wechat")
    cli("services", "remove", "line")
    wait_until_synced(server.port, redis_url)
    assert blocked(server, "https://wx.qq.com/") and blocked(server, "https://line-apps.com/")


@pytest.mark.parametrize(
    ("args", "problem"),
    [
        (["add", "Bad_Id", "--name-en", "B", "--name-zh", "B", "--category", "web-im", "--web", "b.example"],
         "an id is lower-case"),
        (["add", "x", "--name-en", "X", "--name-zh", "X", "--category", "web-im", "--web", "not a host"],
         "web entry 'not a host'"),
        (["add", "x", "--name-en", "X", "--name-zh", "X", "--category", "web-im", "--range", "10.0.0.0/40"],
         "range '10.0.0.0/40'"),
        (["add", "x", "--name-en", "X", "--name-zh", "X", "--category", "web-im"], "give at least one host"),
        (["add", "x", "--name-en", "X", "--category", "web-im", "--web", "x.example"],
         "service 'x': Object missing required field `name_zh`"),
        (["add", "x", "--disable"], "not a shipped service"),
        (["remove", "gmail"], "a shipped service"),
    ],
)
def test_a_bad_service_is_one_line_and_writes_nothing(cli: CLI, args: list[str], problem: str) -> None:
    result = cli("services", *args, check=False)
    assert result.returncode == 2 and problem in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert audit_actions(cli) == []


def test_a_grant_for_an_unknown_service_is_refused(cli: CLI) -> None:
    result = cli("approvals", "grant", "--user", "alice", "--service", "whatsap", "--days", "5", "--approver", "h",
                 "--justification", "Talking to the partner office", check=False)
    assert result.returncode == 2 and "unknown service 'whatsap'" in result.stderr


def test_the_catalogue_blocks_from_the_code_when_the_store_is_unreadable_or_emptied(
    start_icap_server: StartServer, cli: CLI, redis_url: str, sync_redis: Any, tmp_path: Path
) -> None:
    """Fail closed: a hand-written services record nobody can read keeps the policy held; a wiped store keeps
    the shipped services blocking (they come with the code), while everything else is still served."""
    server = start_icap_server(SERVE_CONFIG)
    wait_until_synced(server.port, redis_url)
    sync_redis.hset("clearance:services", "broken", "{not json")
    listing = tmp_path / "extra.txt"
    listing.write_text("chat.extra.example\n", encoding="utf-8")
    cli("categories", "import", str(listing), "--category", "web-im")  # a switch: the workers reload

    def held() -> dict[str, object] | None:
        return next((line for line in server.log_lines() if "unreadable record" in str(line.get("error", ""))), None)

    assert "'{not json'" in str(wait_until(held, 10.0, interval=0.1, what="the sync refusing the record")["error"])
    assert blocked(server, "https://web.whatsapp.com/") and not blocked(server, "https://www.example.org/")
    refused = cli("services", "add", "x", "--name-en", "X", "--name-zh", "X", "--category", "web-im",
                  "--web", "x.example", check=False)
    assert refused.returncode != 0 and "unreadable record" in refused.stderr
    sync_redis.hdel("clearance:services", "broken")
    wait_until(lambda: blocked(server, "https://chat.extra.example/") or None, 10.0, interval=0.1,
               what="the held policy replaced once the record is gone")

    cli("store", "reset", "--yes", "--no-defaults")  # the deliberate wipe: no lists in the store at all
    wait_until(lambda: not blocked(server, "https://chat.extra.example/") or None, 10.0, interval=0.1,
               what="the workers adopting the emptied store")
    for url in ("https://web.whatsapp.com/", "https://mail.google.com/mail/u/0/", "https://www.dropbox.com/"):
        assert blocked(server, url), url
    assert not blocked(server, "https://www.example.org/")
