"""structlog set-up: one JSON object per line for machines, readable colour for a person at a terminal."""

from __future__ import annotations

import logging
import sys
from typing import Literal

import structlog

LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}


def configure_logging(
    level: str = "info", fmt: Literal["auto", "json", "console"] = "auto", stream: object = None
) -> None:
    output = stream if stream is not None else sys.stdout
    as_json = fmt == "json" or (fmt == "auto" and not getattr(output, "isatty", lambda: False)())
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer(ensure_ascii=False) if as_json else structlog.dev.ConsoleRenderer()
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(LEVELS[level]),
        # One write per line (message and newline together), so workers sharing stdout never interleave.
        logger_factory=structlog.WriteLoggerFactory(file=output),  # type: ignore[arg-type]
        cache_logger_on_first_use=True,
    )
