"""`clearance categories import` against a real Redis: formats, mapping, atomic switch, failures, merge, dry run."""

from __future__ import annotations

import asyncio
import json
import os
import pty
import subprocess
import sys
import threading
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest
import redis

from policy.sources.formats import open_source
from policy.sources.lines import SourceError
from policy.sources.lists import CategoryMap, scan
from policy.store import PolicyStore
from tests.conftest import CLI, clearance_env

PREFIX = "clearance:"


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def host_list(path: Path, prefix: str, count: int) -> Path:
    return write(path, "".join(f"{prefix}{index}.gen-{prefix}.example\n" for index in range(count)))


def live_members(client: redis.Redis, category: str, source: str) -> set[str]:
    """The entries of one source's live list of a category (`lists`: `{category}:{source}` -> generation)."""
    generation = str(client.hget(f"{PREFIX}lists", f"{category}:{source}"))
    return {str(member) for member in client.smembers(f"{PREFIX}cat:{category}:{generation}")}


def category_keys(client: redis.Redis, include_retired: bool = True) -> set[str]:
    keys = {str(key) for key in client.scan_iter(f"{PREFIX}cat:*")}
    return keys if include_retired else {key for key in keys if int(client.ttl(key)) == -1}


def live_keys(client: redis.Redis) -> set[str]:
    generations: dict[str, str] = client.hgetall(f"{PREFIX}lists")  # type: ignore[assignment]
    return {f"{PREFIX}cat:{name.partition(':')[0]}:{generation}" for name, generation in generations.items()}


def stats(cli: CLI) -> list[str]:
    """`categories stats`, its category lines only (`CATEGORY<TAB>N`; each source's line is indented)."""
    lines = cli("categories", "stats").stdout.splitlines()
    return [word for line in lines if not line.startswith(" ") for word in line.split()]


def lookup(cli: CLI, host: str) -> str:
    return cli("categories", "lookup", host).stdout.strip()


def ut1_tree(root: Path) -> Path:
    tree = root / "blacklists"
    write(
        tree / "webmail" / "domains",
        "# webmail, as UT1 ships it\nmail.example\nWebMail.Example.ORG.\n\nnot a host\n10.9.8.7\nbad..host\n",
    )
    write(tree / "webmail" / "urls", "inbox.example/\nmail.example/u/0/\nportal.example/webmail\n")
    write(tree / "filehosting" / "domains", "files.example\n.drop.example\n*.share.example\nhttp://junk/\n")
    write(tree / "filehosting" / "urls", "upload.example\n")
    write(tree / "chat" / "domains", "chat.example\n# comment\nim.example\n")
    write(tree / "adult" / "domains", "adult.example\n")
    write(tree / "adult" / "urls", "adult2.example/\n")
    (tree / "courrier").symlink_to("webmail")
    (tree / "dangling").symlink_to("missing")
    return tree


# ---- (1) a UT1 tree, mapped ---------------------------------------------------------------------------


