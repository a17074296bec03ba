"""Throw mutated ICAP messages at a live `clearance serve` and report what breaks.

    python bench/fuzz.py [--messages 1000000] [--max-seconds 1500] [--clients 48] [--processes 2] [--seed S]

Starts its own redis-server (a free port, never 6379) and `clearance serve --workers 1`, then runs client
processes, each with many asyncio connections kept open across messages. Every message is a valid one
(OPTIONS, REQMOD GET / CONNECT / POST with previews, `ieof`, chunk extensions and trailers, RESPMOD) put
through one to three mutations: bit flips, bytes set or inserted, truncation, duplicated or dropped header
lines, a bad `Encapsulated`, huge sizes, bare LF, pipelining, random chunking. The sans-I/O core predicts
whether a message is complete and clean: if so it is sent on the open connection and must be answered there;
otherwise the client sends it, half-closes, and the server must answer (or not) and close. Reported:
crashes (the server or a worker exited), hangs (no answer or close within --hang-timeout), invalid answers
(the strict grammar reader in tests/support/icap_grammar.py refuses them, or a status outside the documented
set), clean messages closed without an answer, internal errors (500), and the server's RSS at start and end.
Exit status 1 when anything was found. Stops by itself, and stops everything it started.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import random
import signal
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from live import LiveServer, Truncated, read_answer
from measure import machine_info
from mutate import mutated_message

from icap_server.protocol import NEED_DATA, PAUSED, ConnectionClosed, ICAPConnection, ProtocolError, Response
from tests.support.icap_grammar import GrammarError, parse_one

# docs/protocol.md: the statuses Clearance answers with (100 and 200/204 for answers; errors as documented).
DOCUMENTED = frozenset({100, 200, 204, 400, 404, 405, 408, 413, 500, 501, 503, 505})
SAMPLES = 8


# ---- the oracle: the sans-I/O core says whether a message is complete and clean ----------------------


def is_clean(message: bytes) -> bool:
    """One complete message that the core accepts, with nothing after it: it must be answered in place."""
    if not message:
        return False  # b"" would be the end of the stream
    connection = ICAPConnection()
    connection.receive_data(message)
    try:
        while (event := connection.next_event()) is not PAUSED:
            if event is NEED_DATA or isinstance(event, ConnectionClosed):
                return False
        if connection.request is None:
            return False
        status = 204 if connection.can_send_204 else 200
        connection.send(Response(status, (("ISTag", '"x"'),)))
        return connection.keep_alive and not connection.their_message_in_progress
    except ProtocolError:
        return False


# ---- one client process ---------------------------------------------------------------------------------


@dataclass
class Stats:
    sent: int = 0
    answers: int = 0
    clean: int = 0
    connections: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    problems: dict[str, int] = field(default_factory=dict)
    samples: list[str] = field(default_factory=list)

    def problem(self, kind: str, message: bytes, answer: str) -> None:
        self.problems[kind] = self.problems.get(kind, 0) + 1
        if sum(1 for line in self.samples if line.startswith(kind)) < SAMPLES:
            self.samples.append(f"{kind}: sent {message[:300]!r}: {answer[:300]}")

    def merge(self, other: Stats) -> None:
        self.sent += other.sent
        self.answers += other.answers
        self.clean += other.clean
        self.connections += other.connections
        self.statuses.update(other.statuses)
        for kind, count in other.problems.items():
            self.problems[kind] = self.problems.get(kind, 0) + count
        self.samples.extend(other.samples)


def judge(stats: Stats, message: bytes, answer: bytes) -> bool:
    """Check one answer; True when it asks to close the connection."""
    stats.answers += 1
    try:
        parsed = parse_one(answer)
    except GrammarError as error:
        stats.problem("invalid", message, f"{error}; answer {answer[:200]!r}")
        return True
    stats.statuses[parsed.status] += 1
    if parsed.status not in DOCUMENTED:
        stats.problem("undocumented-status", message, answer[:200].decode("latin-1"))
    if parsed.status == 500:
        stats.problem("internal-error", message, answer[:200].decode("latin-1"))
    return "close" in parsed.tokens("Connection")


async def client(port: int, stop_at: float, quota: list[int], rng: random.Random, stats: Stats, hang: float) -> None:
    link = Link(port)
    while quota[0] > 0 and time.monotonic() < stop_at:
        quota[0] -= 1
        message = mutated_message(rng)
        clean = is_clean(message)
        stats.sent += 1
        stats.clean += clean
        try:
            keep = await asyncio.wait_for(exchange(link, message, clean, stats), hang)
        except TimeoutError:
            stats.problem("hang", message, f"no answer or close within {hang:g} s")
            keep = False
        except (OSError, Truncated) as error:
            if clean:
                stats.problem("closed-without-answer", message, repr(error))
            keep = False
        if not keep:
            link.close()
    link.close()


@dataclass
class Link:
    """One client connection, opened when needed and kept while the server keeps it."""

    port: int
    reader: asyncio.StreamReader | None = None
    writer: asyncio.StreamWriter | None = None
    buffer: bytearray = field(default_factory=bytearray)

    async def open(self, stats: Stats) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self.reader is None or self.writer is None:
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port, limit=1 << 22)
            self.buffer.clear()
            stats.connections += 1
        return self.reader, self.writer

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


async def exchange(link: Link, message: bytes, clean: bool, stats: Stats) -> bool:
    """Send one message; True when the connection stays open for the next one."""
    reader, writer = await link.open(stats)
    writer.write(message)
    if not clean:
        writer.write_eof()
        await drain_to_close(reader, link.buffer, stats, message)
        return False
    answer = await read_answer(reader, link.buffer)
    if answer is None:
        stats.problem("closed-without-answer", message, "EOF")
        return False
    return not judge(stats, message, answer)


async def drain_to_close(reader: asyncio.StreamReader, buffer: bytearray, stats: Stats, message: bytes) -> None:
    """Every answer the server gives before it closes must be well-formed; a cut-off last one is not counted."""
    while True:
        try:
            answer = await read_answer(reader, buffer)
        except Truncated:
            return  # it closed in the middle of an answer to a message that was itself cut off
        if answer is None:
            return
        judge(stats, message, answer)


def client_process(port: int, seconds: float, count: int, clients: int, seed: int, hang: float) -> Stats:
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    stats = Stats()
    stop_at = time.monotonic() + seconds
    quota = [count]

    async def main() -> None:
        rngs = [random.Random(seed * 100_003 + index) for index in range(clients)]
        await asyncio.gather(*(client(port, stop_at, quota, rng, stats, hang) for rng in rngs))

    asyncio.run(main())
    return stats


# ---- the run ------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=1_000_000, help="messages to send in all (1000000)")
    parser.add_argument("--max-seconds", type=float, default=1500.0, help="stop sending after this long (1500)")
    parser.add_argument("--clients", type=int, default=48, help="connections per client process (48)")
    parser.add_argument("--processes", type=int, default=2, help="client processes (2)")
    parser.add_argument("--hang-timeout", type=float, default=15.0, help="seconds before no answer is a hang (15)")
    parser.add_argument("--seed", type=int, default=None, help="random seed (default: from the clock)")
    args = parser.parse_args(argv)
    if args.messages < 1 or args.clients < 1 or not 1 <= args.processes <= 16 or args.max_seconds <= 0:
        parser.error("--messages, --clients >= 1; 1 <= --processes <= 16; --max-seconds > 0")
    return args


def run(args: argparse.Namespace, server: LiveServer) -> tuple[Stats, list[str]]:
    """Send the messages from client processes, watching the server; returns the stats and what it saw."""
    seed = args.seed if args.seed is not None else int(time.time())
    watch = [f"seed {seed}"]
    workers, rss_start = set(server.pids()), server.rss_mib()
    watch.append(f"RSS at start {rss_start:.1f} MiB ({len(workers)} processes)")
    per_process = -(-args.messages // args.processes)
    started = time.monotonic()
    stats, rss_max = Stats(), rss_start
    with multiprocessing.get_context("spawn").Pool(args.processes) as pool:
        jobs = [
            (server.port, args.max_seconds, per_process, args.clients, seed + index, args.hang_timeout)
            for index in range(args.processes)
        ]
        pending = pool.starmap_async(client_process, jobs, chunksize=1)
        while not pending.ready():
            pending.wait(10)
            rss = server.rss_mib()
            rss_max = max(rss_max, rss)
            lost = workers - set(server.pids())
            if lost or not server.alive:
                watch.append(f"CRASH: processes {sorted(lost)} exited (serve alive: {server.alive})")
                workers = set(server.pids())
            print(f"{time.monotonic() - started:6.0f} s  RSS {rss:.1f} MiB", file=sys.stderr, flush=True)
        for part in pending.get():
            stats.merge(part)
    elapsed = time.monotonic() - started
    watch.append(f"RSS at end {server.rss_mib():.1f} MiB, max {rss_max:.1f} MiB")
    watch.append(f"{stats.sent:,} messages in {elapsed:.0f} s ({stats.sent / elapsed:,.0f}/s)")
    return stats, watch


def report(stats: Stats, watch: list[str], server: LiveServer) -> bool:
    """Print the figures; True when nothing was found."""
    crashed = [line for line in watch if line.startswith("CRASH")] + ([] if server.alive else ["CRASH: serve exited"])
    tracebacks = server.tracebacks()
    print("\n".join(["## Fuzz run", *machine_info(), *watch]))
    print(f"clean (answered in place): {stats.clean:,}; connections opened: {stats.connections:,}")
    print(f"answers: {stats.answers:,}; statuses: {dict(sorted(stats.statuses.items()))}")
    print(f"crashes: {len(crashed)}; tracebacks in the server log: {tracebacks}")
    for kind in ("hang", "invalid", "undocumented-status", "closed-without-answer", "internal-error"):
        print(f"{kind}: {stats.problems.get(kind, 0)}")
    for line in [*crashed, *stats.samples]:
        print("  " + line)
    return not crashed and not tracebacks and not stats.problems


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # still stop the server and its Redis
    with tempfile.TemporaryDirectory(prefix="clearance-fuzz-") as workdir:
        server = LiveServer(Path(workdir), settings="server: {request_timeout: 5, max_connections: 4000}\n")
        try:
            server.start()
            stats, watch = run(args, server)
            ok = report(stats, watch, server)
            if not server.alive:
                print(server.log_tail(20))
        finally:
            server.stop()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
