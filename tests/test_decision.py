from dataclasses import replace
from datetime import UTC, datetime, timedelta

from policy.approvals import Approval, Review, State, SubjectKind
from policy.categories import NO_MATCH, CategoryMatch
from policy.decision import Action, DecisionSettings, Reason, RequestFacts, decide, judge
from policy.directory import Directory, Person
from policy.state import ApprovalIndex, Exemption, PolicyState

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
RESTRICTED = frozenset({"webmail", "cloud-storage", "web-im"})
WEBMAIL = CategoryMatch("mail.google.com", frozenset({"webmail"}))
SETTINGS = DecisionSettings(RESTRICTED)


def approval(
    id: str, category: str | None = "webmail", days: int = 30, created: int = 0, *,
    kind: SubjectKind = SubjectKind.USER, subject: str = "alice", host: str | None = None, review_in: int = 20,
) -> Approval:
    return Approval(
        id=id, subject_kind=kind, subject=subject, category=None if host else category, host=host,
        department="Finance", approver="hfin", justification="Liaison with the overseas office",
        created_by="admin", created_at=NOW - timedelta(days=10 - created), valid_from=NOW - timedelta(days=10),
        valid_until=NOW + timedelta(days=days), review_due=NOW + timedelta(days=review_in),
    )


def test_unrestricted_and_uncategorised_pass() -> None:
    assert decide(NO_MATCH, [], SETTINGS, NOW).action is Action.PASS
    news = CategoryMatch("news.example", frozenset({"news"}))
    decision = decide(news, [], SETTINGS, NOW)
    assert (decision.action, decision.reason, decision.category) == (Action.PASS, Reason.NOT_RESTRICTED, "news")


def test_restricted_without_approval_blocks() -> None:
    decision = decide(WEBMAIL, [], SETTINGS, NOW)
    assert (decision.action, decision.reason, decision.category) == (Action.BLOCK, Reason.NO_APPROVAL, "webmail")
    assert decision.matched_entry == "mail.google.com"


def test_valid_approval_passes_and_is_named() -> None:
    decision = decide(WEBMAIL, [approval("A1")], SETTINGS, NOW, RequestFacts("mail.google.com"))
    assert (decision.action, decision.reason, decision.approval_id) == (Action.PASS, Reason.APPROVED, "A1")
    assert decision.approval_scope == "user alice, category webmail"


def test_approval_for_another_category_does_not_count() -> None:
    assert decide(WEBMAIL, [approval("A1", category="web-im")], SETTINGS, NOW).reason is Reason.NO_APPROVAL


def test_expired_revoked_and_suspended_explain_the_block() -> None:
    expired = approval("A1", days=-1)
    assert decide(WEBMAIL, [expired], SETTINGS, NOW).reason is Reason.APPROVAL_EXPIRED
    revoked = approval("A2", created=1).revoked(by="hfin", at=NOW, reason="done")
    decision = decide(WEBMAIL, [expired, revoked], SETTINGS, NOW)
    assert (decision.reason, decision.approval_id) == (Reason.APPROVAL_REVOKED, "A2")
    suspended = approval("A3", created=2).suspended(by="hfin", at=NOW, reason="pending review")
    assert decide(WEBMAIL, [expired, revoked, suspended], SETTINGS, NOW).reason is Reason.APPROVAL_SUSPENDED
    renewed = approval("A4", created=3)
    assert decide(WEBMAIL, [expired, revoked, suspended, renewed], SETTINGS, NOW).approval_id == "A4"


def test_expiry_is_exclusive_and_pending_does_not_pass() -> None:
    assert decide(WEBMAIL, [approval("A1", days=0)], SETTINGS, NOW).action is Action.BLOCK
    future = replace(approval("A2"), valid_from=NOW + timedelta(days=1))
    assert future.state(NOW) is State.PENDING
    assert decide(WEBMAIL, [future], SETTINGS, NOW).action is Action.BLOCK


