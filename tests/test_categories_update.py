"""Lists that stay right: sources kept apart, `categories update` from a UT1 archive, shipped lists upgraded.

Real parts only: a UT1 archive built here (tarfile), served by a local HTTP server the test starts and stops,
the real `clearance` command against a real Redis, and a real `clearance serve` answering ICAP requests.
"""

from __future__ import annotations

import asyncio
import gzip
import io
import tarfile
import threading
from collections.abc import Iterator
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import redis

from policy.categories import shipped_version
from policy.services import default_list
from policy.store import PolicyStore
from tests.conftest import CLI, StartServer
from tests.support.icap_client import exchange, reqmod
from tests.support.waiting import wait_until

PREFIX = "clearance:"
ARCHIVE_TIME = 1_700_000_000  # 2023-11-14 22:13:20 UTC: the members' mtime, the lists' date
CURATED_HOST = "mail.google.com"  # in the shipped webmail list (tests/test_categories_lists.py)
V1 = {
    "webmail": ["office365.com", "outlook.com", "mail.example", "webmail.example", "gone.example", CURATED_HOST],
    "chat": ["chat.example", "im.example", "teams.microsoft.com", "login.microsoftonline.com"],
}
V2 = {"webmail": ["office365.com", "outlook.com", "mail.example", "webmail.example"], "chat": ["chat.example"]}


def ut1_archive(path: Path, lists: dict[str, list[str]], extra: list[tarfile.TarInfo] | None = None) -> Path:
    """blacklists/<category>/domains for each list, an alias symlink (courrier -> webmail), as UT1 ships them."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        folder = tarfile.TarInfo("blacklists")
        folder.type, folder.mtime = tarfile.DIRTYPE, ARCHIVE_TIME - 50
        archive.addfile(folder)
        for category, hosts in lists.items():
            data = "".join(f"{host}\n" for host in hosts).encode()
            member = tarfile.TarInfo(f"blacklists/{category}/domains")
            member.size, member.mtime = len(data), ARCHIVE_TIME - len(category)
            archive.addfile(member, io.BytesIO(data))
        newest = tarfile.TarInfo("blacklists/global_usage")
        newest.size, newest.mtime = 3, ARCHIVE_TIME
        archive.addfile(newest, io.BytesIO(b"x\n\n"))
        alias = tarfile.TarInfo("blacklists/courrier")
        alias.type, alias.linkname, alias.mtime = tarfile.SYMTYPE, "webmail", ARCHIVE_TIME - 100
        archive.addfile(alias)
        for member in extra or []:
            archive.addfile(member, io.BytesIO(b"a.example\n"[: member.size]))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buffer.getvalue())
    return path


class QuietFiles(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Not on stderr: the test reads the command's output, not the server's."""


@pytest.fixture
def archive_server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A local HTTP server for the folder it yields (URL prefix, folder); shut down after the test."""
    folder = tmp_path / "www"
    folder.mkdir()
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(QuietFiles, directory=str(folder)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", folder
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def configure(config_file: Path, url: str = "", extra: str = "") -> str:
    """The test's config with the shipped lists on, `import.ut1_url` set; returns the text (for serve)."""
    text = (
        "organisation:\n  name_en: Test Department\n  name_zh: 測試部門\n"
        "approvals:\n  require_department_head: false\n  min_justification_chars: 0\n"
        "logging:\n  format: json\n"
        f"import:\n  ut1_url: {url or 'http://127.0.0.1:9/none.tar.gz'}\n{extra}"
    )
    config_file.write_text(text, encoding="utf-8")
    return text


def lookup(cli: CLI, host: str) -> str:
    return cli("categories", "lookup", host).stdout.strip()


def source_entries(client: redis.Redis, category: str, source: str) -> set[str]:
    generation = client.hget(f"{PREFIX}lists", f"{category}:{source}")
    return set(client.smembers(f"{PREFIX}cat:{category}:{generation}")) if generation else set()  # type: ignore[arg-type]


def verdict(port: int, url: str) -> str:
    (response,) = exchange(port, reqmod(url, user="bob"))
    head = response.split(b"\r\n", 1)[0]
    if head.startswith(b"ICAP/1.0 204 "):
        return "pass"
    return "block" if b"\r\n\r\nHTTP/1.1 403 " in response else head.decode(errors="replace")


