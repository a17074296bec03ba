"""Roll-out modes (issue 14): which mode applies, what each does to a decision, and what never softens."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

import pytest

from icap_server.config import ConfigError
from icap_server.protocol import ICAPConnection
from icap_server.service.application import Application, FixedPolicy
from icap_server.service.modes import configured_modes
from policy.decision import Action, DecisionSettings, Reason, RequestFacts, judge
from policy.directory import Directory, Person
from policy.modes import Grace, GraceIndex, Mode, ModeError, ModeSetting, ModeTable, Scope, grace_target, parse_mode
from policy.rollout import apply_mode
from policy.services import Service
from policy.state import ApprovalIndex, Exemption, PolicyState, ServiceCatalogue
from tests.support.pages import icap_request, load_config_text
from tests.test_decision import approval

NOW = datetime(2026, 12, 2, 10, 0, tzinfo=UTC)
SETTINGS = DecisionSettings(frozenset({"webmail", "web-im"}), forbidden=frozenset({"banned"}))
WHATSAPP = Service("whatsapp", "WhatsApp", "WhatsApp", "web-im", ("web.whatsapp.com",))


def setting(scope: Scope, name: str, mode: Mode) -> ModeSetting:
    return ModeSetting(scope, name, mode)


def state(*stored: ModeSetting) -> PolicyState:
    policy = PolicyState(
        version=3,
        directory=Directory({user: Person(user, department) for user, department in PEOPLE.items()}),
        services=ServiceCatalogue([WHATSAPP]),
        exemptions=(Exemption("E1", "10.9.0.0/16"),),
        modes=ModeTable.build(Mode.ENFORCE, stored),
    )
    policy.categories.add("webmail", ["mail.example"])
    policy.categories.add("web-im", ["web.whatsapp.com"])
    policy.categories.add("banned", ["banned.example"])
    return policy


PEOPLE = {"amy": "finance", "ben": "finance", "cat": "legal"}


def decided(policy: PolicyState, configured: ModeTable, host: str, user: str = "amy", ip: str = "10.0.0.1"):  # type: ignore[no-untyped-def]
    facts = RequestFacts(host, "/", user, ip)
    return apply_mode(judge(policy, facts, SETTINGS, NOW), facts, policy, configured, NOW)


def test_with_nothing_set_everything_is_enforced() -> None:
    decision = decided(state(), ModeTable(), "mail.example")
    assert (decision.action, decision.reason, decision.mode, decision.mode_by) == (
        Action.BLOCK,
        Reason.NO_APPROVAL,
        "enforce",
        "default",
    )


def test_the_department_wins_over_the_service_and_the_category() -> None:
    configured = ModeTable.build(
        Mode.ENFORCE,
        [setting(Scope.CATEGORY, "web-im", Mode.CAUTION), setting(Scope.SERVICE, "whatsapp", Mode.ENFORCE)],
    )
    assert decided(state(), configured, "web.whatsapp.com").mode_by == "service whatsapp"
    stored = setting(Scope.DEPARTMENT, "finance", Mode.MONITOR)
    decision = decided(state(stored), configured, "web.whatsapp.com")
    assert (decision.action, decision.mode, decision.mode_by) == (Action.WOULD_BLOCK, "monitor", "department finance")
    other = decided(state(stored), configured, "web.whatsapp.com", user="cat")  # legal: the service's setting
    assert (other.action, other.mode_by) == (Action.BLOCK, "service whatsapp")
    webmail = decided(state(), configured, "mail.example")  # no setting for webmail: the default
    assert webmail.action is Action.BLOCK and webmail.mode_by == "default"


def test_the_stores_setting_beats_the_config_files_for_the_same_scope() -> None:
    configured = ModeTable.build(Mode.MONITOR, [setting(Scope.DEPARTMENT, "finance", Mode.MONITOR)])
    stored = setting(Scope.DEPARTMENT, "finance", Mode.ENFORCE)
    assert decided(state(stored), configured, "mail.example").action is Action.BLOCK
    assert decided(state(), configured, "mail.example").action is Action.WOULD_BLOCK
    # the config file's default applies where nothing is set (an unknown user has no department)
    assert decided(state(stored), configured, "mail.example", user="nobody").mode_by == "default"
    assert decided(state(stored), configured, "mail.example", user="nobody").action is Action.WOULD_BLOCK


def test_monitor_keeps_the_reason_category_and_service_it_would_have_blocked_with() -> None:
    decision = decided(state(setting(Scope.CATEGORY, "web-im", Mode.MONITOR)), ModeTable(), "web.whatsapp.com")
    assert (decision.action, decision.reason, decision.category, decision.service) == (
        Action.WOULD_BLOCK,
        Reason.NO_APPROVAL,
        "web-im",
        "whatsapp",
    )
    assert not decision.blocked


def test_what_never_softens_in_any_mode() -> None:
    for mode in (Mode.MONITOR, Mode.CAUTION):
        everything = ModeTable(mode)
        banned = decided(state(), everything, "banned.example")
        assert (banned.action, banned.reason, banned.mode) == (Action.BLOCK, Reason.NOT_PERMITTED, None)
        nameless = apply_mode(
            judge(state(), RequestFacts(None), SETTINGS, NOW), RequestFacts(None), state(), everything, NOW
        )
        assert (nameless.action, nameless.reason) == (Action.BLOCK, Reason.BAD_REQUEST)


def test_approvals_and_exemptions_keep_working_in_every_mode() -> None:
    approved = dataclasses.replace(approval("A1"), subject="amy", valid_until=NOW + timedelta(days=9))
    for mode in Mode:
        policy = dataclasses.replace(state(), approvals=ApprovalIndex([approved]))
        policy.categories = state().categories
        assert decided(policy, ModeTable(mode), "mail.example").reason is Reason.APPROVED
        assert decided(state(), ModeTable(mode), "mail.example", ip="10.9.1.1").reason is Reason.EXEMPT


def test_caution_shows_the_page_until_this_person_continues_from_this_address() -> None:
    policy = state(setting(Scope.SERVICE, "whatsapp", Mode.CAUTION))
    page = decided(policy, ModeTable(), "web.whatsapp.com")
    assert (page.action, page.mode) == (Action.CAUTION, "caution") and page.blocked
    target = grace_target("whatsapp", "web.whatsapp.com")
    policy.graces.put(Grace("amy", "10.0.0.1", target, int(NOW.timestamp()) + 600))
    assert decided(policy, ModeTable(), "web.whatsapp.com").action is Action.CONTINUED
    assert decided(policy, ModeTable(), "web.whatsapp.com", user="ben").action is Action.CAUTION  # another person
    assert decided(policy, ModeTable(), "web.whatsapp.com", ip="10.0.0.2").action is Action.CAUTION  # another address
    later = NOW + timedelta(minutes=11)
    facts = RequestFacts("web.whatsapp.com", "/", "amy", "10.0.0.1")
    assert apply_mode(judge(policy, facts, SETTINGS, later), facts, policy, ModeTable(), later).action is Action.CAUTION
    enforced = state(setting(Scope.SERVICE, "whatsapp", Mode.ENFORCE))  # enforce closes every grace at once
    enforced.graces = policy.graces
    assert decided(enforced, ModeTable(), "web.whatsapp.com").action is Action.BLOCK


def test_a_grace_opens_one_service_or_one_host_never_a_category() -> None:
    assert grace_target("whatsapp", "web.whatsapp.com") == "service:whatsapp"
    assert grace_target(None, "mail.example") == "host:mail.example"
    graces = GraceIndex()
    graces.put(Grace("amy", "10.0.0.1", "host:mail.example", 100))
    assert graces.find("amy", "10.0.0.1", "host:other.example", 50) is None
    assert graces.find(None, "10.0.0.1", "host:mail.example", 50) is None
    graces.prune(100)
    assert len(graces) == 0


def test_records_round_trip_and_bad_names_are_refused() -> None:
    record = ModeSetting(Scope.DEPARTMENT, "finance", Mode.CAUTION, "pilot")
    assert ModeSetting.from_json(record.to_json()) == record
    grace = Grace("amy", None, "service:whatsapp", 123)
    assert Grace.from_json(grace.to_json()) == grace
    with pytest.raises(ModeError, match="unknown mode 'warn'"):
        parse_mode("warn")


def test_the_config_section_and_its_errors(tmp_path) -> None:  # type: ignore[no-untyped-def]
    config = load_config_text("modes:\n  default: monitor\n  departments: {finance: caution}\n", tmp_path)
    table = configured_modes(config.modes)
    assert table.default is Mode.MONITOR
    assert table.choose("finance", None, None).mode is Mode.CAUTION
    with pytest.raises(ConfigError, match=r"modes.departments.*'block'"):
        load_config_text("modes:\n  departments: {finance: block}\n", tmp_path)


def answer_of(app: Application, user: str) -> bytes:
    request = icap_request("http://mail.example/inbox", user)
    verdict = app.evaluate(request, NOW)
    conn = ICAPConnection()
    http = request.http_request
    assert http is not None
    conn.receive_data(
        b"REQMOD icap://h/reqmod ICAP/1.0\r\nHost: h\r\nAllow: 204\r\nEncapsulated: req-hdr=0, null-body=%d\r\n\r\n"
        % len(http.raw)
        + http.raw
    )
    conn.next_event()
    conn.next_event()
    return conn.send(app.respond(request, verdict, conn.can_send_204, None, NOW))


def test_the_answer_and_its_headers_say_which_mode_decided(tmp_path) -> None:  # type: ignore[no-untyped-def]
    config = load_config_text("modes:\n  departments: {finance: monitor, legal: caution}\n", tmp_path)
    app = Application(config, FixedPolicy(state()))
    monitored = answer_of(app, "amy")
    assert monitored.startswith(b"ICAP/1.0 204")
    assert b"X-Clearance-Decision: would-block\r\n" in monitored and b"X-Clearance-Mode: monitor\r\n" in monitored
    assert b"X-Clearance-Reason: no-approval\r\n" in monitored
    cautioned = answer_of(app, "cat")
    assert cautioned.startswith(b"ICAP/1.0 200") and b"X-Clearance-Decision: caution\r\n" in cautioned
    assert b"This service needs approval" in cautioned and b"X-Clearance-Mode: caution\r\n" in cautioned
    enforced = answer_of(app, "stranger")
    assert b"X-Clearance-Decision: block\r\n" in enforced and b"X-Clearance-Mode: enforce\r\n" in enforced


def test_a_continue_token_is_its_own_kind_and_binds_what_it_says() -> None:
    from policy.tokens import ContinueClaim, RequestClaim, TokenError, sign, sign_continue, verify, verify_continue

    claim = ContinueClaim(
        "cat", "10.0.0.1", "web-im", "whatsapp", "web.whatsapp.com", "https://web.whatsapp.com/", 2**40
    )
    token = sign_continue(claim, "s3cret")
    back = verify_continue(token, "s3cret")
    assert (back.user, back.client_ip, back.service, back.url) == ("cat", "10.0.0.1", "whatsapp", claim.url)
    with pytest.raises(TokenError):
        verify(token, "s3cret")  # not a request token
    with pytest.raises(TokenError):
        verify_continue(sign(RequestClaim("cat", None, "web-im", "web.whatsapp.com", 2**40), "s3cret"), "s3cret")
    with pytest.raises(TokenError):
        verify_continue(token, "another-secret")
    with pytest.raises(TokenError, match="expired"):
        verify_continue(sign_continue(dataclasses.replace(claim, expires_at=1), "s3cret"), "s3cret")
