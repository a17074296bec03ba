"""The caution pages' "continue"s: a grace per person and service, written by the portal, announced to workers.

- `graces` (hash): `user TAB target` -> the `policy.modes.Grace` JSON (one per person and service: a new
  continue replaces the old one); expired ones are skipped at load and dropped at the next grant
- `grace:count` (hash): user -> how many times they continued (what a head sees beside discovery)

A grant is audited (`caution-continue`, the person as actor, under their department) and announced as
`GraceGranted` in the same transaction, so the person's next request, on any worker, passes as `continued`.
"""

from __future__ import annotations

import json
import time

from policy.modes import Grace
from policy.store.audit import AuditPart
from policy.store.changes import GraceGranted


class GracesPart(AuditPart):
    async def grant_grace(self, grace: Grace, department: str | None) -> None:
        await self._load_scripts()
        key = self.key("graces")
        stale = [
            str(field)
            for field, text in (await self.client.hgetall(key)).items()
            if Grace.from_json(str(text)).expires_at <= time.time()
        ]
        async with self.client.pipeline(transaction=True) as pipe:
            if stale:
                pipe.hdel(key, *stale)
            pipe.hset(key, grace.id, grace.to_json())
            pipe.hincrby(self.key("grace", "count"), grace.user, 1)
            self._audit(
                pipe, grace.user, "caution-continue", grace.target, department, None, json.loads(grace.to_json())
            )
            self._publish(pipe, GraceGranted(graces=(grace,)))
            await pipe.execute()

    async def graces(self, now: float) -> list[Grace]:
        """The graces still running at `now` (Unix seconds)."""
        found = (Grace.from_json(str(text)) for text in (await self.client.hgetall(self.key("graces"))).values())
        return [grace for grace in found if grace.expires_at > now]

    async def grace_counts(self) -> dict[str, int]:
        return {
            str(user): int(count) for user, count in (await self.client.hgetall(self.key("grace", "count"))).items()
        }
