from datetime import UTC, datetime, timedelta

from policy.approvals import Approval
from policy.categories import NO_MATCH, CategoryMatch
from policy.decision import Action, Reason, decide

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
RESTRICTED = frozenset({"webmail", "cloud-storage", "web-im"})
WEBMAIL = CategoryMatch("mail.google.com", frozenset({"webmail"}))


def approval(id: str, category: str = "webmail", days: int = 1, created: int = 0, **extra: object) -> Approval:
    return Approval(
        id=id, user="alice", category=category, approver="head", reason="need",
        created_at=NOW - timedelta(days=10 - created), expires_at=NOW + timedelta(days=days), **extra,  # type: ignore[arg-type]
    )


def test_unrestricted_and_uncategorised_pass() -> None:
    assert decide(NO_MATCH, RESTRICTED, [], NOW).action is Action.PASS
    news = CategoryMatch("news.example", frozenset({"news"}))
    decision = decide(news, RESTRICTED, [], NOW)
    assert (decision.action, decision.reason, decision.category) == (Action.PASS, Reason.NOT_RESTRICTED, "news")


def test_restricted_without_approval_blocks() -> None:
    decision = decide(WEBMAIL, RESTRICTED, [], NOW)
    assert (decision.action, decision.reason, decision.category) == (Action.BLOCK, Reason.NO_APPROVAL, "webmail")
    assert decision.matched_entry == "mail.google.com"


def test_valid_approval_passes_and_is_named() -> None:
    decision = decide(WEBMAIL, RESTRICTED, [approval("A1")], NOW)
    assert (decision.action, decision.reason, decision.approval_id) == (Action.PASS, Reason.APPROVED, "A1")


def test_approval_for_another_category_does_not_count() -> None:
    decision = decide(WEBMAIL, RESTRICTED, [approval("A1", category="web-im")], NOW)
    assert decision.reason is Reason.NO_APPROVAL


def test_expired_and_revoked_explain_the_block() -> None:
    expired = approval("A1", days=-1)
    assert decide(WEBMAIL, RESTRICTED, [expired], NOW).reason is Reason.APPROVAL_EXPIRED
    assert decide(WEBMAIL, RESTRICTED, [expired], NOW).approval_id == "A1"
    revoked = approval("A2", created=1).revoked(by="head", at=NOW, reason="done")
    decision = decide(WEBMAIL, RESTRICTED, [expired, revoked], NOW)
    assert (decision.reason, decision.approval_id) == (Reason.APPROVAL_REVOKED, "A2")
    renewed = approval("A3", created=2)
    assert decide(WEBMAIL, RESTRICTED, [expired, revoked, renewed], NOW).approval_id == "A3"


def test_expiry_is_exclusive() -> None:
    exact = approval("A1", days=0)
    assert decide(WEBMAIL, RESTRICTED, [exact], NOW).action is Action.BLOCK


def test_host_in_two_restricted_categories_needs_both() -> None:
    both = CategoryMatch("x.example", frozenset({"webmail", "cloud-storage"}))
    decision = decide(both, RESTRICTED, [approval("A1")], NOW)
    assert (decision.action, decision.category) == (Action.BLOCK, "cloud-storage")
    ok = decide(both, RESTRICTED, [approval("A1"), approval("A2", category="cloud-storage")], NOW)
    assert ok.action is Action.PASS


def test_approval_json_round_trip() -> None:
    original = approval("A9").revoked(by="head", at=NOW, reason="no longer needed · 不再需要")
    assert Approval.from_json(original.to_json()) == original
