"""The CLI zygote (tests/support/cli_zygote.py) behaves like a fresh `python -m icap_server`, call after call.

The functions at the top are entry points a forked child runs instead of `clearance`'s main (`entry=`); each
behaviour is also run in a fresh interpreter (`fresh`) and the two must agree.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.cli_zygote import ZygoteClient
from tests.support.processes import Leftovers, snapshot

PROJECT_ROOT = Path(__file__).resolve().parent.parent
HERE = "tests.test_cli_zygote"
STATE: list[str] = []  # a module-level cache a child fills: the next child must find it empty again


def remember(argv: list[str]) -> int:
    import icap_server.admin.main as cli_main

    seen = {
        "cache": list(STATE),
        "marker": getattr(cli_main, "zygote_marker", None),
        "leaked_env": os.environ.get("ZYGOTE_LEAK"),
        "mine": os.environ.get("ZYGOTE_MINE"),
        "cwd": os.getcwd(),
    }
    STATE.append(argv[0])
    cli_main.zygote_marker = argv[0]  # type: ignore[attr-defined]
    os.environ["ZYGOTE_LEAK"] = argv[0]
    print(repr(seen))
    return 0


def exit_with(argv: list[str]) -> int:
    kind = argv[0]
    if kind == "return":
        return int(argv[1])
    if kind == "none":
        raise SystemExit(None)
    if kind == "int":
        raise SystemExit(int(argv[1]))
    if kind == "text":
        raise SystemExit(argv[1])
    if kind == "crash":
        raise ValueError("boom")
    raise AssertionError(kind)


def write_odd_text(argv: list[str]) -> int:
    """Text a strict UTF-8 stream refuses: stderr escapes it, stdout fails (a traceback, exit 1)."""
    print("before \u00e9\u6e2c", flush=True)
    print("odd \udcff on stderr", file=sys.stderr, flush=True)
    if argv and argv[0] == "stdout":
        print("odd \udcff on stdout")
    return 0


def write_lots(argv: list[str]) -> int:
    line = "x" * 1023 + "\n"
    sys.stdout.write(line * int(argv[0]))
    sys.stderr.write("e" * 100 + "\n")
    return 0


def echo_stdin(argv: list[str]) -> int:
    data = sys.stdin.read()
    print(data.upper(), end="")
    print(len(data), file=sys.stderr)
    return 0


def dispositions(argv: list[str]) -> int:
    for name in ("SIGINT", "SIGTERM", "SIGPIPE", "SIGXFSZ", "SIGCHLD", "SIGHUP"):
        handler = signal.getsignal(getattr(signal, name))
        print(name, getattr(handler, "__name__", repr(handler)))
    print("blocked", sorted(signal.pthread_sigmask(signal.SIG_BLOCK, set())))
    return 0


def sleep_long(argv: list[str]) -> int:
    print("sleeping", flush=True)
    time.sleep(float(argv[0]))
    return 0


def leave_orphan(argv: list[str]) -> int:
    orphan = subprocess.Popen(["sleep", "60"], start_new_session=False)
    print(orphan.pid)
    return 0


def fresh(entry: str, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """The same entry point in a fresh interpreter, as `python -m icap_server` would run it."""
    code = f"import sys\nfrom {HERE} import {entry}\nraise SystemExit({entry}(sys.argv[1:]))"
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        cwd=PROJECT_ROOT,
        env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT)},
        capture_output=True,
        text=True,
        input=stdin,
        timeout=60,
    )


def forked(
    zygote: ZygoteClient, entry: str, *args: str, stdin: str | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    env = env if env is not None else {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
    proc = zygote.run(list(args), env=env, cwd=PROJECT_ROOT, input=stdin, entry=f"{HERE}:{entry}")
    return proc


def test_the_zygote_is_one_thread_and_its_children_start_pristine(cli_zygote: ZygoteClient, tmp_path: Path) -> None:
    assert os.listdir(f"/proc/{cli_zygote.pid}/task") == [str(cli_zygote.pid)]
    base = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
    first = cli_zygote.run(["one"], env={**base, "ZYGOTE_MINE": "a"}, cwd=tmp_path, entry=f"{HERE}:remember")
    second = cli_zygote.run(["two"], env={**base, "ZYGOTE_MINE": "b"}, cwd=PROJECT_ROOT, entry=f"{HERE}:remember")
    assert first.returncode == 0 and second.returncode == 0, (first, second)
    assert first.stdout.strip() == repr(
        {"cache": [], "marker": None, "leaked_env": None, "mine": "a", "cwd": str(tmp_path)}
    )
    assert second.stdout.strip() == repr(
        {"cache": [], "marker": None, "leaked_env": None, "mine": "b", "cwd": str(PROJECT_ROOT)}
    )
    env_only = cli_zygote.run(["three"], env={"ZYGOTE_MINE": "c"}, entry=f"{HERE}:remember")
    assert "'mine': 'c'" in env_only.stdout and env_only.returncode == 0


def test_two_clearance_calls_with_different_redis_and_config_each_see_their_own(
    cli_zygote: ZygoteClient, redis_url: str, tmp_path: Path
) -> None:
    from tests.conftest import clearance_env, cli_config_text

    good = tmp_path / "good.yaml"
    good.write_text(cli_config_text(), encoding="utf-8")
    bad = tmp_path / "bad.yaml"
    bad.write_text("policy: [not, a, mapping\n", encoding="utf-8")
    nowhere = "redis://127.0.0.1:1/0"
    calls = [
        (redis_url, good, 0, ""),
        (nowhere, good, 1, "Redis is not reachable"),
        (redis_url, bad, 2, "clearance: "),
        (redis_url, good, 0, ""),
    ]
    for url, config, code, stderr in calls:
        proc = cli_zygote.run(["rules", "list"], env=clearance_env(url, config), timeout=60)
        assert proc.returncode == code, proc
        assert stderr in proc.stderr
        assert proc.args == [sys.executable, "-m", "icap_server", "rules", "list"]


@pytest.mark.parametrize(
    "args",
    [
        ("return", "0"),
        ("return", "3"),
        ("return", "300"),
        ("none",),
        ("int", "7"),
        ("int", "-1"),
        ("text", "bye now"),
        ("crash",),
    ],
)
def test_exit_codes_and_crashes_are_a_fresh_interpreters(cli_zygote: ZygoteClient, args: tuple[str, ...]) -> None:
    ours, theirs = forked(cli_zygote, "exit_with", *args), fresh("exit_with", *args)
    assert ours.returncode == theirs.returncode, (ours, theirs)
    assert ours.stdout == theirs.stdout
    assert ours.stderr.splitlines()[-1:] == theirs.stderr.splitlines()[-1:]
    if args[0] == "crash":
        assert ours.returncode == 1 and ours.stderr.startswith("Traceback (most recent call last):")
        assert ours.stderr.rstrip().endswith("ValueError: boom")


@pytest.mark.parametrize("where", ["stderr", "stdout"])
def test_text_a_strict_stream_refuses_or_escapes_as_a_fresh_interpreter_does(
    cli_zygote: ZygoteClient, where: str
) -> None:
    """Bytes compared exactly: whether stdout escapes or refuses depends on the locale, as it does for Python."""
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
    ours = cli_zygote.run_bytes([where], env=env, cwd=PROJECT_ROOT, entry=f"{HERE}:write_odd_text")
    theirs = subprocess.run(
        [
            sys.executable,
            "-c",
            f"import sys\nfrom {HERE} import write_odd_text as f\nraise SystemExit(f(sys.argv[1:]))",
            where,
        ],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        timeout=60,
    )
    assert ours.returncode == theirs.returncode, (ours, theirs)
    assert ours.stdout == theirs.stdout and ours.stdout.startswith("before \u00e9\u6e2c\n".encode())
    assert b"odd \\udcff on stderr" in ours.stderr
    assert ours.stderr.splitlines()[-1] == theirs.stderr.splitlines()[-1]
    if b"\xff" in theirs.stdout:  # text=True cannot decode it, for subprocess.run and the zygote alike
        with pytest.raises(UnicodeDecodeError):
            cli_zygote.run([where], env=env, cwd=PROJECT_ROOT, entry=f"{HERE}:write_odd_text")


def test_large_output_and_stdin(cli_zygote: ZygoteClient) -> None:
    lots = forked(cli_zygote, "write_lots", "3000")  # about 3 MiB
    assert (
        lots.returncode == 0 and len(lots.stdout) == 3000 * 1024 and lots.stdout == fresh("write_lots", "3000").stdout
    )
    assert lots.stderr == "e" * 100 + "\n"
    text = "first line \u00e9\u6e2c\nsecond\n" * 50_000
    echoed = forked(cli_zygote, "echo_stdin", stdin=text)
    assert echoed.returncode == 0 and echoed.stdout == text.upper()
    assert echoed.stderr == f"{len(text)}\n"
    empty = forked(cli_zygote, "echo_stdin")
    assert (empty.returncode, empty.stdout, empty.stderr) == (0, "", "0\n")


def test_signal_dispositions_are_a_fresh_interpreters(cli_zygote: ZygoteClient) -> None:
    ours, theirs = forked(cli_zygote, "dispositions"), fresh("dispositions")
    assert ours.returncode == 0 and ours.stdout == theirs.stdout, (ours.stdout, theirs.stdout)
    assert "SIGINT default_int_handler" in ours.stdout and "SIGPIPE <Handlers.SIG_IGN: 1>" in ours.stdout


def test_a_timeout_kills_the_child_and_the_zygote_still_serves(cli_zygote: ZygoteClient) -> None:
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
    started = time.monotonic()
    with pytest.raises(subprocess.TimeoutExpired) as raised:
        cli_zygote.run(["30"], env=env, timeout=1.5, entry=f"{HERE}:sleep_long")
    assert time.monotonic() - started < 10
    assert raised.value.output == b"sleeping\n"
    assert not cli_zygote.live
    children = {info.pid for info in snapshot().values() if info.ppid == cli_zygote.pid}
    assert not children, children
    after = forked(cli_zygote, "exit_with", "return", "5")
    assert after.returncode == 5


def test_what_a_child_leaves_running_is_the_tests_not_the_zygotes(cli_zygote: ZygoteClient) -> None:
    proc = forked(cli_zygote, "leave_orphan")
    orphan = int(proc.stdout)
    try:
        leftovers = Leftovers(os.getpid())
        leftovers.owned[cli_zygote.pid] = "cli_zygote"
        leftovers.forkers.add(cli_zygote.pid)
        flagged = {info.pid for info in leftovers.unexpected()}
        assert orphan in flagged  # reparented to the zygote (a subreaper), and still the test's
        assert cli_zygote.pid not in flagged
    finally:
        os.kill(orphan, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while orphan in snapshot() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert orphan not in snapshot()
