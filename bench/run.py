"""Benchmark Clearance beside c-icap + srv_url_check, a pyicap filter and a bare asyncio floor.

    python bench/run.py [--duration S] [--connections K] [--only NAME]... [--markdown]

One workload (bench/workload.py), one load generator (bench/loadgen.c), each server run alone: the server
(with its children and helpers) pinned to core 0, the load generator to core 1. For each server: a check run
that sends every URL once and compares each answer with the expected decision, a closed-loop run for peak
throughput, latency and CPU per request, and an open-loop run at half of that peak for the tail latency a
lightly loaded server shows. Prints one table.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from measure import (
    LOADGEN_CORE,
    PRIORITY,
    SERVER_CORE,
    LoadResult,
    MeasureError,
    background_load,
    build_loadgen,
    machine_info,
    pinned,
    run_loadgen,
    tree_cpu_seconds,
)
from peers import (
    Context,
    Peer,
    PeerError,
    all_peers,
    free_port,
    project_env,
    stop_process,
    wait_for_port,
)
from workload import Workload, generate


@dataclass
class Options:
    duration: float
    warmup: float
    open_duration: float
    connections: int
    only: list[str]
    markdown: bool
    keep: bool


@dataclass
class Row:
    peer: Peer
    closed: LoadResult | None = None
    open: LoadResult | None = None
    decisions: str = ""
    problems: list[str] = field(default_factory=list)


def parse_args(argv: list[str] | None) -> Options:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=8.0, help="closed-loop measured seconds (default 8)")
    parser.add_argument("--warmup", type=float, default=2.0, help="warm-up seconds before each window (default 2)")
    parser.add_argument("--open-duration", type=float, default=5.0, help="open-loop measured seconds (default 5)")
    parser.add_argument("--connections", type=int, default=32, help="persistent connections (default 32)")
    parser.add_argument(
        "--only",
        action="append",
        default=[],
        metavar="NAME",
        help="run only this server (clearance, clearance-pure, c-icap, pyicap, floor); repeatable",
    )
    parser.add_argument("--markdown", action="store_true", help="print the table as Markdown (for bench/RESULTS.md)")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (configs, logs, workload)")
    args = parser.parse_args(argv)
    if not 1 <= args.connections <= 1024:
        parser.error("--connections must be 1..1024")
    if not 0 < args.duration <= 300 or not 0 < args.open_duration <= 300 or not 0 <= args.warmup <= 60:
        parser.error("durations: 0 < --duration, --open-duration <= 300, 0 <= --warmup <= 60")
    keys = {peer.key for peer in all_peers()}
    for name in args.only:
        if name.lower() not in keys:
            parser.error(f"--only {name}: choose from {', '.join(sorted(keys))}")
    return Options(
        args.duration,
        args.warmup,
        args.open_duration,
        args.connections,
        [name.lower() for name in args.only],
        args.markdown,
        args.keep,
    )


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# ---- one server ---------------------------------------------------------------------------------------


def bench_peer(peer: Peer, ctx: Context, work: Workload, urls_file: Path, loadgen: Path, opts: Options) -> Row:
    row = Row(peer)
    port = free_port()
    process: subprocess.Popen[bytes] | None = None
    try:
        progress(f"{peer.name}: starting")
        command = peer.command(ctx, port)
        with open(ctx.workdir / f"{peer.key}.out", "wb") as log:
            process = subprocess.Popen(
                pinned(SERVER_CORE, command),
                cwd=ctx.workdir,
                env={**project_env(), **peer.extra_env},
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        wait_for_port(port, process, peer.name)
        peer.sanity_check(port)
        server_pid, helpers = process.pid, peer.helper_pids()

        def cpu() -> tuple[float, float]:
            return tree_cpu_seconds([server_pid, *helpers]), tree_cpu_seconds(helpers)

        base = [
            "--port",
            str(port),
            "--service",
            peer.service,
            "--urls",
            str(urls_file),
            "--connections",
            str(opts.connections),
        ]
        pin = (os.cpu_count() or 1) >= 2

        progress(f"{peer.name}: check run ({len(work.urls):,} URLs once)")
        check_file = ctx.workdir / f"{peer.key}.check"
        check = run_loadgen(loadgen, [*base, "--check", str(check_file)], cpu, timeout=120, pin=pin)
        row.decisions = compare_decisions(peer, work, check_file)
        if check.errors:
            row.problems.append(f"check run: {check.errors} errors ({check.first_error})")

        progress(f"{peer.name}: closed loop, {opts.warmup:g} s warm-up + {opts.duration:g} s")
        timeout = opts.warmup + max(opts.duration, opts.open_duration) + 60
        row.closed = run_loadgen(
            loadgen, [*base, "--duration", str(opts.duration), "--warmup", str(opts.warmup)], cpu, timeout, pin
        )
        note_errors(row, "closed loop", row.closed)

        rate = row.closed.rps / 2
        if rate < 1:
            raise MeasureError("no throughput in the closed loop, so no open-loop run")
        progress(f"{peer.name}: open loop at {rate:,.0f} req/s for {opts.open_duration:g} s")
        row.open = run_loadgen(
            loadgen,
            [*base, "--rate", f"{rate:.1f}", "--duration", str(opts.open_duration), "--warmup", "1"],
            cpu,
            timeout,
            pin,
        )
        note_errors(row, "open loop", row.open)
    except (PeerError, MeasureError, OSError, subprocess.SubprocessError) as error:
        row.problems.append(str(error))
    finally:
        if process is not None:
            stop_process(process)
        peer.teardown()
    return row


def compare_decisions(peer: Peer, work: Workload, check_file: Path) -> str:
    statuses = [int(line) for line in check_file.read_text().split()]
    expected = [204 if not peer.decides or not blocked else 200 for blocked in work.blocked]
    wrong = sum(1 for got, want in zip(statuses, expected, strict=True) if got != want)
    split = f"{statuses.count(204)}/{statuses.count(200)}"
    if wrong:
        want = f"{expected.count(204)}/{expected.count(200)}"
        return f"MISMATCH: {wrong} of {len(statuses)} wrong (204/200 {split}, expected {want})"
    return f"ok ({split})" if peer.decides else f"ok (all {len(statuses)} 204, by design)"


def note_errors(row: Row, phase: str, result: LoadResult) -> None:
    if result.errors:
        row.problems.append(f"{phase}: {result.errors} errors ({result.first_error})")
    if result.unfinished:
        row.problems.append(f"{phase}: {result.unfinished} requests unanswered (server fell behind)")


# ---- the table ----------------------------------------------------------------------------------------

HEADERS = ["server", "req/s", "server CPU µs/req", "p50 µs", "p99 µs", "p99 µs @ ½ peak", "vs c-icap", "decisions"]


def loadgen_bound(result: LoadResult) -> bool:
    """The load generator, not the server, ran out of CPU: the server had idle time left."""
    return result.loadgen_busy > 0.9 and result.cpu_seconds / result.seconds < 0.9


def table_rows(rows: list[Row]) -> list[list[str]]:
    reference = next((row.closed.rps for row in rows if row.peer.key == "c-icap" and row.closed), None)
    lines = []
    for row in rows:
        closed, opened = row.closed, row.open
        cells = [row.peer.name]
        if closed:
            rps = ("≥" if loadgen_bound(closed) else "") + f"{closed.rps:,.0f}"
            cells += [rps, f"{closed.cpu_us_per_request:,.0f}", f"{closed.p50_us:,.0f}", f"{closed.p99_us:,.0f}"]
        else:
            cells += ["—"] * 4
        cells.append(f"{opened.p99_us:,.0f}" if opened else "—")
        cells.append(f"{closed.rps / reference:.2f}×" if closed and reference else "—")
        cells.append("; ".join(filter(None, [row.decisions, *row.problems])) or "—")
        lines.append(cells)
    return lines


def render(rows: list[Row], markdown: bool) -> str:
    cells = table_rows(rows)
    if markdown:
        lines = ["| " + " | ".join(HEADERS) + " |", "|" + "|".join(["---"] + ["---:"] * 6 + ["---"]) + "|"]
        lines += ["| " + " | ".join(row) + " |" for row in cells]
        return "\n".join(lines)
    widths = [max(len(row[i]) for row in [HEADERS, *cells]) for i in range(len(HEADERS))]

    def line(row: list[str]) -> str:
        parts = [row[0].ljust(widths[0])]
        parts += [cell.rjust(width) for cell, width in zip(row[1:-1], widths[1:-1], strict=True)]
        return "  ".join([*parts, row[-1]])

    return "\n".join([line(HEADERS), "  ".join("-" * width for width in widths), *map(line, cells)])


def report(rows: list[Row], opts: Options, work: Workload, background: float) -> None:
    prefix = "- " if opts.markdown else ""
    print("\n".join(prefix + line for line in machine_info()))
    quiet = "quiet" if background < 0.1 else "BUSY: expect noisy numbers"
    print(f"{prefix}Before the run the machine used {background:.0%} of a core on its own ({quiet})")
    print(
        f"{prefix}Workload: {len(work.hosts):,} listed webmail hosts, {len(work.urls):,} URLs "
        f"({len(work.urls) - work.blocked_count:,} allowed / {work.blocked_count:,} blocked), "
        f"REQMOD null-body GETs, {opts.connections} persistent connections"
    )
    print(
        f"{prefix}Closed loop: {opts.warmup:g} s warm-up + {opts.duration:g} s; open loop: half of each server's "
        f"peak for {opts.open_duration:g} s (latency from the scheduled send time). Server on core {SERVER_CORE}, "
        f"load generator on core {LOADGEN_CORE}" + (f", both at nice {PRIORITY}." if os.geteuid() == 0 else ".")
    )
    print()
    print(render(rows, opts.markdown))
    print()
    for row in rows:
        print(f"{prefix}{row.peer.name}: {row_notes(row)}")


def row_notes(row: Row) -> str:
    """The peer's own notes, and how busy each core was in the closed loop (others' work shows up here)."""
    notes = [row.peer.note] if row.peer.note else []
    closed = row.closed
    if closed and closed.requests:
        if row.peer.helper_name:
            share = closed.helper_cpu_seconds * 1e6 / closed.requests
            notes.append(f"{share:,.0f} µs/req of the CPU in {row.peer.helper_name}")
        cores = ", ".join(
            f"core {i} {busy:.0%} + {irq:.0%} irq"
            for i, (busy, irq) in enumerate(zip(closed.core_busy, closed.core_irq, strict=True))
        )
        notes.append(
            f"closed loop: server {closed.cpu_seconds / closed.seconds:.0%} of a core, load generator "
            f"{closed.loadgen_busy:.0%} of its core; busy: {cores}"
        )
        others = sum(closed.core_busy) - closed.cpu_seconds / closed.seconds - closed.loadgen_busy
        if others > 0.15:
            notes.append(f"NOISY: {others:.0%} of a core went to other processes")
        if loadgen_bound(closed):
            notes.append("≥: the load generator was the limit, so req/s is a lower bound")
    return "; ".join(notes)


def main(argv: list[str] | None = None) -> int:
    opts = parse_args(argv)
    for tool in ("gcc", "taskset"):
        if not shutil.which(tool):
            progress(f"bench: {tool} is required")
            return 2
    loadgen = build_loadgen()
    background = background_load()
    work = generate()
    workdir = Path(tempfile.mkdtemp(prefix="clearance-bench-"))
    try:
        hosts_file, urls_file = work.write(workdir)
        ctx = Context(workdir=workdir, hosts_file=hosts_file, connections=opts.connections)
        peers = [peer for peer in all_peers() if not opts.only or peer.key in opts.only]
        rows = [bench_peer(peer, ctx, work, urls_file, loadgen, opts) for peer in peers]
    finally:
        if opts.keep:
            progress(f"work directory kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    report(rows, opts, work, background)
    return 1 if any(row.problems or row.decisions.startswith("MISMATCH") for row in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
