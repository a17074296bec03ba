"""The filtering decision: a pure function of what is known about one request.

No I/O here: the store gathers the facts, this module judges them, so every rule is testable with plain data.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import datetime
from enum import StrEnum
from functools import lru_cache

from .approvals import Approval, ApprovalStatus
from .categories import NO_MATCH, CategoryMatch
from .state import PolicyState


class Action(StrEnum):
    PASS = "pass"
    BLOCK = "block"


class Reason(StrEnum):
    NOT_RESTRICTED = "not-restricted"
    ALLOW_LISTED = "allow-listed"
    APPROVED = "approved"
    NO_APPROVAL = "no-approval"
    APPROVAL_EXPIRED = "approval-expired"
    APPROVAL_REVOKED = "approval-revoked"


@dataclass(frozen=True, slots=True)
class Decision:
    action: Action
    reason: Reason
    category: str | None = None  # the restricted category that decided it, if any
    matched_entry: str | None = None  # the list entry that matched the host
    approval_id: str | None = None  # the approval that let it pass, or the lapsed one behind a block
    rule_id: str | None = None  # the URL rule that applied, if any

    @property
    def blocked(self) -> bool:
        return self.action is Action.BLOCK


def decide(
    match: CategoryMatch,
    restricted: frozenset[str],
    approvals: Iterable[Approval],
    now: datetime,
) -> Decision:
    """Pass unless the host is in a restricted category the user holds no valid approval for.

    A host in several restricted categories needs an approval for each; the first one missing (in name
    order, so the answer is stable) explains the block.
    """
    gated_set = match.categories & restricted
    if not gated_set:
        return _not_restricted(match)
    gated = sorted(gated_set)
    by_category: dict[str, list[Approval]] = {}
    for approval in approvals:
        by_category.setdefault(approval.category, []).append(approval)
    passed_by: Approval | None = None
    for category in gated:
        held = by_category.get(category, [])
        valid = [approval for approval in held if approval.is_valid(now)]
        if not valid:
            reason, lapsed = _why_not(held)
            return Decision(Action.BLOCK, reason, category, match.entry, lapsed)
        passed_by = max(valid, key=lambda approval: approval.expires_at)
    assert passed_by is not None
    return Decision(Action.PASS, Reason.APPROVED, gated[0], match.entry, passed_by.id)


@lru_cache(maxsize=65536)
def _not_restricted(match: CategoryMatch) -> Decision:
    """The same few answers for most traffic: made once each (Decision is immutable)."""
    return Decision(Action.PASS, Reason.NOT_RESTRICTED, min(match.categories, default=None), match.entry)


def _why_not(held: list[Approval]) -> tuple[Reason, str | None]:
    """Explain a missing approval with the most recent lapsed one, if the user ever had any."""
    if not held:
        return Reason.NO_APPROVAL, None
    latest = max(held, key=lambda approval: approval.created_at)
    if latest.status is ApprovalStatus.REVOKED:
        return Reason.APPROVAL_REVOKED, latest.id
    return Reason.APPROVAL_EXPIRED, latest.id


def judge(
    state: PolicyState, host: str | None, path: str, user: str | None, restricted: frozenset[str], now: datetime
) -> Decision:
    """The whole decision for one request from in-memory policy: URL rules first, then the category lists.

    An allow rule beats every category; a category rule replaces the list's categories for its path.
    """
    rule = state.rules.match(host, path) if host else None
    if rule is not None and rule.kind == "allow":
        return Decision(Action.PASS, Reason.ALLOW_LISTED, None, rule.describe(), rule_id=rule.id)
    if rule is not None and rule.category:
        match = CategoryMatch(rule.describe(), frozenset((rule.category,)))
    else:
        match = state.categories.match(host) if host else NO_MATCH
    decision = decide(match, restricted, state.approvals_of(user), now)
    return replace(decision, rule_id=rule.id) if rule is not None else decision
