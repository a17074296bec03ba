"""Decision cost and memory per worker as the category index grows (10k, 1M, 5M entries).

Each size runs in a fresh process: build the in-memory index a serve worker holds (the same CategoryIndex
the sync task fills from Redis), then time the whole decision (`policy.decision.judge`: URL rules, label
walk, approvals) for 10,000 URLs, 10% of them to listed hosts, and read the process's RSS.

    python bench/scale.py [--sizes 10000,1000000,5000000] [--markdown]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from live import rss_kib

ROOT = Path(__file__).resolve().parent.parent
URLS = 10_000
ROUNDS = 7


def synthetic_hosts(count: int, seed: int = 1) -> list[str]:
    rng = random.Random(seed)
    tlds = ["com", "net", "org", "io", "co.uk", "com.hk", "de", "fr", "cn", "jp"]
    return [
        f"h{index}-{rng.randrange(1 << 30):x}.example-{index % 997}.{tlds[index % len(tlds)]}" for index in range(count)
    ]


def measure(size: int) -> dict[str, float]:
    """Runs inside the child process."""
    sys.path.insert(0, str(ROOT))
    from policy.approvals import Approval, SubjectKind
    from policy.decision import DecisionSettings, RequestFacts, judge
    from policy.state import ApprovalIndex, PolicyState

    base_rss = rss_kib()
    hosts = synthetic_hosts(size)
    started = time.perf_counter()
    state = PolicyState(version=1)
    state.categories.add("webmail", hosts)
    build_s = time.perf_counter() - started
    rng = random.Random(2)
    listed = [f"www.{rng.choice(hosts)}" for _ in range(URLS // 10)]
    unlisted = [f"a{index}.news-{index % 500}.example.org" for index in range(URLS - len(listed))]
    targets = listed + unlisted
    rng.shuffle(targets)
    now = datetime.now(UTC)
    year = timedelta(days=365)
    alice = Approval(
        id="A1", subject_kind=SubjectKind.USER, subject="alice", category="webmail", host=None,
        department="Finance", approver="head", justification="Liaison with the overseas office",
        created_by="admin", created_at=now, valid_from=now, valid_until=now + year, review_due=now + year,
    )  # fmt: skip
    state.approvals = ApprovalIndex([alice])  # a user with an approval beside the one judged (bob, none)
    settings = DecisionSettings(frozenset({"webmail", "cloud-storage", "web-im"}))
    del hosts
    timings = []
    for _ in range(ROUNDS):
        started = time.perf_counter()
        for host in targets:
            judge(state, RequestFacts(host, "/", "bob"), settings, now)
        timings.append((time.perf_counter() - started) / len(targets))
    timings.sort()
    blocked = sum(judge(state, RequestFacts(host, "/", "bob"), settings, now).blocked for host in targets)
    return {
        "entries": size,
        "decision_ns": timings[len(timings) // 2] * 1e9,
        "rss_mib": rss_kib() / 1024,
        "index_mib": (rss_kib() - base_rss) / 1024,
        "build_s": build_s,
        "blocked_share": blocked / len(targets),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="10000,1000000,5000000")
    parser.add_argument("--markdown", action="store_true")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        print(json.dumps(measure(args.child)))
        return
    rows = []
    for size in (int(text) for text in args.sizes.split(",")):
        out = subprocess.run(
            [sys.executable, __file__, "--child", str(size)],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        rows.append(json.loads(out.stdout))
    base = rows[0]["decision_ns"]
    header = ["entries", "decision (ns)", "vs smallest", "RSS per worker (MiB)", "index (MiB)", "build (s)", "blocked"]
    lines = [
        [
            f"{row['entries']:,}",
            f"{row['decision_ns']:.0f}",
            f"{row['decision_ns'] / base:.2f}x",
            f"{row['rss_mib']:.0f}",
            f"{row['index_mib']:.0f}",
            f"{row['build_s']:.1f}",
            f"{row['blocked_share']:.0%}",
        ]
        for row in rows
    ]
    if args.markdown:
        print("| " + " | ".join(header) + " |")
        print("|" + "---|" * len(header))
        for line in lines:
            print("| " + " | ".join(line) + " |")
    else:
        widths = [max(len(cell) for cell in column) for column in zip(header, *lines, strict=True)]
        for line in [header, *lines]:
            print("  ".join(cell.rjust(width) for cell, width in zip(line, widths, strict=True)))


if __name__ == "__main__":
    main()
