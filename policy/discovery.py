"""Discovery: who used which restricted service while it was not yet enforced, and how often.

In `monitor` and `caution` mode each would-be block is a sighting: the kind (`would-block`, `caution`,
`continued`), the person's department, the person, the catalogue service (or none), the category and the host.
Workers count sightings per day in memory and flush them in batches (`icap_server.service.discovery`); this
module turns the stored counts into the rows a head works through before switching to `enforce`. Pure.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime


@dataclass(frozen=True, slots=True)
class Sighting:
    kind: str  # the decision's action: would-block, caution or continued
    department: str  # "" for a person the directory does not know
    user: str  # "" when the proxy named nobody
    service: str  # the catalogue service id, "" when the host is none's
    category: str
    host: str

    def to_field(self) -> str:
        return json.dumps([self.kind, self.department, self.user, self.service, self.category, self.host])

    @classmethod
    def from_field(cls, text: str) -> Sighting:
        kind, department, user, service, category, host = json.loads(text)
        return cls(kind, department, user, service, category, host)


@dataclass(frozen=True, slots=True)
class DiscoveryCount:
    """One sighting's count on one day (in the policy's time zone), and when it was last seen."""

    day: date
    sighting: Sighting
    count: int
    last: datetime


@dataclass(frozen=True, slots=True)
class DiscoveryRow:
    """One person and one service (or category, for a host that is no service's) in one department."""

    department: str
    user: str
    service: str
    category: str
    would_block: int
    caution: int
    continued: int
    total: int
    hosts: tuple[str, ...]
    first_day: date
    last_seen: datetime


def summarise(
    counts: Iterable[DiscoveryCount], department: str | None = None, since: date | None = None
) -> list[DiscoveryRow]:
    """Rows per (department, person, service, category), by department, service, most use first, person."""
    groups: dict[tuple[str, str, str, str], list[DiscoveryCount]] = {}
    for item in counts:
        sighting = item.sighting
        if (department is not None and sighting.department != department) or (since and item.day < since):
            continue
        key = (sighting.department, sighting.user, sighting.service, sighting.category)
        groups.setdefault(key, []).append(item)
    rows = []
    for (dept, user, service, category), items in groups.items():
        by_kind = {kind: sum(i.count for i in items if i.sighting.kind == kind) for kind in KINDS}
        rows.append(
            DiscoveryRow(
                dept,
                user,
                service,
                category,
                by_kind["would-block"],
                by_kind["caution"],
                by_kind["continued"],
                sum(by_kind.values()),
                tuple(sorted({i.sighting.host for i in items})),
                min(i.day for i in items),
                max(i.last for i in items),
            )
        )
    return sorted(rows, key=lambda r: (r.department, r.service or r.category, -r.total, r.user))


KINDS = ("would-block", "caution", "continued")
