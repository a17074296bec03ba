"""Which reminders went out: one key per mail (`reminder:{mark}`), so each is sent once across processes and restarts.

A sender first claims a mark (`SET NX` with a short expiry: another portal process, or a `clearance reminders
run` at the same moment, then leaves it alone), sends, and only then records it as sent, for as long as the
mail could be planned again. A failed send releases the claim, so the next run tries again; a sender that dies
mid-send leaves a claim that expires. A mail may so go twice (sent, then the process died before recording
it), never not at all while its occasion lasts.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from redis.exceptions import WatchError

from policy.store.base import StoreBase

SENT = "sent"


class RemindersPart(StoreBase):
    def _reminder_key(self, mark: str) -> str:
        return self.key("reminder", mark)

    async def reminders_sent(self, marks: Sequence[str]) -> frozenset[str]:
        """The marks among `marks` recorded as sent."""
        if not marks:
            return frozenset()
        values = await self.client.mget([self._reminder_key(mark) for mark in marks])
        return frozenset(mark for mark, value in zip(marks, values, strict=True) if value == SENT)

    async def claim_reminder(self, mark: str, hold: timedelta) -> str | None:
        """A token if this caller may send the mail now; None if it was sent, or someone else is sending it."""
        token = "claim " + secrets.token_hex(8)
        claimed = await self.client.set(self._reminder_key(mark), token, nx=True, px=_ms(hold))
        return token if claimed else None

    async def reminder_sent(self, mark: str, keep: timedelta) -> None:
        """Record the mail as sent, for `keep` (until its occasion has passed)."""
        await self.client.set(self._reminder_key(mark), SENT, px=_ms(keep))

    async def release_reminder(self, mark: str, token: str) -> None:
        """Drop a claim after a failed send (only this caller's: one that expired may be someone else's now)."""
        key = self._reminder_key(mark)
        pipeline: Any = self.client.pipeline(transaction=True)
        async with pipeline as pipe:
            try:
                await pipe.watch(key)
                if await pipe.get(key) != token:
                    await pipe.reset()
                    return
                pipe.multi()
                pipe.delete(key)
                await pipe.execute()
            except WatchError:
                return  # changed meanwhile: no longer ours


def _ms(span: timedelta) -> int:
    return max(1, int(span.total_seconds() * 1000))
