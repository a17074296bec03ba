"""The filtering decision: a pure function of what is known about one request.

No I/O here: the store gathers the facts, this module judges them, so every rule is testable with plain data.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import datetime
from enum import StrEnum
from functools import lru_cache

from .approvals import SUBJECT_RANK, Approval, OverduePolicy, State
from .categories import PROTECTED, CategoryMatch
from .state import Exemption, PolicyState


class Action(StrEnum):
    PASS = "pass"
    BLOCK = "block"
    WOULD_BLOCK = "would-block"  # passed in `monitor` mode: the block it would have been (policy.modes)
    CAUTION = "caution"  # the `caution` mode's interstitial page, with its "continue"
    CONTINUED = "continued"  # passed in `caution` mode on the person's "continue" (a grace)


ANSWERED_WITH_A_PAGE = frozenset({Action.BLOCK, Action.CAUTION})


class Reason(StrEnum):
    NOT_RESTRICTED = "not-restricted"
    ALLOW_LISTED = "allow-listed"
    EXEMPT = "exempt"
    APPROVED = "approved"
    NO_APPROVAL = "no-approval"
    APPROVAL_EXPIRED = "approval-expired"
    APPROVAL_REVOKED = "approval-revoked"
    APPROVAL_SUSPENDED = "approval-suspended"
    NOT_PERMITTED = "not-permitted"  # a forbidden category: no approval or exemption opens it
    POLICY_UNAVAILABLE = "policy-unavailable"  # not from judge: the server has no policy loaded yet (fails closed)
    BAD_REQUEST = "bad-request"  # the request's destination cannot be told (no host, two hosts): never judged, blocked
    PROTECTED = "protected"  # a protected host (policy/data/protected.txt, policy.protected_hosts): no list blocks it
    # passed with the vendor's tenant-restriction header: the organisation's own accounts only (policy.tenants)
    TENANT_RESTRICTED = "tenant-restricted"


@dataclass(frozen=True, slots=True)
class Decision:
    action: Action
    reason: Reason
    category: str | None = None  # the restricted category that decided it, if any
    matched_entry: str | None = None  # the list entry that matched the host
    approval_id: str | None = None  # the approval that let it pass, or the lapsed one behind a block
    rule_id: str | None = None  # the URL rule that applied, if any
    exemption_id: str | None = None  # the exemption that let it pass
    approval_scope: str | None = None  # e.g. "group finance-travel, host web.whatsapp.com"
    review_overdue: bool = False  # passed on an approval whose review is overdue (on_review_overdue: warn)
    service: str | None = None  # the catalogue service the host belongs to, when it is a restricted one
    tenant: str | None = None  # the vendor whose tenant-restriction headers go on the request (policy.tenants)
    mode: str | None = None  # the roll-out mode that decided a block an approval could lift (policy.modes)
    mode_by: str | None = None  # the setting that chose that mode: "department finance", "default"

    @property
    def blocked(self) -> bool:
        """Whether the answer is a page instead of the request: a block, or a caution page."""
        return self.action in ANSWERED_WITH_A_PAGE


_LAPSED = {
    State.REVOKED: Reason.APPROVAL_REVOKED,
    State.EXPIRED: Reason.APPROVAL_EXPIRED,
    State.SUSPENDED: Reason.APPROVAL_SUSPENDED,
}


BAD_REQUEST = Decision(Action.BLOCK, Reason.BAD_REQUEST)


@dataclass(frozen=True, slots=True)
class DecisionSettings:
    """The configuration the decision depends on, built once (by the Application) rather than passed piecemeal.

    `restricted` categories pass only with an approval or exemption; `forbidden` ones never pass unless a URL
    rule allows them; `on_review_overdue` says whether an approval whose review is overdue still passes.
    """

    restricted: frozenset[str]
    forbidden: frozenset[str] = frozenset()
    on_review_overdue: OverduePolicy = "suspend"


@dataclass(frozen=True, slots=True)
class RequestFacts:
    """What is known about one request: where it goes and who (as far as the proxy says) sends it."""

    host: str | None
    path: str = "/"
    user: str | None = None
    client_ip: str | None = None


NO_FACTS = RequestFacts(host=None)


def decide(
    match: CategoryMatch,
    approvals: Iterable[Approval],
    settings: DecisionSettings,
    now: datetime,
    facts: RequestFacts = NO_FACTS,
    exemptions: Iterable[Exemption] = (),
    service: str | None = None,
) -> Decision:
    """Pass unless the host is in a restricted category that nothing opens for this request.

    A protected host passes first (`protected`): its entry is the most specific one, so no list governs it.
    A forbidden category blocks next (`not-permitted`): neither an approval nor an exemption opens it.
    For each restricted category of the host (in name order, so the answer is stable): an exemption for the
    client's network opens it; else the most specific valid approval among the candidates (personal before
    group before department before network; a single host before a service before a whole category). The first
    category nothing opens explains the block, with the most recent lapsed approval that would have covered it.
    `service` is the catalogue service of the host: a service-scoped approval covers it in every category.
    """
    if PROTECTED in match.categories:
        return _protected(match.entry)
    banned = match.categories & settings.forbidden
    if banned:
        return Decision(Action.BLOCK, Reason.NOT_PERMITTED, min(banned), match.entry, service=service)
    gated_set = match.categories & settings.restricted
    if not gated_set:
        return _not_restricted(match)
    candidates = list(approvals)
    exemptions = tuple(exemptions)
    overdue_policy = settings.on_review_overdue
    passed: Decision | None = None
    for category in sorted(gated_set):
        exemption = next((e for e in exemptions if e.covers(facts.client_ip, category)), None)
        if exemption is not None:
            passed = passed or Decision(
                Action.PASS, Reason.EXEMPT, category, match.entry, exemption_id=exemption.id, service=service
            )
            continue
        covering = [approval for approval in candidates if approval.covers(category, facts.host, service)]
        valid = [approval for approval in covering if approval.passes(now, overdue_policy)]
        if not valid:
            reason, lapsed = _why_not(covering, now, overdue_policy)
            return Decision(Action.BLOCK, reason, category, match.entry, lapsed, service=service)
        best = min(valid, key=_specificity)
        overdue = best.state(now, overdue_policy) is State.REVIEW_OVERDUE
        passed = passed or Decision(
            Action.PASS,
            Reason.APPROVED,
            category,
            match.entry,
            best.id,
            approval_scope=f"{best.subject_kind} {best.subject}, {best.scope()}",
            review_overdue=overdue,
            service=service,
        )
    assert passed is not None
    return passed


def _specificity(approval: Approval) -> tuple[int, int, float]:
    """Personal before group before department before network; host, service, category; then the longest."""
    scope = 0 if approval.host is not None else 1 if approval.service is not None else 2
    return (SUBJECT_RANK[approval.subject_kind], scope, -approval.valid_until.timestamp())


@lru_cache(maxsize=65536)
def _not_restricted(match: CategoryMatch) -> Decision:
    """The same few answers for most traffic: made once each (Decision is immutable)."""
    return Decision(Action.PASS, Reason.NOT_RESTRICTED, min(match.categories, default=None), match.entry)


@lru_cache(maxsize=1024)
def _protected(entry: str | None) -> Decision:
    return Decision(Action.PASS, Reason.PROTECTED, None, entry)


def _why_not(covering: list[Approval], now: datetime, on_review_overdue: OverduePolicy) -> tuple[Reason, str | None]:
    """Explain a missing approval with the most recently created lapsed one, if there was any."""
    lapsed = [a for a in covering if a.state(now, on_review_overdue) in _LAPSED]
    if not lapsed:
        return Reason.NO_APPROVAL, None
    latest = max(lapsed, key=lambda approval: approval.created_at)
    return _LAPSED[latest.state(now, on_review_overdue)], latest.id


def judge(state: PolicyState, facts: RequestFacts, settings: DecisionSettings, now: datetime) -> Decision:
    """The whole decision for one request from in-memory policy: URL rules first, then the category lists.

    An allow rule beats every category, forbidden ones included; a category rule replaces the list's
    categories for its path. A protected host (its entry, the most specific, is the `@protected`
    pseudo-category) then passes before any category, forbidden ones included: one set look-up, no extra
    walk. A request with no host is blocked (`bad-request`): no rule, approval or exemption can open a
    destination nobody can name.
    """
    host = facts.host
    if not host:  # no destination: nothing can be matched, so nothing can be known to be unrestricted
        return BAD_REQUEST
    rule = state.rules.match(host, facts.path)
    if rule is not None and rule.kind == "allow":
        return Decision(Action.PASS, Reason.ALLOW_LISTED, None, rule.describe(), rule_id=rule.id)
    service: str | None = None
    if rule is not None and rule.category:
        match = CategoryMatch(rule.describe(), frozenset((rule.category,)))
    else:  # a list entry, or a service's path entry on a shared host
        match, service = state.match_listed(host, facts.path)
    forbidden = settings.forbidden
    if PROTECTED in match.categories:
        decision = _protected(match.entry)
    elif not (match.categories & settings.restricted) and not (forbidden and match.categories & forbidden):
        decision = _not_restricted(match)
    else:
        candidates = state.candidates(facts.user, facts.client_ip)
        service = service or state.services.service_of(host)
        decision = decide(match, candidates, settings, now, facts, state.exemptions, service)
    return replace(decision, rule_id=rule.id) if rule is not None else decision
