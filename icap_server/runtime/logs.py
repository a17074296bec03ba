"""structlog set-up: one JSON object per line for machines, readable colour for a person at a terminal.

The JSON path is on the request path (one line per ICAP transaction), so it is kept lean: orjson renders,
the timestamp is formatted once a second plus microseconds, and lines are collected and written together
(at most 4 KiB, whole lines only, so workers sharing a pipe never interleave) when the buffer fills or at
the latest `FLUSH_INTERVAL` later: one system call per few dozen requests instead of one per request.
Warnings that hostile input can cause once per message go through `RateLimitedWarnings`.
"""

from __future__ import annotations

import atexit
import logging
import os
import sys
import time
from collections.abc import Callable, Mapping, MutableMapping
from typing import Any, Literal

import orjson
import structlog

FLUSH_INTERVAL = 0.1
CHUNK = 4096  # PIPE_BUF: a write of whole lines up to this size reaches a pipe in one piece


class LineBuffer:
    """A structlog logger that collects rendered lines and writes whole lines in chunks."""

    __slots__ = ("_buffer", "_fd", "_owner", "_stream")

    def __init__(self, stream: Any, keep_open: Any = None) -> None:
        self._stream = stream
        self._owner = keep_open  # the text stream whose buffer this is: closing it would close our fd
        try:
            self._fd: int | None = stream.fileno()
        except (AttributeError, OSError, ValueError):
            self._fd = None
        self._buffer = bytearray()

    def msg(self, message: bytes) -> None:
        self._buffer += message
        self._buffer += b"\n"
        if len(self._buffer) >= CHUNK:
            self.flush()

    log = debug = info = warn = warning = error = critical = exception = fatal = failure = err = msg

    def flush(self) -> None:
        buffer = self._buffer
        while buffer:
            end = len(buffer) if len(buffer) <= CHUNK else buffer.rfind(b"\n", 0, CHUNK) + 1 or len(buffer)
            chunk = bytes(buffer[:end])
            del buffer[:end]
            if self._fd is not None:
                view = memoryview(chunk)
                while view:
                    view = view[os.write(self._fd, view) :]
            else:
                self._stream.write(chunk)
                self._stream.flush()


_buffers: list[LineBuffer] = []


def flush_logs() -> None:
    """Write out buffered log lines (the server calls this every FLUSH_INTERVAL and at shutdown)."""
    for buffer in _buffers:
        buffer.flush()


atexit.register(flush_logs)


class RateLimitedWarnings:
    """At most `limit` warning lines per event per `interval`; past that, counts, then one summary line.

    Hostile input produces one warning per message (a fuzzer: hundreds of thousands a minute), and a log
    that grows without bound is a fault of its own. The first lines of each kind in a window show what is
    happening; `summary_event` then says how many more there were, per kind. `tick` (the server calls it
    with its log flush) closes a window even when no further warning comes.
    """

    __slots__ = ("_clock", "_counts", "_interval", "_limit", "_logger", "_started", "_summary_event")

    def __init__(
        self,
        logger: Any,
        summary_event: str,
        limit: int = 10,
        interval: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._logger = logger
        self._summary_event = summary_event
        self._limit = limit
        self._interval = interval
        self._clock = clock
        self._started = clock()
        self._counts: dict[str, int] = {}

    def warning(self, event: str, **fields: Any) -> None:
        self.tick()
        count = self._counts.get(event, 0) + 1
        self._counts[event] = count
        if count <= self._limit:
            self._logger.warning(event, **fields)

    def tick(self) -> None:
        """End the window if its interval has passed: one summary line for what was held back."""
        now = self._clock()
        if now - self._started < self._interval:
            return
        suppressed = {event: count - self._limit for event, count in self._counts.items() if count > self._limit}
        if suppressed:
            self._logger.warning(
                self._summary_event,
                suppressed=suppressed,
                total=sum(suppressed.values()),
                interval_s=round(now - self._started, 3),
            )
        self._started = now
        self._counts.clear()


LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}


class FastTimeStamper:
    """ISO 8601 UTC timestamps with microseconds; the date-time part is formatted once per second."""

    __slots__ = ("_prefix", "_second")

    def __init__(self) -> None:
        self._second = -1
        self._prefix = ""

    def __call__(self, _logger: Any, _name: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
        now = time.time()
        second = int(now)
        if second != self._second:
            self._second = second
            self._prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        event_dict["timestamp"] = f"{self._prefix}.{int((now - second) * 1_000_000):06d}Z"
        return event_dict


def static_fields(fields: Mapping[str, Any]) -> structlog.typing.Processor:
    """Add fixed fields (e.g. the worker number) to every line, cheaper than context variables."""
    items = tuple(fields.items())

    def add(_logger: Any, _name: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
        for key, value in items:
            event_dict.setdefault(key, value)
        return event_dict

    return add


def configure_logging(
    level: str = "info",
    fmt: Literal["auto", "json", "console"] = "auto",
    stream: Any = None,
    fields: Mapping[str, Any] | None = None,
    buffered: bool = False,
) -> None:
    """Set up structlog. `buffered` batches JSON lines; only for a process that calls flush_logs() regularly."""
    output = stream if stream is not None else sys.stdout
    as_json = fmt == "json" or (fmt == "auto" and not getattr(output, "isatty", lambda: False)())
    processors: list[structlog.typing.Processor] = []
    if fields:
        processors.append(static_fields(fields))
    processors += [structlog.processors.add_log_level, structlog.processors.format_exc_info]
    factory: Any
    flush_logs()
    _buffers.clear()
    if as_json:
        processors += [FastTimeStamper(), structlog.processors.JSONRenderer(serializer=orjson.dumps)]
        binary: Any = getattr(output, "buffer", None) or output
        if buffered:
            line_buffer = LineBuffer(binary, keep_open=output)
            _buffers.append(line_buffer)

            def factory(*_args: Any) -> Any:
                return line_buffer

        else:
            factory = structlog.BytesLoggerFactory(file=binary)
    else:
        processors += [structlog.processors.TimeStamper(fmt="iso", utc=True), structlog.dev.ConsoleRenderer()]
        factory = structlog.WriteLoggerFactory(file=output)
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(LEVELS[level]),
        logger_factory=factory,
        cache_logger_on_first_use=True,
    )