def test_ut1_tree_imports_with_the_default_mapping(cli: CLI, tmp_path: Path, sync_redis: redis.Redis) -> None:
    tree = ut1_tree(tmp_path)
    result = cli("categories", "import", str(tree))
    out = result.stdout
    # Not a terminal: no progress bars; only the audit line every change logs (JSON logs in the test config).
    assert [json.loads(line)["action"] for line in result.stderr.splitlines()] == ["categories-import"]
    rows = {line.split()[0]: line.split() for line in out.splitlines()[1:4]}
    assert rows["webmail"][:4] == ["webmail", "4", "0", "4"]  # entries, before, read
    assert rows["webmail"][4:] == ["webmail", "(alias", "courrier)"]
    assert rows["cloud-storage"][:5] == ["cloud-storage", "4", "0", "4", "filehosting"]
    assert rows["web-im"][:5] == ["web-im", "2", "0", "2", "chat"]
    assert "not imported (no mapping): adult (2)" in out
    assert "skipped lines: 3 not host names or IP addresses, 2 path entries (use rules for paths)" in out
    assert f"{tree}/webmail/domains:5: 'not a host': not a host name or IP address" in out
    assert f"{tree}/webmail/urls:3: 'portal.example/webmail': a path entry (use rules for paths)" in out
    summary = [line for line in out.splitlines() if line.startswith("imported ")]
    assert len(summary) == 1 and "10 entries into 3 categories (replaced)" in summary[0] and "hosts/s" in summary[0]

    assert lookup(cli, "https://a.mail.example/x") == "a.mail.example: webmail (list entry mail.example)"
    assert lookup(cli, "webmail.example.org") == "webmail.example.org: webmail (list entry webmail.example.org)"
    assert lookup(cli, "inbox.example") == "inbox.example: webmail (list entry inbox.example)"
    assert lookup(cli, "10.9.8.7") == "10.9.8.7: webmail (list entry 10.9.8.7)"
    assert lookup(cli, "x.drop.example") == "x.drop.example: cloud-storage (list entry drop.example)"
    assert lookup(cli, "upload.example") == "upload.example: cloud-storage (list entry upload.example)"
    assert lookup(cli, "im.example") == "im.example: web-im (list entry im.example)"
    assert "no category" in lookup(cli, "adult.example")
    assert "no category" in lookup(cli, "portal.example")  # only a path of it was listed
    assert stats(cli) == ["cloud-storage", "4", "web-im", "2", "webmail", "4"]
    assert not category_keys(sync_redis) - live_keys(sync_redis)


def test_map_option_and_config_only_mapped(cli: CLI, tmp_path: Path, config_file: Path) -> None:
    tree = ut1_tree(tmp_path)
    out = cli("categories", "import", str(tree), "--map", "adult=adult", "--map", "chat=webmail").stdout
    assert "not imported" not in out
    assert stats(cli) == ["adult", "2", "cloud-storage", "4", "webmail", "6"]
    with config_file.open("a", encoding="utf-8") as config:
        config.write("import:\n  category_map: {}\n  only_mapped: false\n")
    cli("categories", "import", str(tree), "--replace")
    assert stats(cli) == [
        "adult", "2", "chat", "2", "cloud-storage", "4", "filehosting", "4", "webmail", "4",
    ]


# ---- (2) --replace while lookups run: all old or all new, never a mix --------------------------------------


def observe(client: redis.Redis, samples: list[str]) -> tuple[int, int, int, tuple[int, ...]]:
    """One consistent read of the live webmail generation: (generation, last handed out, size, membership).

    WATCH/MULTI: if the live generation moves between reading it and reading its set, the read is retried,
    so the observation is of one generation, as a reader that takes the generation and its set together sees.
    """
    lists = f"{PREFIX}lists"
    with client.pipeline(transaction=True) as pipe:
        while True:
            try:
                pipe.watch(lists)  # type: ignore[no-untyped-call]
                generation = int(pipe.hget(lists, "webmail:lists"))  # type: ignore[arg-type]
                handed_out = int(pipe.get(f"{PREFIX}gen:seq"))  # type: ignore[arg-type]
                pipe.multi()
                key = f"{PREFIX}cat:webmail:{generation}"
                pipe.scard(key)
                pipe.smismember(key, samples)
                size, flags = pipe.execute()
                return generation, handed_out, int(size), tuple(int(flag) for flag in flags)
            except redis.WatchError:
                continue