def snapshot(client: redis.Redis) -> tuple[Any, ...]:
    """Everything an update could change: the lists, their sets, the sources, the version, the key names."""
    lists: dict[str, str] = client.hgetall(f"{PREFIX}lists")  # type: ignore[assignment]
    sets = {field: client.smembers(f"{PREFIX}cat:{field.partition(':')[0]}:{gen}") for field, gen in lists.items()}
    keys = {key for key in client.scan_iter(f"{PREFIX}*") if not key.startswith(f"{PREFIX}audit")}
    return lists, sets, client.hgetall(f"{PREFIX}sources"), client.get(f"{PREFIX}policy:version"), keys


# ---- acceptance 4: an update from a local HTTP server ------------------------------------------------


def test_update_keeps_microsoft_365_open_and_a_second_update_removes_exactly_what_went(
    cli: CLI,
    config_file: Path,
    archive_server: tuple[str, Path],
    sync_redis: redis.Redis,
    start_icap_server: StartServer,
) -> None:
    base, folder = archive_server
    serve_config = configure(config_file, f"{base}/blacklists.tar.gz")
    assert "initialised" in cli("store", "init").stdout  # the curated lists
    cli("categories", "add", "webmail", "admin-mail.example")  # the admin's
    curated = source_entries(sync_redis, "webmail", "curated")
    assert CURATED_HOST in curated and len(curated) == len(set(default_list("webmail")))

    ut1_archive(folder / "blacklists.tar.gz", V1)
    out = cli("categories", "update").stdout
    assert "office365.com from UT1 webmail: protected, skipped" in out
    assert "teams.microsoft.com from UT1 chat: protected, skipped" in out
    assert "login.microsoftonline.com from UT1 chat: protected (under microsoftonline.com), skipped" in out
    assert "left out (protected hosts): 3 entries" in out
    summary = out.splitlines()[-1]
    assert summary.startswith(f"updated source ut1 from {base}/blacklists.tar.gz, lists of 2023-11-14T22:13:20")
    assert "7 entries added, 0 removed, 3 protected skipped" in summary
    assert source_entries(sync_redis, "webmail", "ut1") == {
        "outlook.com", "mail.example", "webmail.example", "gone.example", CURATED_HOST,
    }  # fmt: skip
    assert source_entries(sync_redis, "web-im", "ut1") == {"chat.example", "im.example"}

    assert lookup(cli, "outlook.office365.com").startswith("outlook.office365.com: protected")
    assert lookup(cli, "teams.microsoft.com").startswith("teams.microsoft.com: protected")
    assert lookup(cli, "x.outlook.com") == "x.outlook.com: webmail (list entry outlook.com)"
    assert lookup(cli, "gone.example") == "gone.example: webmail (list entry gone.example)"
    assert lookup(cli, "admin-mail.example").endswith("webmail (list entry admin-mail.example)")
    stats = cli("categories", "stats").stdout
    assert "  ut1\t5\tlists of 2023-11-15 06:13, updated " in stats  # Asia/Hong_Kong, as admins read times
    assert f"  curated\t{len(curated)}\tshipped {shipped_version()}, updated " in stats
    assert "  admin\t1\tupdated " in stats

    server = start_icap_server(serve_config)
    for url, expected in [
        ("https://outlook.office365.com/mail/", "pass"),
        ("https://teams.microsoft.com/", "pass"),
        ("https://login.microsoftonline.com/", "pass"),
        ("https://x.outlook.com/", "block"),
        ("https://gone.example/", "block"),
        ("https://chat.example/", "block"),
        (f"https://{CURATED_HOST}/", "block"),
        ("https://admin-mail.example/", "block"),
    ]:
        assert verdict(server.port, url) == expected, url

    ut1_archive(folder / "blacklists.tar.gz", V2)  # gone.example, im.example and the curated host left UT1
    out = cli("categories", "update").stdout
    rows = {line.split()[0]: line.split()[1:4] for line in out.splitlines()[1:3]}
    assert rows == {"web-im": ["1", "+0", "-1"], "webmail": ["3", "+0", "-2"]}
    assert "0 entries added, 3 removed, 1 protected skipped" in out.splitlines()[-1]
    assert source_entries(sync_redis, "webmail", "ut1") == {"outlook.com", "mail.example", "webmail.example"}
    assert source_entries(sync_redis, "web-im", "ut1") == {"chat.example"}
    assert source_entries(sync_redis, "webmail", "curated") == curated  # untouched
    assert source_entries(sync_redis, "webmail", "admin") == {"admin-mail.example"}
    assert "no category" in lookup(cli, "gone.example") and "no category" in lookup(cli, "im.example")
    assert lookup(cli, CURATED_HOST).startswith(f"{CURATED_HOST}: webmail")  # still curated
    wait_until(lambda: verdict(server.port, "https://gone.example/") == "pass", 5, what="serve to drop gone.example")
    assert verdict(server.port, "https://im.example/") == "pass"
    assert verdict(server.port, f"https://{CURATED_HOST}/") == "block"
    assert verdict(server.port, "https://admin-mail.example/") == "block"
    assert verdict(server.port, "https://outlook.office365.com/") == "pass"
    assert server.stop() == []


