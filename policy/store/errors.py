"""The store's errors: the only names callers catch, so no module outside the store needs to import redis."""

from __future__ import annotations

from redis.exceptions import RedisError

# Any failure to reach or talk to Redis.
StoreUnavailable = RedisError


class StoreError(Exception):
    """A policy change that cannot be made (unknown approval, already revoked, …)."""


class RequestChanged(StoreError):
    """An access request changed between reading and deciding it (someone else decided it): read it again."""