def test_replace_is_atomic_for_concurrent_readers(
    cli: CLI, tmp_path: Path, redis_url: str, sync_redis: redis.Redis
) -> None:
    count = 50_000
    source = ("--category", "webmail", "--source", "lists")  # both files are one source: B replaces A
    cli("categories", "import", str(host_list(tmp_path / "a.txt", "a", count)), *source)
    samples_a = [f"a{index}.gen-a.example" for index in range(0, count, count // 10)]
    samples_b = [f"b{index}.gen-b.example" for index in range(0, count, count // 10)]
    all_a = (1,) * len(samples_a) + (0,) * len(samples_b)
    all_b = (0,) * len(samples_a) + (1,) * len(samples_b)
    observations: list[tuple[int, int, int, tuple[int, ...]]] = []
    done = threading.Event()

    def reader() -> None:
        client = redis.Redis.from_url(redis_url, decode_responses=True)
        try:
            while not done.is_set():
                observations.append(observe(client, samples_a + samples_b))
            observations.append(observe(client, samples_a + samples_b))
        finally:
            client.close()

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        path_b = host_list(tmp_path / "b.txt", "b", count)
        out = cli("categories", "import", str(path_b), *source, "--replace").stdout
    finally:
        done.set()
        thread.join(timeout=30)
    assert "(replaced)" in out
    seen_a = [o for o in observations if o[3] == all_a and o[2] == count]
    seen_b = [o for o in observations if o[3] == all_b and o[2] == count]
    assert len(seen_a) + len(seen_b) == len(observations), [
        o[:3] for o in observations if o not in seen_a and o not in seen_b
    ][:5]
    assert seen_a and seen_b
    assert any(handed_out > generation for generation, handed_out, _, _ in seen_a), "no read while B was staged"
    first_b = observations.index(seen_b[0])
    assert all(o[3] == all_b for o in observations[first_b:])  # and it never flips back
    assert live_members(sync_redis, "webmail", "lists") == {f"b{index}.gen-b.example" for index in range(count)}
    retired = category_keys(sync_redis) - live_keys(sync_redis)  # generation A expires shortly after the switch
    assert len(retired) == 1 and all(0 < int(sync_redis.ttl(key)) <= 300 for key in retired)
    assert all(int(sync_redis.ttl(key)) == -1 for key in live_keys(sync_redis))


# ---- (3) a failed import leaves the live generation as it was -----------------------------------------------


def snapshot(client: redis.Redis) -> tuple[dict[str, str], str | None, set[str], set[str]]:
    return (
        client.hgetall(f"{PREFIX}lists"),  # type: ignore[return-value]
        client.get(f"{PREFIX}policy:version"),
        live_members(client, "webmail", "a"),  # a.txt's list: the source `a`
        category_keys(client),
    )


def run_store(redis_url: str, action: Callable[[PolicyStore], Awaitable[None]]) -> None:
    async def main() -> None:
        store = PolicyStore.from_url(redis_url, PREFIX)
        try:
            await action(store)
        finally:
            await store.close()

    asyncio.run(main())


def test_failure_half_way_through_the_batches_keeps_the_live_generation(
    cli: CLI, tmp_path: Path, redis_url: str, sync_redis: redis.Redis
) -> None:
    cli("categories", "import", str(host_list(tmp_path / "a.txt", "a", 1000)), "--category", "webmail")
    cli("categories", "add", "web-im", "chat.example")
    before = snapshot(sync_redis)

    def failing() -> Iterator[list[str]]:
        for batch in range(10):
            if batch == 6:
                raise RuntimeError("source broke")
            yield [f"b{batch}-{index}.example" for index in range(500)]

    async def action(store: PolicyStore) -> None:
        sources = {"web-im": iter([["new-im.example"]]), "webmail": failing()}
        for replace in (True, False):
            with pytest.raises(RuntimeError, match="source broke"):
                await store.import_categories(sources, replace=replace)
            sources = {"webmail": failing()}

    run_store(redis_url, action)
    assert snapshot(sync_redis) == before
    assert category_keys(sync_redis) == live_keys(sync_redis)  # the staged sets were deleted
    assert lookup(cli, "chat.example").endswith("web-im (list entry chat.example)")


def test_source_changed_between_check_and_write_is_refused(
    cli: CLI, tmp_path: Path, redis_url: str, sync_redis: redis.Redis
) -> None:
    cli("categories", "import", str(host_list(tmp_path / "a.txt", "a", 100)), "--category", "webmail")
    before = snapshot(sync_redis)
    path = host_list(tmp_path / "b.txt", "b", 20_000)
    report = scan(open_source(path, category="webmail"), CategoryMap({}), keep=0)  # forces a second read
    with path.open("a", encoding="utf-8") as handle:
        handle.write("bad host\n")

    async def action(store: PolicyStore) -> None:
        with pytest.raises(SourceError, match=r"b.txt:20001: 'bad host'"):
            await store.import_categories({"webmail": report.batches("webmail", 5000)}, replace=True)

    run_store(redis_url, action)
    assert snapshot(sync_redis) == before
    assert category_keys(sync_redis, include_retired=False) == live_keys(sync_redis)


def test_bad_csv_row_writes_nothing(cli: CLI, tmp_path: Path, sync_redis: redis.Redis) -> None:
    cli("categories", "import", str(host_list(tmp_path / "a.txt", "a", 100)), "--category", "webmail")
    before = snapshot(sync_redis)
    sequence = sync_redis.get(f"{PREFIX}gen:seq")
    rows = "host,category\n" + "".join(f"c{index}.example,webmail\n" for index in range(500))
    path = write(tmp_path / "hosts.csv", rows + "http://c500.example/,webmail\nc501.example,webmail\n")
    result = cli("categories", "import", str(path), "--replace", check=False)
    assert result.returncode == 2
    assert result.stderr == f"clearance: {path}:502: 'http://c500.example/' is not a host name or IP address\n"
    assert result.stdout == ""
    assert snapshot(sync_redis) == before
    assert sync_redis.get(f"{PREFIX}gen:seq") == sequence  # not even a generation number was taken
    assert category_keys(sync_redis, include_retired=False) == live_keys(sync_redis)


# ---- (4) merge, (5) dry run, (6) a bad plain-list row -----------------------------------------------------


def test_a_reimport_replaces_its_source_merge_keeps_it_and_other_sources_stay(cli: CLI, tmp_path: Path) -> None:
    cli("categories", "add", "webmail", "old.example")  # the admin source
    csv_path = write(tmp_path / "new.csv", "host,category\nnew.example,webmail\nstale.example,webmail\n")
    out = cli("categories", "import", str(csv_path)).stdout  # the source `new` (the file's stem)
    assert out.splitlines()[1].split()[:4] == ["webmail", "2", "0", "2"]  # the source's entries: now, before, read
    assert "(replaced) as source new: 2 added, 0 removed" in out
    write(csv_path, "host,category\nnew.example,webmail\nkept.example,webmail\n")
    out = cli("categories", "import", str(csv_path), "--merge").stdout
    assert "(merged) as source new: 1 added, 0 removed" in out
    assert "webmail" in lookup(cli, "stale.example")  # --merge keeps what the file no longer holds
    write(csv_path, "host,category\nnew.example,webmail\n")
    out = cli("categories", "import", str(csv_path)).stdout  # a plain re-import: the file is the source
    assert "(replaced) as source new: 0 added, 2 removed" in out
    assert "no category" in lookup(cli, "stale.example") and "no category" in lookup(cli, "kept.example")
    assert "webmail" in lookup(cli, "old.example") and "webmail" in lookup(cli, "new.example")
    listing = write(tmp_path / "list.txt", "newest.example\n")
    cli("categories", "import", str(listing), "--category", "webmail", "--replace")  # source `list`: others stay
    assert "webmail" in lookup(cli, "old.example") and "webmail" in lookup(cli, "new.example")
    assert stats(cli) == ["webmail", "3"]
    both = cli("categories", "import", str(listing), "--category", "webmail", "--replace", "--merge", check=False)
    assert both.returncode == 2 and "not allowed with argument" in both.stderr


def test_dry_run_writes_nothing(cli: CLI, tmp_path: Path, sync_redis: redis.Redis) -> None:
    tree = ut1_tree(tmp_path)
    out = cli("categories", "import", str(tree), "--dry-run").stdout
    assert sync_redis.dbsize() == 0
    assert out.splitlines()[0].split() == ["CATEGORY", "READ", "FROM"]
    assert "dry run: nothing written; 10 entries for 3 categories" in out
    cli("categories", "add", "webmail", "old.example")
    before = snapshot(sync_redis)
    keys = set(sync_redis.keys())
    cli("categories", "import", str(tree), "--replace", "--dry-run")
    assert snapshot(sync_redis) == before and set(sync_redis.keys()) == keys


def test_bad_plain_list_row_names_file_and_line(cli: CLI, tmp_path: Path, sync_redis: redis.Redis) -> None:
    path = write(tmp_path / "list.txt", "# list\ngood.example\n\nalso.good.example\nmail.example:8080\n")
    result = cli("categories", "import", str(path), "--category", "webmail", check=False)
    assert result.returncode == 2
    assert result.stderr == f"clearance: {path}:5: 'mail.example:8080' is not a host name or IP address\n"
    assert sync_redis.dbsize() == 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--map", "adult"], "--map: expected SRC=DST"),
        (["--map", "adult=Adult Sites"], "invalid category name"),
        (["--category", "webmail"], "--category applies to plain host lists only"),
        (["--map", "webmail=x", "--format", "csv"], "not a file"),
    ],
)
def test_bad_arguments_one_line_exit_2(
    cli: CLI, tmp_path: Path, sync_redis: redis.Redis, args: list[str], message: str
) -> None:
    result = cli("categories", "import", str(ut1_tree(tmp_path)), *args, check=False)
    assert result.returncode == 2
    assert result.stderr.startswith("clearance: ") and result.stderr.count("\n") == 1
    assert message in result.stderr
    assert sync_redis.dbsize() == 0


def test_nothing_mapped_and_missing_path(cli: CLI, tmp_path: Path, sync_redis: redis.Redis) -> None:
    write(tmp_path / "t" / "adult" / "domains", "adult.example\n")
    result = cli("categories", "import", str(tmp_path / "t"), check=False)
    assert result.returncode == 2
    assert "nothing to import: no source category is mapped" in result.stderr and "(found: adult)" in result.stderr
    result = cli("categories", "import", str(tmp_path / "nope"), check=False)
    assert result.returncode == 2 and "no such file or directory" in result.stderr
    listing = write(tmp_path / "list.txt", "a.example\n")
    result = cli("categories", "import", str(listing), check=False)
    assert result.returncode == 2 and "needs --category" in result.stderr
    assert sync_redis.dbsize() == 0


# ---- progress on a terminal ------------------------------------------------------------------------------


def test_progress_on_a_terminal(redis_url: str, config_file: Path, tmp_path: Path) -> None:
    path = host_list(tmp_path / "a.txt", "a", 30_000)
    controller, terminal = pty.openpty()
    try:
        result = subprocess.run(
            [sys.executable, "-m", "icap_server", "categories", "import", str(path), "--category", "webmail"],
            env={**clearance_env(redis_url, config_file), "TERM": "xterm", "COLUMNS": "100"},
            stdout=subprocess.PIPE,
            stderr=terminal,
            text=True,
            timeout=60,
        )
        os.close(terminal)
        terminal = -1
        shown = b""
        while True:
            try:
                chunk = os.read(controller, 65536)
            except OSError:
                break
            if not chunk:
                break
            shown += chunk
    finally:
        if terminal >= 0:
            os.close(terminal)
        os.close(controller)
    assert result.returncode == 0, shown
    assert "imported 30,000 entries into 1 category" in result.stdout
    assert b"Traceback" not in shown
