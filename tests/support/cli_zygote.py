"""A fork server for `clearance` CLI calls: the imports are paid once per session, not once per call.

The zygote (`python -m tests.support.cli_zygote SOCKET`, one per session) imports `icap_server.admin.main` and
every command module, then serves requests on a Unix socket, each (argv, env, cwd, stdin bytes, paths for
stdout/stderr) in a fresh `os.fork()` child of the pristine zygote: nothing a child does reaches the next one.
The child takes exactly the given env, cwd and fds 0/1/2, a fresh interpreter's signal dispositions, and runs
`main(argv)` as `python -m icap_server` would. The zygote replies `{"pid": …}` at once, `{"returncode": …}` once
the child is reaped; a caller that goes away (timeout, interrupt) gets its child killed. It is single-threaded
(fork safety), and a subreaper: what a child leaves running stays its descendant, visible to the suite's checks.
"""

from __future__ import annotations

import base64
import contextlib
import importlib
import json
import locale
import os
import pkgutil
import selectors
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PROJECT_ROOT = Path(__file__).resolve().parent.parent.parent
MAIN_SCRIPT = str(PROJECT_ROOT / "icap_server" / "__main__.py")
READY = b"ready\n"
DEFAULT_ENTRY = "icap_server.admin.main:main"  # tests of the zygote itself name another `function(argv) -> int`


# ---- the zygote -----------------------------------------------------------------------------------------


def preload() -> None:
    """Import the CLI and every module its commands import (all of icap_server.admin, eagerly)."""
    import icap_server.admin
    import icap_server.admin.main

    for module in pkgutil.iter_modules(icap_server.admin.__path__, "icap_server.admin."):
        importlib.import_module(module.name)


def exit_code_of(error: SystemExit) -> int:
    """What the interpreter makes of an uncaught SystemExit (printing a non-integer code, as it does)."""
    code = error.code
    if code is None or isinstance(code, int):
        return (code or 0) & 0xFF  # the OS keeps the low byte: SystemExit(-1) is 255, as for any process
    with contextlib.suppress(Exception):
        print(code, file=sys.stderr)
    return 1


def reset_signals() -> None:
    """The dispositions a fresh `python -m icap_server` starts with, and no blocked signals."""
    signal.pthread_sigmask(signal.SIG_SETMASK, set())
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)  # Python ignores SIGPIPE at startup (EPIPE -> BrokenPipeError)
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)


