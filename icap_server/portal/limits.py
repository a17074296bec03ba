"""Bounds on what one person or one computer can make the portal do: a rate of form posts, and where they come from.

Found in issue 9: one person created 200 pending requests, and sent 200 mails to their head, in under a
second. The bound on pending requests per user lives in the store (one WATCHed check, shared by every
portal); the rate of posts per user and per client address is a token bucket kept here, in memory, per
portal process: a portal restart refills it, and N portals on one Redis allow N times the rate. That is
enough for its job, which is to stop a burst, not to meter anyone.

The `Origin` (or, without it, the `Referer`) of a form post must be the portal itself or the blocked site
whose block page carries the form. A browser sends `Origin: null` for a post from a page served with
`Referrer-Policy: no-referrer`, which the block page and the portal's own pages are; `null` and no header
are therefore accepted, and the signed token remains the proof of who asks. A post that names another
site is refused (403).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

from starlette.datastructures import Headers

MAX_KEYS = 10_000  # users and addresses remembered at once; beyond that the idle ones are forgotten


@dataclass(slots=True)
class _Bucket:
    tokens: float
    at: float


class RateLimit:
    """A token bucket per key: `per_minute` posts in a burst, refilled evenly over a minute."""

    def __init__(self, per_minute: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.capacity = float(per_minute)
        self.rate = per_minute / 60.0
        self.clock = clock
        self.buckets: dict[str, _Bucket] = {}

    def allow(self, key: str) -> bool:
        """Take one token for `key`; False (and nothing taken) when its bucket is empty."""
        now = self.clock()
        bucket = self.buckets.get(key)
        if bucket is None:
            if len(self.buckets) >= MAX_KEYS:
                self._forget_idle(now)
            bucket = self.buckets[key] = _Bucket(self.capacity, now)
        bucket.tokens = min(self.capacity, bucket.tokens + (now - bucket.at) * self.rate)
        bucket.at = now
        if bucket.tokens < 1:
            return False
        bucket.tokens -= 1
        return True

    def _forget_idle(self, now: float) -> None:
        """Drop the buckets that would be full again (their keys lose nothing), else the oldest half."""
        full = [
            key for key, item in self.buckets.items() if item.tokens + (now - item.at) * self.rate >= self.capacity
        ]
        for key in full:
            del self.buckets[key]
        if len(self.buckets) >= MAX_KEYS:
            oldest = sorted(self.buckets, key=lambda key: self.buckets[key].at)[: MAX_KEYS // 2]
            for key in oldest:
                del self.buckets[key]


def origin_of(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}".lower()


def cross_site(headers: Headers, own: Iterable[str], blocked_host: str) -> str | None:
    """The other site a form post came from, or None when it came from the portal or the block page."""
    value = headers.get("origin") or headers.get("referer") or ""
    if not value or value == "null":
        return None
    try:
        origin, host = origin_of(value), (urlsplit(value).hostname or "")
    except ValueError:
        return value[:200]
    if origin in own or host == blocked_host.lower():
        return None
    return origin