# ---- a bad archive: one line, exit 2, nothing changed ---------------------------------------------------


def member(name: str, kind: bytes = tarfile.REGTYPE, size: int = 10, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.size, info.linkname, info.mtime = kind, size if kind == tarfile.REGTYPE else 0, link, ARCHIVE_TIME
    return info


def truncated(path: Path) -> None:
    ut1_archive(path, {**V1, "bulk": [f"h{index}.example" for index in range(20000)]})
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def corrupt(path: Path) -> None:
    path.write_bytes(b"\x1f\x8b" + bytes(range(256)) * 8)


def not_gzip(path: Path) -> None:
    path.write_bytes(b"mail.example\n")


def not_tar(path: Path) -> None:
    path.write_bytes(gzip.compress(b"mail.example\n" * 100))


BAD_ARCHIVES = [
    ("truncated", truncated, "", "not a complete gzip tar archive"),
    ("corrupt", corrupt, "", "not a complete gzip tar archive"),
    ("not gzip", not_gzip, "", "not a gzip archive"),
    ("not a tar", not_tar, "", "not a complete gzip tar archive"),
    ("dot-dot", lambda p: ut1_archive(p, V2, [member("blacklists/../../evil/domains")]), "", "outside the tree"),
    ("absolute", lambda p: ut1_archive(p, V2, [member("/etc/cron.d/domains")]), "", "an absolute path"),
    ("link out", lambda p: ut1_archive(p, V2, [member("blacklists/x", tarfile.SYMTYPE, link="/etc")]), "", "a link"),
    ("hard link", lambda p: ut1_archive(p, V2, [member("blacklists/h", tarfile.LNKTYPE, link="x")]), "", "hard link"),
    ("device", lambda p: ut1_archive(p, V2, [member("blacklists/d", tarfile.CHRTYPE)]), "", "not a regular file"),
    ("oversized", lambda p: ut1_archive(p, V1), "  max_archive_bytes: 100\n", "more than import.max_archive_bytes"),
    ("bomb", lambda p: ut1_archive(p, V1), "  max_unpacked_bytes: 50\n", "more than import.max_unpacked_bytes"),
    ("members", lambda p: ut1_archive(p, V1), "  max_members: 3\n", "more than import.max_members (3)"),
    ("digest", lambda p: ut1_archive(p, V2), f"  ut1_sha256: '{'0' * 64}'\n", "is not the expected 0000"),
]


@pytest.mark.parametrize(
    ("make", "limits", "message"), [case[1:] for case in BAD_ARCHIVES], ids=[c[0] for c in BAD_ARCHIVES]
)
def test_a_bad_archive_is_one_line_exit_2_and_changes_nothing(
    cli: CLI,
    config_file: Path,
    archive_server: tuple[str, Path],
    sync_redis: redis.Redis,
    make: Any,
    limits: str,
    message: str,
) -> None:
    base, folder = archive_server
    good = ut1_archive(folder / "good.tar.gz", V1)
    configure(config_file, f"{base}/good.tar.gz")
    cli("categories", "add", "webmail", "admin-mail.example")
    cli("categories", "update")
    before = snapshot(sync_redis)
    configure(config_file, f"{base}/bad.tar.gz", limits)
    make(folder / "bad.tar.gz")
    for location in ([], ["--from", str(folder / "bad.tar.gz")]):  # over HTTP, and as a file
        result = cli("categories", "update", *location, check=False)
        assert result.returncode == 2, result.stdout
        assert result.stderr.count("\n") == 1 and result.stderr.startswith("clearance: "), result.stderr
        assert message in result.stderr and result.stdout == ""
        assert snapshot(sync_redis) == before
    assert good.exists() and "webmail (list entry gone.example)" in lookup(cli, "gone.example")


def test_an_unreachable_or_missing_archive_is_one_line(
    cli: CLI, config_file: Path, archive_server: tuple[str, Path], sync_redis: redis.Redis
) -> None:
    base, _ = archive_server
    configure(config_file, f"{base}/missing.tar.gz")
    for args, message in [
        ((), f"{base}/missing.tar.gz: HTTP 404"),
        (("--from", "/nonexistent/blacklists.tar.gz"), "/nonexistent/blacklists.tar.gz: No such file"),
        (("--from", "ftp://example.org/x.tar.gz"), "expected an http(s):// URL or a file"),
        (("--sha256", "abc"), "--sha256: expected 64 hex digits"),
    ]:
        result = cli("categories", "update", *args, check=False)
        assert result.returncode == 2 and result.stderr.count("\n") == 1 and message in result.stderr, result.stderr
    assert sync_redis.dbsize() == 0


# ---- sources kept apart ---------------------------------------------------------------------------------


def test_replace_of_one_source_leaves_the_others(cli: CLI, tmp_path: Path, sync_redis: redis.Redis) -> None:
    first = tmp_path / "a.txt"
    first.write_text("x.example\ny.example\n", encoding="utf-8")
    other = tmp_path / "b.txt"
    other.write_text("z.example\ny.example\n", encoding="utf-8")
    cli("categories", "import", str(first), "--category", "webmail", "--source", "a")
    cli("categories", "import", str(other), "--category", "webmail")  # the file's stem: source `b`
    cli("categories", "add", "webmail", "admin.example")
    first.write_text("x.example\n", encoding="utf-8")
    out = cli("categories", "import", str(first), "--category", "webmail", "--source", "a", "--replace").stdout
    assert "(replaced) as source a: 0 added, 1 removed" in out
    assert source_entries(sync_redis, "webmail", "a") == {"x.example"}
    assert source_entries(sync_redis, "webmail", "b") == {"z.example", "y.example"}
    assert "webmail" in lookup(cli, "y.example")  # still listed by b
    lines = cli("categories", "stats").stdout.splitlines()
    assert lines[0] == "webmail\t4" and [line.split("\t")[:2] for line in lines[1:]] == [
        ["  a", "1"], ["  admin", "1"], ["  b", "2"],
    ]  # fmt: skip
    refused = cli("categories", "import", str(first), "--category", "webmail", "--source", "curated", check=False)
    assert refused.returncode == 2 and "the shipped lists" in refused.stderr


def test_import_reads_a_ut1_archive_as_the_ut1_source(cli: CLI, tmp_path: Path, sync_redis: redis.Redis) -> None:
    archive = ut1_archive(tmp_path / "blacklists.tar.gz", V2)
    out = cli("categories", "import", str(archive)).stdout
    assert "office365.com from UT1 webmail: protected, skipped" in out
    assert "as source ut1: 4 added" in out
    assert source_entries(sync_redis, "webmail", "ut1") == {"outlook.com", "mail.example", "webmail.example"}
    assert lookup(cli, "chat.example") == "chat.example: web-im (list entry chat.example)"
    named = cli("categories", "import", str(archive), "--source", "mirror", "--dry-run").stdout
    assert "dry run: nothing written" in named and not sync_redis.hexists(f"{PREFIX}lists", "webmail:mirror")
    bad = tmp_path / "bad.tar.gz"
    bad.write_bytes(archive.read_bytes()[:40])
    result = cli("categories", "import", str(bad), check=False)
    assert result.returncode == 2 and "not a complete gzip tar archive" in result.stderr


# ---- the shipped lists: versioned, replaced on an upgrade ------------------------------------------------


def run_store(redis_url: str, action: Any) -> Any:
    async def main() -> Any:
        store = PolicyStore.from_url(redis_url, PREFIX)
        try:
            return await action(store)
        finally:
            await store.close()

    return asyncio.run(main())


def older_install(redis_url: str) -> None:
    """The curated lists as an older version shipped them: one entry since dropped, one shipped entry missing."""
    older = {"webmail": [*default_list("webmail")[1:], "retired.example"], "web-im": default_list("web-im")}
    run_store(redis_url, lambda store: store.replace_curated(older, "000000000000", "old clearance"))


def test_an_upgrade_replaces_the_curated_lists_only(
    cli: CLI, config_file: Path, redis_url: str, sync_redis: redis.Redis, start_icap_server: StartServer
) -> None:
    serve_config = configure(config_file)
    cli("store", "init")
    assert "curated lists replaced" not in cli("store", "init").stdout  # the same version: nothing to do
    older_install(redis_url)
    cli("categories", "add", "webmail", "admin-mail.example")
    listing = config_file.parent / "extra.txt"
    listing.write_text("imported.example\nretired.example\n", encoding="utf-8")
    cli("categories", "import", str(listing), "--category", "webmail")
    assert "webmail" in lookup(cli, "retired.example")
    assert CURATED_HOST not in source_entries(sync_redis, "webmail", "curated")  # the older install lacked it
    assert not sync_redis.hexists(f"{PREFIX}lists", "cloud-storage:curated")

    out = cli("store", "init").stdout  # the newer install starts
    assert "already initialised" in out and "curated lists replaced by the installed ones" in out
    shipped = {category: set(default_list(category)) for category in ("webmail", "cloud-storage", "web-im")}
    for category, hosts in shipped.items():
        assert source_entries(sync_redis, category, "curated") == hosts
    assert source_entries(sync_redis, "webmail", "admin") == {"admin-mail.example"}
    assert source_entries(sync_redis, "webmail", "extra") == {"imported.example", "retired.example"}
    assert "webmail" in lookup(cli, "retired.example")  # still imported by `extra`
    assert f"shipped {shipped_version()}" in cli("categories", "stats").stdout

    older_install(redis_url)  # once more, and this time `serve` is the newer version starting
    server = start_icap_server(serve_config)
    updated = server.wait_for_log("curated_lists_updated")
    assert updated["version"] == shipped_version()
    assert updated["removed"] == {"webmail": 1, "cloud-storage": 0, "web-im": 0}
    assert updated["added"] == {"webmail": 1, "cloud-storage": len(shipped["cloud-storage"]), "web-im": 0}
    assert source_entries(sync_redis, "webmail", "curated") == shipped["webmail"]
    assert verdict(server.port, f"https://{default_list('webmail')[0]}/") == "block"
    assert verdict(server.port, "https://admin-mail.example/") == "block"
    assert server.stop() == []


def test_the_shipped_lists_stay_out_when_load_default_lists_is_off(
    cli: CLI, config_file: Path, sync_redis: redis.Redis
) -> None:
    configure(config_file, extra="policy:\n  load_default_lists: false\n")
    cli("store", "init")
    cli("store", "init")
    assert not sync_redis.exists(f"{PREFIX}lists") and not sync_redis.hexists(f"{PREFIX}sources", "curated")


# ---- a store from before sources ------------------------------------------------------------------------


def test_a_store_from_before_sources_keeps_working_and_is_moved_in_place(
    cli: CLI, redis_url: str, sync_redis: redis.Redis
) -> None:
    run_store(redis_url, lambda store: store.initialise({}, "old clearance"))
    sync_redis.hset(f"{PREFIX}categories", mapping={"webmail": "7", "web-im": "8"})  # the old layout
    sync_redis.sadd(f"{PREFIX}cat:webmail:7", "legacy-mail.example", "both.example")
    sync_redis.sadd(f"{PREFIX}cat:web-im:8", "legacy-chat.example")
    sync_redis.set(f"{PREFIX}gen:seq", "8")

    async def entries(store: PolicyStore) -> dict[str, frozenset[str]]:
        return dict((await store.load_state()).categories.entries)

    before = run_store(redis_url, entries)
    assert before == {
        "legacy-mail.example": {"webmail"}, "both.example": {"webmail"}, "legacy-chat.example": {"web-im"},
    }  # fmt: skip
    assert lookup(cli, "legacy-mail.example").endswith("webmail (list entry legacy-mail.example)")
    assert sync_redis.exists(f"{PREFIX}categories")  # reading moves nothing
    cli("categories", "add", "webmail", "both.example", "new.example")  # the first write moves it
    assert not sync_redis.exists(f"{PREFIX}categories")
    assert sync_redis.hgetall(f"{PREFIX}lists") == {"webmail:legacy": "7", "web-im:legacy": "8", "webmail:admin": "9"}
    after = run_store(redis_url, entries)
    assert after == {**before, "new.example": {"webmail"}}
    lines = cli("categories", "stats").stdout.splitlines()
    assert lines[:2] == ["web-im\t1", "  legacy\t1\t-"] and lines[2] == "webmail\t3"
