"""Readiness: how many people a department would cut off if it switched to `enforce` tomorrow, per service.

From the discovery rows (who used what in monitor or caution mode), the people whose use would be blocked
under `enforce` now (`blocked`, judged by the caller with today's approvals and exemptions), and the same
with every pending access request approved: a person with a pending request for that service (or, for a host
that is no service's, that category) counts as let through. Pure: the caller judges, this module counts.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from .discovery import DiscoveryRow
from .requests import AccessRequest, RequestStatus


@dataclass(frozen=True, slots=True)
class ReadinessRow:
    department: str
    service: str  # "" for hosts that are no service's: then the category names them
    category: str
    people_seen: int  # people who used it in monitor or caution mode
    blocked: int  # of them, blocked if enforced now
    blocked_if_pending_approved: int  # the same, with every pending request approved
    pending: int  # the blocked ones with a pending request


def readiness(
    rows: Iterable[DiscoveryRow], blocked: Callable[[DiscoveryRow], bool], requests: Iterable[AccessRequest]
) -> list[ReadinessRow]:
    asked = {
        (request.user, request.service or request.category)
        for request in requests
        if request.status is RequestStatus.PENDING
    }
    groups: dict[tuple[str, str, str], dict[str, bool]] = {}
    for row in rows:
        people = groups.setdefault((row.department, row.service, row.category), {})
        people[row.user] = people.get(row.user, False) or blocked(row)
    result = []
    for (department, service, category), people in sorted(groups.items()):
        cut_off = {user for user, is_blocked in people.items() if is_blocked}
        waiting = {user for user in cut_off if (user, service or category) in asked}
        result.append(
            ReadinessRow(department, service, category, len(people), len(cut_off), len(cut_off - waiting), len(waiting))
        )
    return result
