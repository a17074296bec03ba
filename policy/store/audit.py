"""The audit stream: every change, with who made it, when, and the record before and after."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import structlog

from policy.approvals import Approval, utc_now
from policy.store.base import StoreBase

audit_log = structlog.get_logger("clearance.audit")

AUDIT_MAXLEN = 1_000_000

Recorded = Approval | Mapping[str, Any] | None


def render(value: Recorded) -> str:
    """A before/after value as the stream keeps it: the stored JSON of an approval, sorted JSON otherwise."""
    if value is None:
        return ""
    if isinstance(value, Approval):
        return value.to_json()
    return json.dumps(value, ensure_ascii=False, sort_keys=True, default=str)


class AuditPart(StoreBase):
    def _audit(
        self,
        pipe: Any,
        actor: str,
        action: str,
        target: str,
        department: str | None,
        before: Recorded,
        after: Recorded,
        log: bool = True,
    ) -> None:
        """Queue an audit entry on the pipeline that makes the change, so the entry and the change go together."""
        if log:
            audit_log.info("audit", actor=actor, action=action, target=target, department=department or None)
        pipe.xadd(
            self.key("audit"),
            {
                "at": utc_now().isoformat(),
                "actor": actor,
                "action": action,
                "target": target,
                "department": department or "",
                "before": render(before),
                "after": render(after),
            },
            maxlen=AUDIT_MAXLEN,
            approximate=True,
        )

    async def audit(
        self, actor: str, action: str, target: str, before: Mapping[str, Any] | None, after: Mapping[str, Any] | None
    ) -> None:
        """An audit entry on its own (category changes, which are written by scripts)."""
        async with self.client.pipeline(transaction=False) as pipe:
            self._audit(pipe, actor, action, target, None, before, after)
            await pipe.execute()

    async def read_audit(self, since: datetime | None = None) -> list[dict[str, str]]:
        start = "-" if since is None else f"{int(since.timestamp() * 1000)}-0"
        entries: Any = await self.client.xrange(self.key("audit"), min=start, max="+")
        return [{"id": str(entry_id), **{str(k): str(v) for k, v in fields.items()}} for entry_id, fields in entries]
