"""Measuring: building and driving the C load generator, and server CPU time from /proc."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

BENCH = Path(__file__).resolve().parent
LOADGEN_SOURCE = BENCH / "loadgen.c"
BUILD = BENCH / "build"
SERVER_CORE = "0"
LOADGEN_CORE = "1"
PRIORITY = "-10"  # as root: ahead of whatever else runs on a shared machine, the same for every server
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


class MeasureError(RuntimeError):
    """The load generator failed or printed no result."""


@dataclass(frozen=True)
class LoadResult:
    requests: int
    errors: int
    unfinished: int
    seconds: float
    rps: float
    p50_us: float
    p99_us: float
    max_us: float
    s204: int
    s200: int
    other: int
    reconnects: int
    loadgen_busy: float  # the load generator's own CPU share of its core (over its whole run)
    first_error: str
    cpu_seconds: float  # server CPU (utime+stime of its process trees, helpers included) in the window
    helper_cpu_seconds: float  # the part of it spent in helpers (Clearance's Redis)
    core_busy: list[float]  # per core, the share of the window any process ran (user, system, steal)
    core_irq: list[float]  # per core, the share spent in interrupts and softirqs (loopback TCP shows up here)

    @property
    def cpu_us_per_request(self) -> float:
        return self.cpu_seconds * 1e6 / self.requests if self.requests else 0.0


def pinned(core: str, command: list[str]) -> list[str]:
    """The command pinned to one core (children included) and, as root, raised in priority."""
    boost = ["nice", "-n", PRIORITY] if os.geteuid() == 0 else []
    return ["taskset", "-c", core, *boost, *command]


def build_loadgen() -> Path:
    """Compile bench/loadgen.c with gcc -O2 into bench/build/ (again only when the source changed)."""
    binary = BUILD / "loadgen"
    if binary.exists() and binary.stat().st_mtime >= LOADGEN_SOURCE.stat().st_mtime:
        return binary
    BUILD.mkdir(exist_ok=True)
    result = subprocess.run(
        ["gcc", "-O2", "-Wall", "-Wextra", "-o", str(binary), str(LOADGEN_SOURCE), "-lm"],
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        raise MeasureError(f"gcc failed:\n{result.stderr}")
    return binary


def run_loadgen(
    binary: Path,
    args: list[str],
    cpu_of: Callable[[], tuple[float, float]],
    timeout: float,
    pin: bool = True,
) -> LoadResult:
    """Run the load generator (pinned to its core); sample the server's CPU at its window markers.

    `cpu_of` returns (all CPU seconds of the server under test, the part of it in helpers).
    """
    command = [str(binary), *args]
    if pin:
        command = pinned(LOADGEN_CORE, command)
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    cpu_start = cpu_end = (0.0, 0.0)
    cores_start: list[CoreTimes] = []
    cores_end: list[CoreTimes] = []
    summary = ""
    try:
        assert process.stdout is not None
        for line in process.stdout:
            line = line.strip()
            if line == "MEASURE_START":
                cpu_start, cores_start = cpu_of(), core_times()
            elif line == "MEASURE_END":
                cpu_end, cores_end = cpu_of(), core_times()
            elif line.startswith("{"):
                summary = line
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        raise MeasureError("the load generator did not stop in time") from None
    if process.returncode != 0 or not summary:
        stderr = process.stderr.read().strip() if process.stderr else ""
        raise MeasureError(f"loadgen exited with {process.returncode}: {stderr}")
    data = json.loads(summary)
    busy = [share(begin, end, 0) for begin, end in zip(cores_start, cores_end, strict=True)]
    irq = [share(begin, end, 1) for begin, end in zip(cores_start, cores_end, strict=True)]
    return LoadResult(
        cpu_seconds=max(0.0, cpu_end[0] - cpu_start[0]),
        helper_cpu_seconds=max(0.0, cpu_end[1] - cpu_start[1]),
        core_busy=busy,
        core_irq=irq,
        **data,
    )


# ---- CPU from /proc -----------------------------------------------------------------------------------


def _stat_fields(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2 :].split()  # fields from 3 (state) on; comm may hold spaces


def process_tree(roots: Iterable[int]) -> list[int]:
    """The roots and all their descendants, from the ppid of every process in /proc."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = _stat_fields(int(entry))
            if fields:
                children.setdefault(int(fields[1]), []).append(int(entry))
    found: list[int] = []
    pending = list(roots)
    while pending:
        pid = pending.pop()
        found.append(pid)
        pending.extend(children.get(pid, []))
    return found


def tree_cpu_seconds(roots: Iterable[int]) -> float:
    """utime + stime (all threads) summed over the process trees under the roots."""
    ticks = 0
    for pid in process_tree(roots):
        fields = _stat_fields(pid)
        if fields:
            ticks += int(fields[11]) + int(fields[12])  # utime, stime (stat fields 14 and 15)
    return ticks / CLOCK_TICKS


CoreTimes = tuple[float, float, float]  # busy (user, nice, system, steal), irq + softirq, total: in jiffies


def core_times() -> list[CoreTimes]:
    """Per core, from /proc/stat."""
    cores = []
    for line in Path("/proc/stat").read_text().splitlines():
        name, *values = line.split()
        if name.startswith("cpu") and name != "cpu":
            user, nice, system, idle, iowait, irq, softirq, steal = (float(value) for value in values[:8])
            cores.append(
                (
                    user + nice + system + steal,
                    irq + softirq,
                    user + nice + system + idle + iowait + irq + softirq + steal,
                )
            )
    return cores


def share(begin: CoreTimes, end: CoreTimes, field: int) -> float:
    return (end[field] - begin[field]) / max(end[2] - begin[2], 1e-9)


def background_load(seconds: float = 1.0) -> float:
    """How many cores' worth of work the machine does on its own, before the benchmark starts."""
    before = core_times()
    time.sleep(seconds)
    after = core_times()
    return sum(share(begin, end, 0) + share(begin, end, 1) for begin, end in zip(before, after, strict=True))


def machine_info() -> list[str]:
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return [
        f"CPU: {model}, {os.cpu_count()} cores",
        f"Kernel: {platform.system()} {platform.release()}",
        f"Python: {platform.python_version()} ({sys.executable})",
    ]
