"""Approvals and their usage counts. A write announces the approvals themselves, so workers need not read back."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from policy.approvals import Approval
from policy.store.audit import AuditPart, audit_log
from policy.store.base import in_id_order
from policy.store.changes import ApprovalsReloaded, ApprovalsSaved, Change

RELOAD_OVER = 100  # approvals written at once above which workers reload them all rather than get them sent
QUIET_OVER = 10  # approvals written at once above which the log gets one summary line (the stream gets all)


class ApprovalsPart(AuditPart):
    async def next_approval_id(self) -> str:
        return f"A{await self.client.incr(self.key('approval', 'seq'))}"

    async def reserve_approval_ids(self, floor: int, count: int) -> int:
        """Reserve `count` ids above both the counter and `floor` (ids an import restores); the last one."""
        return int(await self._run("reserve_ids", [self.key("approval", "seq")], [floor, count]))

    async def get_approval(self, approval_id: str) -> Approval:
        return Approval.from_json(await self._record("approvals", approval_id, "approval"))

    async def all_approvals(self) -> list[Approval]:
        return in_id_order((Approval.from_json(text) for text in await self._records("approvals")), "A")

    async def save_approval(self, approval: Approval, actor: str, action: str, before: Approval | None) -> None:
        """Write one approval, its audit entry and the change announcement in one transaction."""
        await self.save_approvals([(approval, before)], actor, action)

    async def save_approvals(
        self,
        changes: Sequence[tuple[Approval, Approval | None]],
        actor: str,
        action: str,
        actions: Mapping[str, str] | None = None,
    ) -> None:
        """Write many approvals (an import) in one transaction: all of them or none.

        `actions` gives some approvals (by id) an audit action other than `action` (an import's restores).
        """
        if not changes:
            return
        await self._load_scripts()
        async with self.client.pipeline(transaction=True) as pipe:
            self._queue_approvals(pipe, changes, actor, action, actions or {})
            await pipe.execute()

    def _queue_approvals(
        self,
        pipe: Any,
        changes: Sequence[tuple[Approval, Approval | None]],
        actor: str,
        action: str,
        actions: Mapping[str, str] | None = None,
    ) -> None:
        """Queue approvals, their audit entries and the change announcement on a MULTI pipeline."""
        records: dict[Any, Any] = {approval.id: approval.to_json() for approval, _ in changes}
        pipe.hset(self.key("approvals"), mapping=records)
        # Imported ids must never be handed out again.
        top = max(int(approval.id.lstrip("A") or 0) for approval, _ in changes)
        self._eval(pipe, "raise_seq", [self.key("approval", "seq")], [str(top)])
        quiet = len(changes) > QUIET_OVER
        for approval, before in changes:
            done = (actions or {}).get(approval.id, action)
            self._audit(pipe, actor, done, approval.id, approval.department, before, approval, log=not quiet)
        if quiet:
            audit_log.info("audit", actor=actor, action=action, target=f"{len(changes)} approvals")
        change: Change = ApprovalsSaved(approvals=tuple(approval for approval, _ in changes))
        if len(changes) > RELOAD_OVER:
            change = ApprovalsReloaded()  # keeps the message (and every worker's parse of it) small
        self._publish(pipe, change)

    # ---- usage ----------------------------------------------------------------------------

    async def record_usage(self, usage: Mapping[str, tuple[int, datetime]]) -> None:
        """Add counts and move `last used` forward (never back: workers flush in any order)."""
        if not usage:
            return
        await self._load_scripts()
        async with self.client.pipeline(transaction=False) as pipe:
            for approval_id, (count, last_used) in usage.items():
                pipe.hincrby(self.key("usage", "count"), approval_id, count)
                self._eval(
                    pipe, "last_used", [self.key("usage", "last")], [approval_id, last_used.astimezone(UTC).isoformat()]
                )
            await pipe.execute()

    async def usage(self) -> dict[str, tuple[int, datetime | None]]:
        counts = await self.client.hgetall(self.key("usage", "count"))
        lasts = await self.client.hgetall(self.key("usage", "last"))
        return {
            str(approval_id): (
                int(count),
                datetime.fromisoformat(str(lasts[approval_id])) if approval_id in lasts else None,
            )
            for approval_id, count in counts.items()
        }
