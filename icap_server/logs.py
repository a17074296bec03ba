"""structlog set-up: one JSON object per line for machines, readable colour for a person at a terminal.

The JSON path is on the request path (one line per ICAP transaction), so it is kept lean: orjson renders,
the timestamp is formatted once a second plus microseconds, and each line goes out in a single write so
workers sharing stdout never interleave.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Mapping, MutableMapping
from typing import Any, Literal

import orjson
import structlog

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
) -> None:
    output = stream if stream is not None else sys.stdout
    as_json = fmt == "json" or (fmt == "auto" and not getattr(output, "isatty", lambda: False)())
    processors: list[structlog.typing.Processor] = []
    if fields:
        processors.append(static_fields(fields))
    processors += [structlog.processors.add_log_level, structlog.processors.format_exc_info]
    factory: Any
    if as_json:
        processors += [FastTimeStamper(), structlog.processors.JSONRenderer(serializer=orjson.dumps)]
        binary: Any = getattr(output, "buffer", None) or output
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