def test_review_overdue_suspends_or_warns() -> None:
    overdue = approval("A1", review_in=-1)
    assert overdue.state(NOW, "suspend") is State.SUSPENDED
    blocked = decide(WEBMAIL, [overdue], DecisionSettings(RESTRICTED, on_review_overdue="suspend"), NOW)
    assert (blocked.action, blocked.reason) == (Action.BLOCK, Reason.APPROVAL_SUSPENDED)
    warned = decide(WEBMAIL, [overdue], DecisionSettings(RESTRICTED, on_review_overdue="warn"), NOW)
    assert (warned.action, warned.review_overdue) == (Action.PASS, True)
    kept = overdue.reviewed(Review("hfin", NOW, "keep", "still needed"), NOW + timedelta(days=90))
    assert kept.state(NOW) is State.ACTIVE and kept.review_due == kept.valid_until  # capped at the end


def test_host_in_two_restricted_categories_needs_both() -> None:
    both = CategoryMatch("x.example", frozenset({"webmail", "cloud-storage"}))
    decision = decide(both, [approval("A1")], SETTINGS, NOW)
    assert (decision.action, decision.category) == (Action.BLOCK, "cloud-storage")
    ok = decide(both, [approval("A1"), approval("A2", category="cloud-storage")], SETTINGS, NOW)
    assert ok.action is Action.PASS


def test_host_scope_covers_only_that_service() -> None:
    im = CategoryMatch("whatsapp.com", frozenset({"web-im"}))
    only_whatsapp = approval("A1", host="web.whatsapp.com")
    assert decide(im, [only_whatsapp], SETTINGS, NOW, RequestFacts("web.whatsapp.com")).action is Action.PASS
    assert decide(im, [only_whatsapp], SETTINGS, NOW, RequestFacts("media.web.whatsapp.com")).action is Action.PASS
    assert decide(im, [only_whatsapp], SETTINGS, NOW, RequestFacts("telegram.whatsapp.com")).action is Action.BLOCK


def state_with(*approvals: Approval) -> PolicyState:
    state = PolicyState(version=1)
    state.categories.add("webmail", ["mail.google.com"])
    state.approvals = ApprovalIndex(approvals)
    state.directory = Directory({
        "alice": Person("alice", "Finance", groups=frozenset({"travel"})),
        "bob": Person("bob", "Finance"),
        "carol": Person("carol", "Legal"),
    })
    return state


def test_subjects_user_group_department_network_and_most_specific_wins() -> None:
    by_department = approval("A1", kind=SubjectKind.DEPARTMENT, subject="Finance")
    by_group = approval("A2", kind=SubjectKind.GROUP, subject="travel")
    by_network = approval("A3", kind=SubjectKind.NETWORK, subject="10.20.0.0/16")
    personal = approval("A4")
    state = state_with(by_department, by_group, by_network, personal)

    def who(user: str, ip: str | None = None) -> str | None:
        return judge(state, RequestFacts("mail.google.com", "/", user, ip), SETTINGS, NOW).approval_id

    assert who("alice", "10.20.1.1") == "A4"  # personal beats group, department, network
    assert who("bob") == "A1"  # department
    assert who("carol") is None  # another department
    assert who("carol", "10.20.1.1") == "A3"  # the lab network
    state.approvals.remove("A4")
    assert who("alice") == "A2"  # group beats department
    assert judge(state, RequestFacts("mail.google.com", "/", "dave"), SETTINGS, NOW).blocked  # not in the directory


def test_exempt_network_passes_without_approval() -> None:
    state = state_with()
    state.exemptions = (Exemption("C1", "172.16.0.0/12", frozenset(), "government mobile devices"),)
    decision = judge(state, RequestFacts("mail.google.com", "/", "carol", "172.20.3.4"), SETTINGS, NOW)
    assert (decision.action, decision.reason, decision.exemption_id) == (Action.PASS, Reason.EXEMPT, "C1")
    assert judge(state, RequestFacts("mail.google.com", "/", "carol", "10.0.0.1"), SETTINGS, NOW).blocked
    only_im = (Exemption("E1", "172.16.0.0/12", frozenset({"web-im"})),)
    state.exemptions = only_im
    assert judge(state, RequestFacts("mail.google.com", "/", "carol", "172.20.3.4"), SETTINGS, NOW).blocked


