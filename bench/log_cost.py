"""What one access-log line costs in process, µs: structlog's chain (before issue 12) against the direct line.

    .venv/bin/python bench/log_cost.py [N]

Both render the same transaction's fields (a block of a restricted host with every field filled, and a pass
with most of them None) into the same batched `LineBuffer` writing to /dev/null, flushed as the server does;
the server's own work for the line (building the fields from the Verdict) is in both. "before" is the chain
configure_logging used for this line until the change (`tests/test_access_log.py` keeps the same chain);
"after" is `icap_server.runtime.logs.access_log`, as `ICAPProtocol._logged` calls it.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable
from typing import Any

import orjson
import structlog

from icap_server.runtime import logs
from icap_server.runtime.logs import FastTimeStamper, access_log, configure_logging, flush_logs, static_fields
from icap_server.service.application import Verdict
from policy.decision import Action, Decision, Reason
from policy.identity import Identity

BLOCK = Verdict(
    0,
    Identity("alice", "10.1.2.3"),
    "mail.google.com",
    Decision(Action.BLOCK, Reason.NO_APPROVAL, category="webmail", matched_entry="google.com", service="gmail"),
    7,
    "5958b54c5116",
)
PASS = Verdict(0, Identity("bob", "10.1.2.4"), "www.example.com", Decision(Action.PASS, Reason.NOT_RESTRICTED), 7)


def fields(verdict: Verdict) -> dict[str, Any]:
    """The line's fields as the server builds them."""
    return {"method": "REQMOD", "service": "/reqmod", "status": 204, "duration_ms": 0.061, **verdict.log_fields()}


def old_chain(sink: logs.LineBuffer) -> Any:
    processors: list[Any] = [
        static_fields({"worker": 0}),
        structlog.processors.add_log_level,
        structlog.processors.format_exc_info,
        FastTimeStamper(),
        structlog.processors.JSONRenderer(serializer=orjson.dumps),
    ]
    return structlog.wrap_logger(
        sink, processors=processors, wrapper_class=structlog.make_filtering_bound_logger(logging.INFO)
    )


def timed(line: Callable[[Verdict], None], verdict: Verdict, count: int) -> float:
    started = time.perf_counter()
    for done in range(count):
        line(verdict)
        if done % 64 == 63:
            flush_logs()
    flush_logs()
    return (time.perf_counter() - started) / count * 1e6


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 200_000
    with open("/dev/null", "w") as null:
        configure_logging("info", "json", stream=null, fields={"worker": 0}, buffered=True)
        (sink,) = logs._buffers
        before = old_chain(sink)

        def old(verdict: Verdict) -> None:
            before.info("icap", **fields(verdict))

        def new(verdict: Verdict) -> None:
            access_log.info("icap", fields(verdict))

        for label, verdict in (("block, every field set", BLOCK), ("pass, most fields None", PASS)):
            results = {}
            for name, line in (("structlog chain", old), ("direct", new)):
                timed(line, verdict, 5_000)  # warm up
                results[name] = min(timed(line, verdict, count) for _ in range(3))
            old_us, new_us = results["structlog chain"], results["direct"]
            print(f"{label:24} before {old_us:5.2f} µs/line   after {new_us:5.2f} µs/line   ({old_us / new_us:.1f}×)")


if __name__ == "__main__":
    main()
