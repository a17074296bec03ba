"""Soak: many persistent connections of ordinary Squid traffic for minutes; zero errors and flat memory.

    python bench/soak.py [--minutes 10] [--connections 500] [--workers 1]

Starts its own redis-server (a free port, never 6379) and `clearance serve`, then keeps --connections
connections busy, each sending one request after another: REQMOD GETs that pass (204) and that are blocked
(200 carrying an HTTP 403 page), CONNECTs, and small POSTs with a preview holding the whole body (`ieof`).
Every answer goes through the strict grammar reader (tests/support/icap_grammar.py) and is checked against
the decision the request should get. Reports errors (must be zero), requests per second, and the server's
RSS over time (first, max, last sample, one every --sample seconds). Exit status 1 on any error.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import signal
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from live import ALLOWED_HOSTS, BLOCKED_HOSTS, LiveServer, read_answer
from measure import machine_info

from tests.support.icap_client import reqmod
from tests.support.icap_grammar import GrammarError, parse_one


@dataclass
class Tally:
    requests: int = 0
    blocked: int = 0
    errors: int = 0
    samples: list[str] = field(default_factory=list)
    rss: list[tuple[float, float]] = field(default_factory=list)  # (seconds since start, MiB)

    def error(self, text: str) -> None:
        self.errors += 1
        if len(self.samples) < 10:
            self.samples.append(text[:300])


def traffic(rng: random.Random) -> tuple[bytes, bool]:
    """One request as Squid sends it, and whether it must be blocked."""
    blocked = rng.random() < 0.2
    host = rng.choice(BLOCKED_HOSTS if blocked else ALLOWED_HOSTS)
    user = rng.choice(("alice", "bob", "wong", None))
    kind = rng.random()
    if kind < 0.7:
        return reqmod(f"http://{host}/path/{rng.randrange(1000)}?q=1", user=user), blocked
    if kind < 0.8:
        return reqmod(f"https://{host}:443", user=user, method="CONNECT"), blocked
    body = rng.randbytes(rng.choice((10, 200, 2000)))
    return reqmod(f"http://{host}/form", user=user, method="POST", body=body, preview=4096), blocked


def check(answer: bytes, blocked: bool) -> str | None:
    """What is wrong with the answer, or None."""
    try:
        parsed = parse_one(answer)
    except GrammarError as error:
        return f"invalid answer: {error}"
    if blocked and (parsed.status != 200 or not (parsed.res_hdr or b"").startswith(b"HTTP/1.1 403")):
        return f"a blocked request got {parsed.status}: {answer[:120]!r}"
    if not blocked and parsed.status != 204:
        return f"an allowed request got {parsed.status}: {answer[:120]!r}"
    return None


async def connection(port: int, stop_at: float, rng: random.Random, tally: Tally) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    buffer = bytearray()
    try:
        while time.monotonic() < stop_at:
            message, blocked = traffic(rng)
            writer.write(message)
            try:
                answer = await asyncio.wait_for(read_answer(reader, buffer), 30)
            except Exception as error:  # any failure (timeout, reset, cut-off answer) is an error; reconnect
                tally.error(f"{type(error).__name__}: {error}")
                writer.close()
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                buffer.clear()
                continue
            tally.requests += 1
            tally.blocked += blocked
            problem = "connection closed" if answer is None else check(answer, blocked)
            if problem:
                tally.error(problem)
    finally:
        writer.close()


async def sample_rss(server: LiveServer, stop_at: float, every: float, tally: Tally) -> None:
    started = time.monotonic()
    while True:
        tally.rss.append((time.monotonic() - started, server.rss_mib()))
        if time.monotonic() >= stop_at:
            return
        at, mib = tally.rss[-1]
        print(f"{at:6.0f} s  {tally.requests:,} requests  RSS {mib:.1f} MiB", file=sys.stderr, flush=True)
        await asyncio.sleep(min(every, max(stop_at - time.monotonic(), 0)))


async def soak(server: LiveServer, seconds: float, connections: int, every: float) -> tuple[Tally, float]:
    tally = Tally()
    stop_at = time.monotonic() + seconds
    started = time.monotonic()
    rngs = [random.Random(index) for index in range(connections)]
    clients = [connection(server.port, stop_at, rng, tally) for rng in rngs]
    results = await asyncio.gather(sample_rss(server, stop_at, every, tally), *clients, return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            tally.error(f"client failed: {result!r}")
    return tally, time.monotonic() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="how long to run (10)")
    parser.add_argument("--connections", type=int, default=500, help="concurrent persistent connections (500)")
    parser.add_argument("--workers", type=int, default=1, help="serve --workers (1)")
    parser.add_argument("--sample", type=float, default=30.0, help="seconds between RSS samples (30)")
    args = parser.parse_args(argv)
    if args.minutes <= 0 or not 1 <= args.connections <= 5000 or args.workers < 1 or args.sample <= 0:
        parser.error("--minutes > 0; 1 <= --connections <= 5000; --workers >= 1; --sample > 0")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # still stop the server and its Redis
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    with tempfile.TemporaryDirectory(prefix="clearance-soak-") as workdir:
        server = LiveServer(Path(workdir), workers=args.workers, settings="server: {max_connections: 6000}\n")
        try:
            server.start()
            tally, elapsed = asyncio.run(soak(server, args.minutes * 60, args.connections, args.sample))
            alive, tracebacks = server.alive, server.tracebacks()
        finally:
            server.stop()
    rss = [mib for _, mib in tally.rss]
    print("\n".join(["## Soak run", *machine_info()]))
    print(f"{args.connections} connections, serve --workers {args.workers}, {elapsed:.0f} s")
    print(f"requests: {tally.requests:,} ({tally.requests / elapsed:,.0f}/s), blocked {tally.blocked:,}")
    print(f"errors: {tally.errors}; server alive at the end: {alive}; tracebacks in its log: {tracebacks}")
    print(f"RSS MiB: first {rss[0]:.1f}, max {max(rss):.1f}, last {rss[-1]:.1f} ({len(rss)} samples)")
    for line in tally.samples:
        print("  " + line)
    return 0 if tally.errors == 0 and alive and not tracebacks else 1


if __name__ == "__main__":
    sys.exit(main())
