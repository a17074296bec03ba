"""structlog set-up: one JSON object per line for machines, readable colour for a person at a terminal.

The JSON path is on the request path (one line per ICAP transaction), so it is kept lean: that line skips
structlog's processor chain (`AccessLog` builds the same dict and orjson renders it), the timestamp is
formatted once a second plus microseconds, and lines are collected and written together
(at most 4 KiB, whole lines only, so workers sharing a pipe never interleave) when the buffer fills or at
the latest `FLUSH_INTERVAL` later: one system call per few dozen requests instead of one per request.
Warnings that hostile input can cause once per message go through `RateLimitedWarnings`.
"""

from __future__ import annotations

import atexit
import contextlib
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

    def line(self, data: bytes) -> None:
        """A line already rendered with its newline (the access log's, see AccessLog)."""
        self._buffer += data
        if len(self._buffer) >= CHUNK:
            self.flush()

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


class LogFile:
    """`logging.file`: the process's stdout and stderr (fds 1 and 2) pointed at a file opened for appending.

    Every writer — buffered lines, structlog, a traceback — writes to fd 1 or 2, so pointing those at the file
    (dup2) moves them all at once, and `reopen` after a rotation swaps the file under them without touching a
    logger: no line is lost or written twice, and nothing needs reconfiguring. Each process reopens for itself
    (a forked worker has its own fd table); the supervisor passes SIGUSR1 on. Lines from several processes
    never interleave: each write is whole lines of at most 4 KiB to a file opened with O_APPEND.
    """

    path: str = ""

    @classmethod
    def attach(cls, path: str) -> None:
        """Point fds 1 and 2 at `path` (created 0640 if missing); OSError if it cannot be opened."""
        sys.stdout.flush()
        sys.stderr.flush()
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)
        try:
            os.dup2(fd, 1)
            os.dup2(fd, 2)
        finally:
            os.close(fd)
        cls.path = path

    @classmethod
    def reopen(cls, *_signal: object) -> None:
        """SIGUSR1: the same path opened again (after logrotate moved the old file); no file set: nothing."""
        if cls.path:
            with contextlib.suppress(OSError):  # cannot reopen: keep writing to the file we have
                cls.attach(cls.path)


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

    def stamp(self) -> str:
        """Now, as the `timestamp` field of a line."""
        now = time.time()
        second = int(now)
        if second != self._second:
            self._second = second
            self._prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        return f"{self._prefix}.{int((now - second) * 1_000_000):06d}Z"

    def __call__(self, _logger: Any, _name: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
        event_dict["timestamp"] = self.stamp()
        return event_dict


def static_fields(fields: Mapping[str, Any]) -> structlog.typing.Processor:
    """Add fixed fields (e.g. the worker number) to every line, cheaper than context variables."""
    items = tuple(fields.items())

    def add(_logger: Any, _name: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
        for key, value in items:
            event_dict.setdefault(key, value)
        return event_dict

    return add


def _json_fallback(value: Any) -> Any:
    """What structlog's JSONRenderer does with a value orjson cannot render: `__structlog__()`, else repr."""
    render = getattr(value, "__structlog__", None)
    return render() if render is not None else repr(value)


_AS_LINE = orjson.OPT_APPEND_NEWLINE


class AccessLog:
    """The one line per ICAP transaction, rendered directly: structlog's chain was ~10 µs of each request.

    The line is the dict structlog's JSON chain built, key for key and in its order (the call's fields, `event`,
    the static fields, `level`, `timestamp`), rendered by the same orjson with the same fallback, into the same
    batched `LineBuffer`. With console output, a level above info, or before `configure_logging`, the line goes
    through structlog as before. tests/test_access_log.py holds the old chain and compares the two.
    """

    __slots__ = ("_stamp", "_static", "_structlog", "_write")

    def __init__(self) -> None:
        self._write: Callable[[bytes], None] | None = None
        self._static: tuple[tuple[str, Any], ...] = ()
        self._stamp = FastTimeStamper()
        self._structlog: Any = structlog.get_logger("clearance.access")

    def direct(self, write: Callable[[bytes], None] | None, static: Mapping[str, Any], stamp: FastTimeStamper) -> None:
        """Write lines with `write` (None: through structlog); `static` and `stamp` are the chain's own."""
        self._write = write
        self._static = tuple(static.items())
        self._stamp = stamp
        self._structlog = structlog.get_logger("clearance.access")  # a fresh proxy: binds to the new set-up

    def info(self, event: str, fields: dict[str, Any]) -> None:
        """One line at level info; `fields` (a fresh dict, the caller's no longer) becomes the line."""
        write = self._write
        if write is None:
            self._structlog.info(event, **fields)
            return
        fields["event"] = event
        for key, value in self._static:
            fields.setdefault(key, value)
        fields["level"] = "info"
        fields["timestamp"] = self._stamp.stamp()
        write(orjson.dumps(fields, default=_json_fallback, option=_AS_LINE))


access_log = AccessLog()


def _unbuffered(binary: Any) -> Callable[[bytes], None]:
    """A line written and flushed at once, as structlog's BytesLogger does (processes that never flush_logs)."""

    def write(data: bytes) -> None:
        binary.write(data)
        binary.flush()

    return write


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
    access_log.direct(None, {}, FastTimeStamper())
    if as_json:
        stamper = FastTimeStamper()
        processors += [stamper, structlog.processors.JSONRenderer(serializer=orjson.dumps)]
        binary: Any = getattr(output, "buffer", None) or output
        write: Callable[[bytes], None]
        if buffered:
            line_buffer = LineBuffer(binary, keep_open=output)
            _buffers.append(line_buffer)
            write = line_buffer.line

            def factory(*_args: Any) -> Any:
                return line_buffer

        else:
            factory = structlog.BytesLoggerFactory(file=binary)
            write = _unbuffered(binary)
        if LEVELS[level] <= logging.INFO:
            access_log.direct(write, fields or {}, stamper)
    else:
        processors += [structlog.processors.TimeStamper(fmt="iso", utc=True), structlog.dev.ConsoleRenderer()]
        factory = structlog.WriteLoggerFactory(file=output)
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(LEVELS[level]),
        logger_factory=factory,
        cache_logger_on_first_use=True,
    )
