"""Following the `changes` channel: the store's subscription API, so no code outside the store touches pub/sub."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from redis.asyncio.client import PubSub

from policy.store.base import StoreBase
from policy.store.changes import Change, decode
from policy.store.errors import StoreUnavailable


class ChangeFeed:
    """The changes announced since subscribing, in version order (Redis delivers one channel in order)."""

    def __init__(self, pubsub: PubSub) -> None:
        self._pubsub = pubsub

    async def get(self, timeout: float) -> Change | None:
        """The next change, or None if none came within `timeout` seconds.

        ChangeError if the message cannot be decoded; StoreUnavailable (or OSError) if the connection failed.
        """
        message = await self._pubsub.get_message(timeout=timeout)
        if message is None or message.get("type") != "message":
            return None
        return decode(message["data"])


class FeedPart(StoreBase):
    @contextlib.asynccontextmanager
    async def changes(self) -> AsyncIterator[ChangeFeed]:
        """Subscribe to the change channel for the block; subscribe before loading, so no change falls between."""
        pubsub = self.client.pubsub(ignore_subscribe_messages=True)
        try:
            await pubsub.subscribe(self.channel)
            yield ChangeFeed(pubsub)
        finally:
            with contextlib.suppress(StoreUnavailable, OSError):
                await pubsub.aclose()  # type: ignore[no-untyped-call]
