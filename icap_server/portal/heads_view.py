"""What a head's workspace lists: computed from plain records, so the page and its tests agree on one rule.

- pending: the pending requests of people in the departments the head heads or deputises;
- reviews: their departments' approvals whose next review falls within `portal.expiring_within_days` (or is
  overdue), with the use the filter counted (count, last use);
- expiring: those that end within the same days and are not listed as reviews already (an approval whose
  review is due when it ends needs no review, only a new request);
- active: the departments' other current approvals, so a head can revoke or suspend any of them at once.

Revoked and ended approvals are not listed. Someone who heads or deputises no department sees nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from policy.approvals import Approval
from policy.directory import Directory
from policy.requests import AccessRequest, RequestStatus


@dataclass(frozen=True, slots=True)
class ApprovalRow:
    approval: Approval
    uses: int
    last_used: datetime | None


@dataclass(frozen=True, slots=True)
class HeadsView:
    head: str
    departments: tuple[str, ...]
    pending: tuple[AccessRequest, ...]
    reviews: tuple[ApprovalRow, ...]
    expiring: tuple[ApprovalRow, ...]
    active: tuple[ApprovalRow, ...] = ()

    def only(self, item: str) -> HeadsView:
        """The same view with nothing but one item (a link's page)."""
        return HeadsView(
            self.head,
            self.departments,
            tuple(request for request in self.pending if request.id == item),
            tuple(row for row in self.reviews if row.approval.id == item),
            tuple(row for row in self.expiring if row.approval.id == item),
            tuple(row for row in self.active if row.approval.id == item),
        )


def departments_of(head: str, directory: Directory) -> tuple[str, ...]:
    """The departments a person heads or deputises, as the directory says now."""
    person = directory.person(head)
    return tuple(sorted(person.heads | person.delegates)) if person is not None else ()


def request_department(item: AccessRequest, directory: Directory) -> str:
    """The requester's department now (as deciding checks it), else the one recorded with the request."""
    person = directory.person(item.user)
    return person.department if person is not None else item.department


def build_view(
    head: str,
    directory: Directory,
    requests: Iterable[AccessRequest],
    approvals: Iterable[Approval],
    usage: Mapping[str, tuple[int, datetime | None]],
    now: datetime,
    within_days: int,
) -> HeadsView:
    departments = departments_of(head, directory)
    mine = set(departments)
    pending = tuple(
        item
        for item in requests
        if item.status is RequestStatus.PENDING and request_department(item, directory) in mine
    )
    horizon = now + timedelta(days=within_days)
    reviews: list[ApprovalRow] = []
    expiring: list[ApprovalRow] = []
    active: list[ApprovalRow] = []
    for approval in approvals:
        if approval.department not in mine or approval.revoked_at is not None or approval.valid_until <= now:
            continue
        uses, last_used = usage.get(approval.id, (0, None))
        row = ApprovalRow(approval, uses, last_used)
        if approval.review_due < approval.valid_until and approval.review_due <= horizon:
            reviews.append(row)
        elif approval.valid_until <= horizon:
            expiring.append(row)
        else:
            active.append(row)
    return HeadsView(head, departments, pending, tuple(reviews), tuple(expiring), tuple(active))