def point_fds(request: dict[str, Any]) -> None:
    stdin = request.get("stdin")
    if stdin is None:
        source = os.open(os.devnull, os.O_RDONLY)
    else:
        source = os.memfd_create("clearance-stdin")
        os.write(source, base64.b64decode(str(stdin)))
        os.lseek(source, 0, os.SEEK_SET)
    os.dup2(source, 0)
    os.close(source)
    for fd, key in ((1, "stdout"), (2, "stderr")):
        target = os.open(str(request[key]), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.dup2(target, fd)
        os.close(target)


def run_child(request: dict[str, Any]) -> int:
    """In the forked child: become `python -m icap_server ARGV`; its exit status (-SIGINT: die of SIGINT)."""
    module, _, name = str(request.get("entry") or DEFAULT_ENTRY).partition(":")
    main = getattr(importlib.import_module(module), name)
    os.environ.clear()
    os.environ.update(request["env"])
    os.chdir(str(request["cwd"]))
    argv = [str(arg) for arg in request["argv"]]
    sys.argv = [MAIN_SCRIPT, *argv]
    try:
        code = (main(argv) or 0) & 0xFF
    except SystemExit as error:
        code = exit_code_of(error)
    except KeyboardInterrupt:
        traceback.print_exc()
        code = -signal.SIGINT
    except BaseException:
        traceback.print_exc()
        code = 1
    return finish(code)


def finish(code: int) -> int:
    """What Py_FinalizeEx does before exiting: wait for threads, run atexit, flush stdout (120 if it fails)."""
    with contextlib.suppress(Exception):
        threading._shutdown()  # type: ignore[attr-defined]
    import atexit

    atexit._run_exitfuncs()
    try:
        sys.stdout.flush()
    except Exception as error:
        with contextlib.suppress(Exception):
            print(f"Exception ignored in: {sys.stdout!r}\n{type(error).__name__}: {error}", file=sys.stderr)
        code = 120 if code == 0 else code
    with contextlib.suppress(Exception):
        sys.stderr.flush()
    return code


@dataclass
class Call:
    conn: socket.socket
    pid: int
    pidfd: int
    status: int | None = None  # set when an orphan sweep reaped it first


@dataclass
class Zygote:
    listener: socket.socket
    parent: int
    selector: selectors.BaseSelector = field(default_factory=selectors.DefaultSelector)
    calls: dict[int, Call] = field(default_factory=dict)  # pidfd -> call

    def serve(self) -> None:
        self.selector.register(self.listener, selectors.EVENT_READ, "accept")
        while os.getppid() == self.parent:  # the test session went away: so does the zygote
            for key, _ in self.selector.select(timeout=1.0):
                if key.data == "accept":
                    self.accept()
                elif key.data == "done":
                    if key.fd in self.calls:
                        self.reap(self.calls[key.fd])
                elif key.data.pidfd in self.calls:
                    self.caller_gone(key.data)
            self.reap_orphans()
        for call in list(self.calls.values()):
            with contextlib.suppress(ProcessLookupError):
                os.kill(call.pid, signal.SIGKILL)
            self.reap(call)

    def accept(self) -> None:
        conn, _ = self.listener.accept()
        conn.setblocking(True)
        try:
            request = json.loads(read_line(conn))
        except (OSError, ValueError):
            conn.close()
            return
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:  # the child: nothing of the zygote's serving survives into it
            code = 1
            try:
                self.selector.close()
                self.listener.close()
                for call in self.calls.values():
                    call.conn.close()
                    os.close(call.pidfd)
                conn.close()
                reset_signals()
                point_fds(request)
                code = run_child(request)
            except BaseException:
                with contextlib.suppress(Exception):
                    traceback.print_exc()
            finally:
                if code < 0:
                    kill_self(-code)
                os._exit(code & 0xFF)
        pidfd = os.pidfd_open(pid)
        call = Call(conn, pid, pidfd)
        self.calls[pidfd] = call
        with contextlib.suppress(OSError):
            conn.sendall(json.dumps({"pid": pid}).encode() + b"\n")
        self.selector.register(pidfd, selectors.EVENT_READ, "done")
        self.selector.register(conn, selectors.EVENT_READ, call)

    def caller_gone(self, call: Call) -> None:
        """The caller closed its end (timeout, interrupt) before the child ended: the child goes too."""
        with contextlib.suppress(ProcessLookupError):
            os.kill(call.pid, signal.SIGKILL)
        self.selector.unregister(call.conn)

    def reap_orphans(self) -> None:
        """The zygote is a subreaper: what a child leaves running is reparented here, so the suite still sees it."""
        by_pid = {call.pid: call for call in self.calls.values()}
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            if pid in by_pid:
                by_pid[pid].status = status
                self.reap(by_pid[pid])

    def reap(self, call: Call) -> None:
        status = call.status if call.status is not None else os.waitpid(call.pid, 0)[1]
        code = os.waitstatus_to_exitcode(status)
        with contextlib.suppress(KeyError, ValueError):
            self.selector.unregister(call.pidfd)
        with contextlib.suppress(KeyError, ValueError):
            self.selector.unregister(call.conn)
        with contextlib.suppress(OSError):
            call.conn.sendall(json.dumps({"returncode": code}).encode() + b"\n")
        call.conn.close()
        os.close(call.pidfd)
        self.calls.pop(call.pidfd, None)


def become_subreaper() -> None:
    import ctypes

    pr_set_child_subreaper = 36
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(pr_set_child_subreaper, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER)")


def kill_self(signum: int) -> None:
    """Die of a signal, as the interpreter does after an uncaught KeyboardInterrupt (exit status -SIGINT)."""
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)
    os._exit(128 + signum)


def read_line(conn: socket.socket) -> bytes:
    data = b""
    while not data.endswith(b"\n"):
        chunk = conn.recv(1 << 20)
        if not chunk:
            raise OSError("connection closed")
        data += chunk
    return data


def zygote_main(socket_path: str) -> None:
    parent = os.getppid()
    become_subreaper()
    preload()
    threads = threading.enumerate()
    if len(threads) != 1:
        raise SystemExit(f"cli_zygote: importing the CLI started threads, fork is unsafe: {threads}")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(socket_path)
    listener.listen(64)
    os.write(1, READY)
    Zygote(listener, parent).serve()


# ---- the caller's side ----------------------------------------------------------------------------------


class ZygoteDied(RuntimeError):
    pass


def text_of(data: bytes) -> str:
    """Bytes as `subprocess.run(text=True)` decodes them: the locale's encoding, universal newlines."""
    encoding = locale.getpreferredencoding(False)
    return data.decode(encoding).replace("\r\n", "\n").replace("\r", "\n")


