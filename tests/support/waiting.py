"""Waiting on a condition with a deadline, instead of sleeping and hoping it has happened by then."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from typing import TypeVar

T = TypeVar("T")


def wait_until(predicate: Callable[[], T | None], timeout: float = 10.0, interval: float = 0.02, what: str = "") -> T:
    """Poll predicate until it returns something truthy (returned), or fail after timeout seconds."""
    for value in _polls(predicate, timeout, what):
        if value:
            return value
        time.sleep(interval)
    raise AssertionError("unreachable")  # pragma: no cover - _polls returns a value or raises


async def wait_until_async(
    predicate: Callable[[], T | None], timeout: float = 5.0, interval: float = 0.005, what: str = ""
) -> T:
    """wait_until for a test running on an event loop: the other tasks run while it polls."""
    for value in _polls(predicate, timeout, what):
        if value:
            return value
        await asyncio.sleep(interval)
    raise AssertionError("unreachable")  # pragma: no cover


def _polls(predicate: Callable[[], T | None], timeout: float, what: str) -> Iterator[T | None]:
    """predicate's value at each poll, until it is truthy; AssertionError once the deadline has passed."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        done = bool(value)  # now: a mutable value (a list being filled) may turn truthy while the caller sleeps
        yield value
        if done:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate!r}")
