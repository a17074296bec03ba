"""Processes the tests start: waiting on conditions, stopping whole process groups, finding leftovers.

Every server a test starts runs in a session (and process group) of its own, so stopping it means the
group: the supervisor, its workers, Squid's helpers. A process of the group that outlives SIGTERM is a
bug worth failing for (two orphan workers once outlived a green run), so `stop_group` reports survivors
instead of silently SIGKILLing them. `/proc` is read directly: it is the ground truth, and needs no
cooperation from the processes under test.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

STOP_TIMEOUT = 20.0  # a worker drains for up to 10 s; the supervisor re-sends SIGTERM after 3 s


@dataclass(frozen=True)
class ProcInfo:
    pid: int
    ppid: int
    pgid: int
    sid: int
    state: str
    command: str

    def __str__(self) -> str:
        return f"pid {self.pid} (pgid {self.pgid}, ppid {self.ppid}, state {self.state}): {self.command}"


def _read_proc(pid: int) -> ProcInfo | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:  # gone already
        return None
    name_end = stat.rindex(")")  # the command name may hold spaces and parentheses
    fields = stat[name_end + 2 :].split()
    command = raw.replace(b"\0", b" ").decode(errors="replace").strip() or stat[stat.index("(") : name_end + 1]
    return ProcInfo(pid, int(fields[1]), int(fields[2]), int(fields[3]), fields[0], command[:200])


def snapshot() -> dict[int, ProcInfo]:
    """Every live (not zombie) process on the machine."""
    procs = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            info = _read_proc(int(entry))
            if info is not None and info.state not in ("Z", "X"):
                procs[info.pid] = info
    return procs


def descendants(root: int, procs: dict[int, ProcInfo] | None = None) -> set[int]:
    """The pids of root's live children, grandchildren and so on."""
    procs = snapshot() if procs is None else procs
    children: dict[int, list[int]] = {}
    for info in procs.values():
        children.setdefault(info.ppid, []).append(info.pid)
    found: set[int] = set()
    todo = [root]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def children_of(pid: int) -> set[int]:
    """The live direct children of pid (a supervisor's workers)."""
    return {info.pid for info in snapshot().values() if info.ppid == pid}


def group_members(pgid: int) -> list[ProcInfo]:
    return [info for info in snapshot().values() if info.pgid == pgid]


def _signal_group(pgid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)


def _group_gone(proc: subprocess.Popen[bytes], pgid: int) -> bool:
    return proc.poll() is not None and not group_members(pgid)


def stop_group(proc: subprocess.Popen[bytes], timeout: float = STOP_TIMEOUT) -> list[str]:
    """SIGTERM the group proc leads, wait for it to empty, SIGKILL what is left. Returns the survivors.

    An empty list means a clean stop. Anything else names the processes that outlived SIGTERM (they have
    been killed since); callers fail the test with it.
    """
    pgid = proc.pid
    if proc.poll() is None or group_members(pgid):
        _signal_group(pgid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while not _group_gone(proc, pgid) and time.monotonic() < deadline:
        time.sleep(0.02)
    survivors = [str(info) for info in group_members(pgid)]
    if proc.poll() is None and not survivors:
        survivors = [f"pid {proc.pid} (group leader, still running)"]
    if survivors:
        _signal_group(pgid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=5)
        _wait_gone(pgid)
    return survivors


def _wait_gone(pgid: int, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while group_members(pgid) and time.monotonic() < deadline:
        time.sleep(0.02)


def kill_all(pids: Iterable[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


class Leftovers:
    """Tracks what the suite starts, so a check after each test can name anything left running.

    Processes born while a fixture of a broader scope (module, session) was being set up belong to that
    fixture until it is torn down; so do their descendants (Squid's helpers) and the other members of their
    sessions. Anything else still running after a test's teardown was left behind by that test.
    """

    def __init__(self, root: int) -> None:
        self.root = root
        self.own_sid = os.getsid(root)
        self.owned: dict[int, str] = {}  # pid -> the fixture that started it
        self.sessions: set[int] = set()  # sessions our descendants created: orphans stay in them
        self.groups: set[int] = set()  # process groups the suite's Popen calls created (see `record_spawns`)
        # Fork servers (the CLI zygote): owned by their fixture, but what they fork belongs to the test that asked.
        self.forkers: set[int] = set()

    def ours(self) -> dict[int, ProcInfo]:
        """Our descendants, plus any process still in a session one of them created."""
        procs = snapshot()
        mine = descendants(self.root, procs)
        self.sessions |= {procs[pid].sid for pid in mine if procs[pid].sid not in (self.own_sid, 0)}
        return {
            pid: info
            for pid, info in procs.items()
            if pid in mine or info.sid in self.sessions or info.pgid in self.groups
        }

    def claim(self, before: set[int], owner: str) -> list[int]:
        """Mark the processes born since `before` as owned by a broader-scope fixture."""
        new = [pid for pid in self.ours() if pid not in before]
        for pid in new:
            self.owned[pid] = owner
        return new

    def release(self, pids: Iterable[int]) -> None:
        for pid in pids:
            self.owned.pop(pid, None)

    def unexpected(self) -> list[ProcInfo]:
        procs = self.ours()
        owned_sids = {procs[pid].sid for pid in self.owned if pid in procs} - {self.own_sid}
        owned_groups = {procs[pid].pgid for pid in self.owned if pid in procs} & self.groups
        return [info for info in procs.values() if not self._owned(info, procs, owned_sids, owned_groups)]

    def _owned(self, info: ProcInfo, procs: dict[int, ProcInfo], sids: set[int], groups: set[int]) -> bool:
        if info.sid in sids or info.pgid in groups:
            return True
        pid = info.pid
        while pid in procs and pid != self.root:
            if pid in self.owned:
                return pid == info.pid or pid not in self.forkers
            pid = procs[pid].ppid
        return False

    def check(self, grace: float = 3.0) -> list[str]:
        """Names of unexpected processes still running after a grace (they are killed); [] if none."""
        deadline = time.monotonic() + grace
        while (left := self.unexpected()) and time.monotonic() < deadline:
            time.sleep(0.05)
        if not left:
            return []
        names = [str(info) for info in left]
        kill_all(info.pid for info in left)
        return names


def record_spawns(leftovers: Leftovers) -> None:
    """Remember the group of every process the suite starts in a group of its own, even one that exits at once.

    A process that leaves an orphan behind and exits before the next check would otherwise take the only
    trace of it (its parentage) along: the orphan stays in the group, and the group is what is remembered.
    """
    original = subprocess.Popen.__init__

    def recording_init(self: subprocess.Popen[bytes], *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        group = kwargs.get("process_group")
        if kwargs.get("start_new_session") or (isinstance(group, int) and group >= 0):
            leftovers.groups.add(self.pid)

    subprocess.Popen.__init__ = recording_init  # type: ignore[method-assign,assignment]


def survivors_after(proc: subprocess.Popen[bytes], timeout: float) -> list[str]:
    """Wait (sending nothing) for proc to exit and its group to empty; what is still running at the deadline."""
    deadline = time.monotonic() + timeout
    while not _group_gone(proc, proc.pid) and time.monotonic() < deadline:
        time.sleep(0.02)
    left = [str(info) for info in group_members(proc.pid)]
    return left if left or proc.poll() is not None else [f"pid {proc.pid} (group leader, still running)"]


def rss_kib(pid: int) -> int:
    """A process's resident memory in KiB, from /proc (0 once it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0
