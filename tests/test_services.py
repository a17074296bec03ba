"""Services: approvals scoped to a service, the catalogue index, overrides and path entries (issue 10).

Pure: a synthetic catalogue and plain approvals through `judge`, so each rule is shown on its own. The shipped
catalogue through a real server is `tests/test_service_approvals.py`.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from policy.approvals import Approval, SubjectKind
from policy.decision import Action, DecisionSettings, Reason, RequestFacts, judge
from policy.directory import Directory
from policy.lifecycle import ApprovalRules, GrantSpec, LifecycleError, build_approval
from policy.services import PathEntry, Service, ServiceError, parse_catalogue, service_from_record
from policy.state import ApprovalIndex, PolicyState, ServiceCatalogue
from policy.store.changes import ServicesChanged, decode, encode

NOW = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
SETTINGS = DecisionSettings(frozenset({"webmail", "cloud-storage", "web-im"}))

CHAT = Service(
    "chat-a", "Chat A", "聊天甲", "web-im", web=("chat-a.example",), media=("media.chat-a.net",),
    desktop=("desktop.chat-a.example",), ranges=("198.51.100.0/24", "2001:db8:a::/48"),
)
CHAT_B = Service("chat-b", "Chat B", "聊天乙", "web-im", web=("chat-b.example",), media=("cdn.chat-b.net",))
MAIL = Service("mail-a", "Mail A", "郵件甲", "webmail", web=("mail-a.example",))
# Two services on one shared host: /mail is the mail service, the rest of the host the drive.
CLOUD_MAIL = Service("cloud-mail", "Cloud Mail", "雲郵", "webmail", paths=(PathEntry("www.cloud.example", "/mail"),))
CLOUD_DRIVE = Service("cloud-drive", "Cloud Drive", "雲盤", "cloud-storage", web=("cloud.example",))
SHIPPED = (CHAT, CHAT_B, MAIL, CLOUD_MAIL, CLOUD_DRIVE)


def grant(approval_id: str, *, service: str | None = None, category: str | None = None, host: str | None = None,
          days: int = 30) -> Approval:
    return Approval(
        id=approval_id, subject_kind=SubjectKind.USER, subject="alice", category=category, host=host,
        department="Finance", approver="hfin", justification="Liaison with the overseas office", created_by="admin",
        created_at=NOW - timedelta(days=1), valid_from=NOW - timedelta(days=1), valid_until=NOW + timedelta(days=days),
        review_due=NOW + timedelta(days=20), service=service,
    )


def policy(*approvals: Approval, services: tuple[Service, ...] = SHIPPED) -> PolicyState:
    state = PolicyState(version=1, approvals=ApprovalIndex(approvals), services=ServiceCatalogue(services))
    state.services.apply_to(state.categories)
    return state


def verdict(state: PolicyState, host: str, path: str = "/", user: str = "alice") -> tuple[Action, Reason, str | None]:
    decision = judge(state, RequestFacts(host, path, user), SETTINGS, NOW)
    return decision.action, decision.reason, decision.service


CHAT_A_HOSTS = [
    "chat-a.example", "web.chat-a.example", "media.chat-a.net", "x.media.chat-a.net", "desktop.chat-a.example",
    "198.51.100.7", "2001:db8:a::1",
]


def test_a_service_approval_opens_every_host_and_range_of_it_and_nothing_else() -> None:
    state = policy(grant("A1", service="chat-a"))
    for host in CHAT_A_HOSTS:
        assert verdict(state, host) == (Action.PASS, Reason.APPROVED, "chat-a"), host
    for host in ("chat-b.example", "cdn.chat-b.net", "mail-a.example"):
        action, reason, _ = verdict(state, host)
        assert (action, reason) == (Action.BLOCK, Reason.NO_APPROVAL), host
    assert verdict(state, "198.51.101.1")[1] is Reason.NOT_RESTRICTED  # outside the range


def test_without_it_every_host_of_the_service_is_blocked_and_named() -> None:
    state = policy()
    for host in CHAT_A_HOSTS:
        assert verdict(state, host) == (Action.BLOCK, Reason.NO_APPROVAL, "chat-a"), host
    assert verdict(state, "news.example") == (Action.PASS, Reason.NOT_RESTRICTED, None)


def test_a_service_approval_is_for_its_person_only() -> None:
    state = policy(grant("A1", service="chat-a"))
    assert verdict(state, "chat-a.example", user="bob")[:2] == (Action.BLOCK, Reason.NO_APPROVAL)


def test_a_lapsed_service_approval_explains_the_block() -> None:
    state = policy(grant("A1", service="chat-a", days=-1))
    decision = judge(state, RequestFacts("media.chat-a.net", "/", "alice"), SETTINGS, NOW)
    assert (decision.reason, decision.approval_id, decision.service) == (Reason.APPROVAL_EXPIRED, "A1", "chat-a")


def test_host_beats_service_beats_category() -> None:
    state = policy(grant("C", category="web-im", days=90), grant("S", service="chat-a", days=60),
                   grant("H", host="media.chat-a.net", days=30))
    decision = judge(state, RequestFacts("media.chat-a.net", "/", "alice"), SETTINGS, NOW)
    assert (decision.approval_id, decision.approval_scope) == ("H", "user alice, host media.chat-a.net")
    decision = judge(state, RequestFacts("chat-a.example", "/", "alice"), SETTINGS, NOW)
    assert (decision.approval_id, decision.approval_scope) == ("S", "user alice, service chat-a")
    decision = judge(state, RequestFacts("chat-b.example", "/", "alice"), SETTINGS, NOW)
    assert decision.approval_id == "C"


def test_a_service_approval_covers_its_hosts_whatever_category_lists_them() -> None:
    """An import may list a WhatsApp host under a second restricted category: the service approval still opens it."""
    state = policy(grant("A1", service="chat-a"))
    state.categories.add("cloud-storage", ["media.chat-a.net"])
    assert verdict(state, "media.chat-a.net") == (Action.PASS, Reason.APPROVED, "chat-a")
    assert verdict(state, "media.chat-a.net", user="bob")[:2] == (Action.BLOCK, Reason.NO_APPROVAL)


def test_a_path_on_a_shared_host_is_its_own_service() -> None:
    state = policy(grant("A1", service="cloud-drive"))
    assert verdict(state, "www.cloud.example", "/mail/inbox") == (Action.BLOCK, Reason.NO_APPROVAL, "cloud-mail")
    assert verdict(state, "www.cloud.example", "/photos") == (Action.PASS, Reason.APPROVED, "cloud-drive")
    mail = policy(grant("A2", service="cloud-mail"))
    assert verdict(mail, "www.cloud.example", "/mail/") == (Action.PASS, Reason.APPROVED, "cloud-mail")
    assert verdict(mail, "www.cloud.example", "/drive")[:2] == (Action.BLOCK, Reason.NO_APPROVAL)


def test_an_admin_record_overrides_a_shipped_service_by_id() -> None:
    override = Service("chat-a", "Chat A", "聊天甲", "web-im", web=("chat-a.example", "new.chat-a.org"), origin="admin")
    catalogue = ServiceCatalogue((*SHIPPED, override))
    assert catalogue.get("chat-a") is override
    state = policy(grant("A1", service="chat-a"), services=(*SHIPPED, override))
    assert verdict(state, "new.chat-a.org") == (Action.PASS, Reason.APPROVED, "chat-a")
    # entries the override left out stop being the service's, and its category's
    assert verdict(state, "media.chat-a.net", user="bob")[1] is Reason.NOT_RESTRICTED
    assert verdict(state, "198.51.100.7", user="bob")[1] is Reason.NOT_RESTRICTED


def test_a_disabled_shipped_service_stops_blocking_and_is_not_offered() -> None:
    off = Service("chat-b", "Chat B", "聊天乙", "web-im", origin="admin", disabled=True)
    state = policy(services=(*SHIPPED, off))
    assert state.services.get("chat-b") is None
    assert verdict(state, "chat-b.example")[1] is Reason.NOT_RESTRICTED
    assert verdict(state, "chat-a.example")[1] is Reason.NO_APPROVAL


def test_an_entry_of_an_admin_service_names_it_before_a_shipped_one() -> None:
    mine = Service("team-chat", "Team chat", "團隊聊天", "web-im", web=("media.chat-a.net",), origin="admin")
    assert ServiceCatalogue((*SHIPPED, mine)).service_of("x.media.chat-a.net") == "team-chat"


# ---- grants ---------------------------------------------------------------------------------------

RULES = ApprovalRules(
    restricted=frozenset({"web-im", "webmail"}), require_department_head=False, min_justification_chars=0,
    services={"chat-a": "web-im", "drive-x": "cloud-storage"},
)


def spec(**scope: str | None) -> GrantSpec:
    values: dict[str, str | None] = {"category": None, "host": None, **scope}
    return GrantSpec(
        subject_kind=SubjectKind.USER, subject="alice", approver="hfin", justification="Liaison with partners abroad",
        created_by="admin", valid_from=NOW, valid_until=NOW + timedelta(days=30), department="Finance",
        category=values["category"], host=values["host"], service=values.get("service"),
    )


def test_a_grant_names_one_known_service_of_a_restricted_category() -> None:
    approval = build_approval(spec(service="chat-a"), NOW, Directory(), RULES)
    assert (approval.service, approval.category, approval.host, approval.scope()) == (
        "chat-a", None, None, "service chat-a"
    )
    with pytest.raises(LifecycleError, match="unknown service 'chat-z'"):
        build_approval(spec(service="chat-z"), NOW, Directory(), RULES)
    with pytest.raises(LifecycleError, match="'cloud-storage', which is not restricted"):
        build_approval(spec(service="drive-x"), NOW, Directory(), RULES)
    with pytest.raises(LifecycleError, match="exactly one scope"):
        build_approval(spec(service="chat-a", category="web-im"), NOW, Directory(), RULES)


def test_a_service_approval_round_trips_through_its_record() -> None:
    approval = build_approval(spec(service="chat-a"), NOW, Directory(), RULES)
    assert Approval.from_json(approval.to_json()) == approval
    old = approval.to_record()
    del old["service"]  # a record written before services existed
    assert Approval.from_record(old).service is None


# ---- records --------------------------------------------------------------------------------------


def test_a_service_record_is_checked_and_canonical() -> None:
    service = service_from_record({
        "id": "team-chat", "name_en": "Team chat", "name_zh": "團隊聊天", "category": "web-im",
        "web": ["*.Chat.Example."], "ranges": ["203.0.113.9/24"],
        "paths": [{"host": "Shared.Example", "path": "/chat"}],
    })
    assert service.web == ("chat.example",) and service.ranges == ("203.0.113.0/24",)
    assert service.paths == (PathEntry("shared.example", "/chat"),) and service.origin == "admin"
    assert Service.from_json(service.to_json()) == service
    for record, problem in [
        ({"id": "Bad Id"}, "an id is lower-case"),
        ({"web": ["not a host"]}, "web entry 'not a host'"),
        ({"ranges": ["10.0.0.0/33"]}, "range '10.0.0.0/33'"),
        ({"paths": [{"host": "a.example", "path": "chat"}]}, "a path prefix starts with '/'"),
        ({"name_zh": " "}, "name_en and name_zh are both required"),
        ({"category": "Web IM"}, "invalid category name"),
        ({"colour": "red"}, "unknown field"),
    ]:
        base = {"id": "team-chat", "name_en": "Team chat", "name_zh": "團隊聊天", "category": "web-im"}
        with pytest.raises(ServiceError, match=problem):
            service_from_record({**base, **record})


def test_a_catalogue_file_names_itself_and_the_service_at_fault() -> None:
    text = "category: web-im\nservices:\n  - id: ok\n    name_en: OK\n    name_zh: OK\n    web: [ok.example]\n"
    assert [service.id for service in parse_catalogue(text, "x.yaml")] == ["ok"]
    bad = text + "  - id: broken\n    name_en: B\n    name_zh: B\n    media: ['a b']\n"
    with pytest.raises(ServiceError, match=r"^x\.yaml: service 'broken': media entry 'a b'"):
        parse_catalogue(bad, "x.yaml")


def test_the_services_change_carries_the_records() -> None:
    change = ServicesChanged(services=(CHAT,), version=7)
    message = f"7 {encode(change)}"
    decoded = decode(message)
    assert isinstance(decoded, ServicesChanged) and decoded.services[0].web == CHAT.web


def test_every_path_entry_of_a_service_counts() -> None:
    """Two path entries of one service on one host: both are the service's (not the last one only)."""
    shared = "api.shared.example"
    drive = Service("api-drive", "API Drive", "API 雲盤", "cloud-storage",
                    paths=(PathEntry(shared, "/drive/"), PathEntry(shared, "/upload/drive/")))
    state = policy(services=(drive,))
    for path in ("/drive/v3/files", "/upload/drive/v3/files"):
        assert verdict(state, "api.shared.example", path) == (Action.BLOCK, Reason.NO_APPROVAL, "api-drive"), path
    assert verdict(state, "api.shared.example", "/calendar/v3")[1] is Reason.NOT_RESTRICTED
