"""Approvals: a department head's permission for one user to use one restricted category, until a date."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from enum import StrEnum


class ApprovalStatus(StrEnum):
    ACTIVE = "active"
    REVOKED = "revoked"


@dataclass(frozen=True, slots=True)
class Approval:
    id: str
    user: str
    category: str
    approver: str
    reason: str
    created_at: datetime
    expires_at: datetime
    status: ApprovalStatus = ApprovalStatus.ACTIVE
    revoked_by: str | None = None
    revoked_at: datetime | None = None
    revoke_reason: str | None = None

    def is_valid(self, now: datetime) -> bool:
        return self.status is ApprovalStatus.ACTIVE and now < self.expires_at

    def state(self, now: datetime) -> str:
        """What an admin sees: active, expired or revoked."""
        if self.status is ApprovalStatus.REVOKED:
            return "revoked"
        return "active" if now < self.expires_at else "expired"

    def revoked(self, by: str, at: datetime, reason: str | None) -> Approval:
        return replace(self, status=ApprovalStatus.REVOKED, revoked_by=by, revoked_at=at, revoke_reason=reason)

    def to_json(self) -> str:
        record = asdict(self)
        for key in ("created_at", "expires_at", "revoked_at"):
            if record[key] is not None:
                record[key] = record[key].isoformat()
        record["status"] = str(self.status)
        return json.dumps(record, ensure_ascii=False, sort_keys=True)

    @classmethod
    def from_json(cls, text: str | bytes) -> Approval:
        record = json.loads(text)
        for key in ("created_at", "expires_at", "revoked_at"):
            if record.get(key) is not None:
                record[key] = datetime.fromisoformat(record[key])
        record["status"] = ApprovalStatus(record["status"])
        return cls(**record)


def utc_now() -> datetime:
    return datetime.now(UTC)
