"""Access requests from the self-service portal, as plain values and pure rules.

A person who meets a block page can ask for access there. The block page carries a signed token (see
`policy.tokens`) naming the user, the client address, the category, the host and the catalogue service; the
portal turns a valid token plus a justification and a number of days into a pending request for the head (or
a delegate) of the user's department. The head approves it with `clearance requests approve`, which creates
an ordinary approval through `policy.lifecycle.build_approval` (the same checks as `approvals grant`): for the
service when the request names one, else for the category. Or the head denies it.

Nothing here does I/O: the store keeps the records, the portal and the CLI apply these rules.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from .approvals import SubjectKind, justification_problem
from .lifecycle import GrantSpec


class RequestError(ValueError):
    """A request that cannot be made or decided; the message says why."""


class RequestStatus(StrEnum):
    PENDING = "pending"
    APPROVED = "approved"
    DENIED = "denied"


@dataclass(frozen=True, slots=True)
class AccessRequest:
    id: str  # Q1, Q2, … (R is taken by URL rules)
    user: str  # from the verified token, never from the form
    client_ip: str | None
    category: str
    host: str
    justification: str
    days: int
    created_at: datetime
    department: str  # the user's department when the request was made ("" if not in the directory)
    approvers: tuple[str, ...]  # its heads and delegates then: who was asked
    key: str  # the requester's secret for the status page; never in the audit trail or the CLI
    status: RequestStatus = RequestStatus.PENDING
    decided_by: str | None = None
    decided_at: datetime | None = None
    note: str = ""
    approval_id: str | None = None
    valid_until: datetime | None = None  # of the approval, once approved
    # The catalogue service asked for (from the token), with its names then; "" for a category request (a
    # token or record from before services), which an approval grants as the whole category.
    service: str = ""
    service_en: str = ""
    service_zh: str = ""

    def to_record(self, with_key: bool = True) -> dict[str, Any]:
        record: dict[str, Any] = {name: getattr(self, name) for name in self.__dataclass_fields__}
        for name, value in list(record.items()):
            if isinstance(value, datetime):
                record[name] = value.isoformat()
        record["status"] = str(self.status)
        record["approvers"] = list(self.approvers)
        if not with_key:
            del record["key"]
        return record

    def to_json(self) -> str:
        return json.dumps(self.to_record(), ensure_ascii=False, sort_keys=True)

    @classmethod
    def from_json(cls, text: str | bytes) -> AccessRequest:
        record = json.loads(text)
        for name in ("created_at", "decided_at", "valid_until"):
            if record.get(name) is not None:
                record[name] = datetime.fromisoformat(record[name])
        record["status"] = RequestStatus(record["status"])
        record["approvers"] = tuple(record.get("approvers", ()))
        return cls(**record)

    @property
    def open_key(self) -> str:
        return open_key(self.user, self.category, self.host, self.service)

    def scope(self) -> str:
        """What approving it grants, as an approval's scope reads: `service whatsapp` or `category webmail`."""
        return f"service {self.service}" if self.service else f"category {self.category}"


def open_key(user: str, category: str, host: str, service: str = "") -> str:
    """One pending request per user, service (or category) and host: the field that indexes it.

    A request without a service keeps the key it always had, so requests stored before services still match.
    """
    key = f"{user}\t{category}\t{host}"
    return f"{key}\t{service}" if service else key


def submission_problem(justification: str, days: int, max_days: int, min_justification_chars: int) -> str | None:
    """What is wrong with a request's justification or length, or None."""
    problem = justification_problem(justification, min_justification_chars)
    if problem:
        return problem
    if days < 1:
        return "ask for at least 1 day"
    if days > max_days:
        return f"at most {max_days} days may be requested (approvals.max_validity_days)"
    return None


def parse_days(text: str) -> int | None:
    text = text.strip()
    return int(text) if text.isdigit() and len(text) <= 5 else None


def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        address = ipaddress.ip_address(text.strip().strip("[]"))
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def client_address(peer: str | None, forwarded_for: Iterable[str], trusted_proxies: Iterable[str]) -> str | None:
    """The browser's address as the portal may believe it.

    The peer itself, unless the peer is a trusted proxy (Squid in front of the portal): then the last
    X-Forwarded-For hop, which is what that proxy appended. Earlier hops are whatever the browser sent and
    prove nothing, so they are never used.
    """
    address = _address(peer) if peer else None
    if address is None:
        return None
    networks = [ipaddress.ip_network(item, strict=False) for item in trusted_proxies]
    if any(address.version == network.version and address in network for network in networks):
        hops = [hop.strip() for value in forwarded_for for hop in value.split(",") if hop.strip()]
        if hops:
            forwarded = _address(hops[-1])
            return str(forwarded) if forwarded is not None else None
    return str(address)


def same_address(first: str | None, second: str | None) -> bool:
    one, other = _address(first or ""), _address(second or "")
    return one is not None and one == other


def check_decision(request: AccessRequest, by: str) -> None:
    """Refuse deciding a request that is already decided, or one's own."""
    if request.status is not RequestStatus.PENDING:
        raise RequestError(f"request {request.id} is already {request.status} by {request.decided_by}")
    if by == request.user:
        raise RequestError(f"{by!r} made request {request.id} and may not decide it: another approver must")


def grant_for(request: AccessRequest, by: str, actor: str, days: int | None, now: datetime) -> GrantSpec:
    """The ordinary approval a request becomes: the requester, the service asked for (every host of it) or, for a
    request without one, the whole category; the days asked or given."""
    return GrantSpec(
        subject_kind=SubjectKind.USER,
        subject=request.user,
        category=None if request.service else request.category,
        service=request.service or None,
        host=None,
        approver=by,
        justification=request.justification,
        created_by=actor,
        valid_from=now,
        valid_until=now + timedelta(days=days if days is not None else request.days),
        ticket=request.id,
    )


def approved(
    request: AccessRequest, by: str, now: datetime, note: str, approval_id: str, until: datetime
) -> AccessRequest:
    return replace(
        request,
        status=RequestStatus.APPROVED,
        decided_by=by,
        decided_at=now,
        note=note,
        approval_id=approval_id,
        valid_until=until,
    )


def denied(request: AccessRequest, by: str, now: datetime, note: str) -> AccessRequest:
    return replace(request, status=RequestStatus.DENIED, decided_by=by, decided_at=now, note=note)