class ZygoteClient:
    """A running zygote: `run(args, env=…)` is `subprocess.run([python, -m, icap_server, *args], …)`."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.socket_path = str(workdir / "zygote.sock")
        if len(self.socket_path) > 100:  # a Unix socket's path is limited to 108 bytes
            self.socket_path = os.path.join(tempfile.mkdtemp(prefix="clearance-zygote-"), "zygote.sock")
        self.log_path = workdir / "zygote.log"
        self.calls = 0
        self.live: set[int] = set()  # children whose calls have not returned yet
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "tests.support.cli_zygote", self.socket_path],
                cwd=PROJECT_ROOT,
                env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")},
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=log,
            )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        self.proc.stdout.close()
        if line != READY:
            self.proc.wait(timeout=10)
            raise ZygoteDied(f"the CLI zygote did not start: {self.log_path.read_text(errors='replace')}")

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.socket_path)

    def run(
        self, args: Sequence[str], *, env: Mapping[str, str], cwd: str | os.PathLike[str] | None = None,
        input: str | bytes | None = None, timeout: float = 60, entry: str = DEFAULT_ENTRY,
    ) -> subprocess.CompletedProcess[str]:  # fmt: skip
        """`clearance ARGS…` in a fork of the zygote: what `subprocess.run(capture_output=True, text=True)` returns."""
        raw = self.run_bytes(args, env=env, cwd=cwd, input=input, timeout=timeout, entry=entry)
        return subprocess.CompletedProcess(raw.args, raw.returncode, text_of(raw.stdout), text_of(raw.stderr))

    def run_bytes(
        self, args: Sequence[str], *, env: Mapping[str, str], cwd: str | os.PathLike[str] | None = None,
        input: str | bytes | None = None, timeout: float = 60, entry: str = DEFAULT_ENTRY,
    ) -> subprocess.CompletedProcess[bytes]:  # fmt: skip
        """The same, stdout and stderr as bytes (`subprocess.run(capture_output=True)`)."""
        command = [sys.executable, "-m", "icap_server", *args]
        self.calls += 1
        out = self.workdir / f"call-{self.calls}.out"
        err = self.workdir / f"call-{self.calls}.err"
        stdin = input.encode(locale.getpreferredencoding(False)) if isinstance(input, str) else input
        request = {
            "argv": list(args),
            "entry": entry,
            "env": dict(env),
            "cwd": str(cwd if cwd is not None else os.getcwd()),
            "stdin": None if stdin is None else base64.b64encode(stdin).decode(),
            "stdout": str(out),
            "stderr": str(err),
        }
        deadline = time.monotonic() + timeout
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
                try:
                    conn.connect(self.socket_path)
                    conn.sendall(json.dumps(request).encode() + b"\n")
                    replies = Replies(conn)
                    pid = int(replies.next(deadline)["pid"])
                except (OSError, ValueError, KeyError) as error:
                    raise ZygoteDied(f"the CLI zygote is gone ({error}): {self.log_tail()}") from error
                self.live.add(pid)
                try:
                    returncode = int(replies.next(deadline)["returncode"])
                except TimeoutError:
                    kill_quietly(pid)
                    with contextlib.suppress(OSError, ValueError, KeyError):
                        replies.next(time.monotonic() + 10)  # reaped: the files are complete
                    raise subprocess.TimeoutExpired(command, timeout, read(out), read(err)) from None
                except (OSError, ValueError, KeyError) as error:
                    kill_quietly(pid)
                    raise ZygoteDied(f"the CLI zygote is gone ({error}): {self.log_tail()}") from error
                except BaseException:
                    kill_quietly(pid)  # an interrupted caller takes its child along
                    raise
                finally:
                    self.live.discard(pid)
            stdout, stderr = read(out), read(err)
        finally:
            for path in (out, err):
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
        return subprocess.CompletedProcess(command, returncode, stdout, stderr)

    def log_tail(self) -> str:
        return self.log_path.read_text(errors="replace")[-2000:]


ACTIVE: list[ZygoteClient] = []  # the session's zygote while its fixture (`cli_zygote` in conftest) is up


def run_clearance(
    args: Sequence[str],
    env: Mapping[str, str],
    *,
    cwd: str | os.PathLike[str] | None = None,
    input: str | None = None,
    timeout: float = 60,
) -> subprocess.CompletedProcess[str]:
    """`python -m icap_server ARGS…` captured as text: a fork of the session's zygote, or a real process without one."""
    if not ACTIVE:
        command = [sys.executable, "-m", "icap_server", *args]
        return subprocess.run(
            command, env=dict(env), cwd=cwd, input=input, capture_output=True, text=True, timeout=timeout
        )
    return ACTIVE[-1].run(args, env=env, cwd=cwd, input=input, timeout=timeout)


class Replies:
    """The zygote's JSON lines on one connection, each awaited until a deadline."""

    def __init__(self, conn: socket.socket) -> None:
        self.conn = conn
        self.pending = b""

    def next(self, deadline: float) -> dict[str, Any]:
        while b"\n" not in self.pending:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError
            self.conn.settimeout(remaining)
            chunk = self.conn.recv(4096)
            if not chunk:
                raise OSError("the zygote closed the connection")
            self.pending += chunk
        line, self.pending = self.pending.split(b"\n", 1)
        reply = json.loads(line)
        assert isinstance(reply, dict)
        return reply


def read(path: Path) -> bytes:
    return path.read_bytes() if path.exists() else b""


def kill_quietly(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, signal.SIGKILL)


if __name__ == "__main__":
    zygote_main(sys.argv[1])