def test_approval_json_round_trip() -> None:
    original = approval("A9", host="web.whatsapp.com").revoked(by="hfin", at=NOW, reason="no longer needed · 不再需要")
    reviewed = replace(original, reviews=(Review("hfin", NOW, "keep", "ok"),), ticket="INC-1")
    assert Approval.from_json(reviewed.to_json()) == reviewed


def test_forbidden_category_blocks_whatever_opens_it_otherwise() -> None:
    forbidden = frozenset({"webmail"})
    strict = DecisionSettings(RESTRICTED, forbidden)
    state = state_with(approval("A1"))
    state.exemptions = (Exemption("C1", "10.0.0.0/8", frozenset(), "mobile devices"),)
    decision = judge(state, RequestFacts("mail.google.com", "/", "alice", "10.1.1.1"), strict, NOW)
    assert (decision.action, decision.reason, decision.category) == (Action.BLOCK, Reason.NOT_PERMITTED, "webmail")
    assert decision.approval_id is None and decision.exemption_id is None
    # Without the forbidden list the same request passes (the exemption, or elsewhere the approval).
    from_lab = RequestFacts("mail.google.com", "/", "alice", "10.1.1.1")
    from_anywhere = RequestFacts("mail.google.com", "/", "alice")
    assert judge(state, from_lab, SETTINGS, NOW).reason is Reason.EXEMPT
    assert judge(state, from_anywhere, SETTINGS, NOW).reason is Reason.APPROVED
    # Forbidden need not be restricted: an unrestricted category is blocked too.
    only_forbidden = DecisionSettings(frozenset(), forbidden)
    assert judge(state, RequestFacts("mail.google.com", "/", "alice", None), only_forbidden, NOW).reason is (
        Reason.NOT_PERMITTED
    )
    assert decide(WEBMAIL, [approval("A1")], strict, NOW).reason is Reason.NOT_PERMITTED
    # Other hosts are untouched.
    assert not judge(state, RequestFacts("example.org", "/", "alice", None), strict, NOW).blocked


def test_allow_rule_beats_a_forbidden_category() -> None:
    from policy.rules import Rule, RuleIndex

    state = state_with()
    state.rules = RuleIndex([Rule("R1", "allow", "mail.google.com", "/a/agency.gov.hk/")])
    forbidden = frozenset({"webmail"})
    strict = DecisionSettings(RESTRICTED, forbidden)
    path = "/a/agency.gov.hk/inbox"
    allowed = judge(state, RequestFacts("mail.google.com", path, "bob", None), strict, NOW)
    assert allowed.reason is Reason.ALLOW_LISTED
    other = judge(state, RequestFacts("mail.google.com", "/mail/", "bob", None), strict, NOW)
    assert other.reason is Reason.NOT_PERMITTED


def test_no_host_is_a_bad_request_block_that_nothing_opens() -> None:
    """A request whose destination cannot be told is never "not restricted": no rule, exemption or approval."""
    from policy.rules import Rule, RuleIndex

    state = PolicyState(version=1)
    state.rules = RuleIndex([Rule(id="R1", kind="allow", host="mail.google.com")])
    state.exemptions = (Exemption(id="E1", network="0.0.0.0/0"),)
    state.approvals.put_many([approval("A1")])
    for host in (None, ""):
        decision = judge(state, RequestFacts(host, "/", "alice", "10.0.0.1"), SETTINGS, NOW)
        assert (decision.action, decision.reason, decision.category) == (Action.BLOCK, Reason.BAD_REQUEST, None)
    assert judge(state, RequestFacts("mail.google.com", "/", "alice"), SETTINGS, NOW).reason is Reason.ALLOW_LISTED
