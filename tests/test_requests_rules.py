"""The pure rules of access requests: whose address to believe, what a request must say, who may decide it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from policy.approvals import SubjectKind
from policy.directory import DirectoryError, Person, parse_directory_csv
from policy.requests import (
    AccessRequest,
    RequestError,
    RequestStatus,
    approved,
    check_decision,
    client_address,
    denied,
    grant_for,
    parse_days,
    same_address,
    submission_problem,
)

NOW = datetime(2026, 11, 28, 9, 0, tzinfo=UTC)
LOOPBACK = ("127.0.0.1/32", "::1/128")


def request(**changes: object) -> AccessRequest:
    values: dict[str, object] = {
        "id": "R7",
        "user": "alice",
        "client_ip": "10.1.2.3",
        "category": "webmail",
        "host": "mail.google.com",
        "justification": "Liaison with the Singapore office, which uses Gmail",
        "days": 30,
        "created_at": NOW,
        "department": "Finance",
        "approvers": ("dfin", "hfin"),
        "key": "secret-key",
    }
    values.update(changes)
    return AccessRequest(**values)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("peer", "forwarded", "expected"),
    [
        ("10.1.2.3", [], "10.1.2.3"),  # straight from the browser
        ("10.1.2.3", ["10.9.9.9"], "10.1.2.3"),  # not a trusted proxy: its header proves nothing
        ("127.0.0.1", ["10.1.2.3"], "10.1.2.3"),  # through Squid on this host
        ("127.0.0.1", ["6.6.6.6, 10.1.2.3"], "10.1.2.3"),  # the browser's own claim comes first, ignored
        ("127.0.0.1", ["6.6.6.6", "10.1.2.3"], "10.1.2.3"),  # several header lines: the last hop
        ("127.0.0.1", [], "127.0.0.1"),
        ("127.0.0.1", ["garbage"], None),  # a trusted proxy that says nonsense: no address at all
        ("::ffff:10.1.2.3", [], "10.1.2.3"),  # IPv4-mapped IPv6 compares as IPv4
        ("::1", ["2001:db8::5"], "2001:db8::5"),
        (None, ["10.1.2.3"], None),
    ],
)
def test_client_address_believes_forwarded_for_only_from_trusted_proxies(
    peer: str | None, forwarded: list[str], expected: str | None
) -> None:
    assert client_address(peer, forwarded, LOOPBACK) == expected


def test_same_address_normalises_and_never_matches_nothing() -> None:
    assert same_address("10.1.2.3", "::ffff:10.1.2.3")
    assert same_address("2001:db8::1", "2001:0db8:0:0::1")
    assert not same_address("10.1.2.3", "10.1.2.4")
    assert not same_address(None, None)
    assert not same_address("", "")


def test_a_request_must_state_a_need_and_stay_within_the_longest_validity() -> None:
    good = "Liaison with the Singapore office, which uses Gmail"
    assert submission_problem(good, 30, 180, 20) is None
    assert submission_problem(good, 180, 180, 20) is None
    assert "at most 180 days" in (submission_problem(good, 181, 180, 20) or "")
    assert "at least 1 day" in (submission_problem(good, 0, 180, 20) or "")
    assert "placeholder" in (submission_problem("test", 30, 180, 20) or "")
    assert "at least 20 characters" in (submission_problem("need gmail now", 30, 180, 20) or "")
    assert parse_days(" 30 ") == 30
    assert parse_days("-3") is None and parse_days("3.5") is None and parse_days("") is None
    assert parse_days("9" * 20) is None


def test_nobody_decides_their_own_request_or_one_already_decided() -> None:
    pending = request()
    check_decision(pending, "hfin")
    with pytest.raises(RequestError, match="may not decide it"):
        check_decision(pending, "alice")
    done = denied(pending, "hfin", NOW, "no")
    with pytest.raises(RequestError, match="already denied by hfin"):
        check_decision(done, "dfin")


def test_approving_makes_a_personal_category_approval_for_the_days_asked_or_given() -> None:
    pending = request()
    grant = grant_for(pending, "hfin", "it.admin", None, NOW)
    assert grant.subject_kind is SubjectKind.USER and grant.subject == "alice"
    assert grant.category == "webmail" and grant.host is None
    assert grant.approver == "hfin" and grant.created_by == "it.admin" and grant.ticket == "R7"
    assert grant.valid_until - grant.valid_from == timedelta(days=30)
    assert grant_for(pending, "hfin", "it.admin", 7, NOW).valid_until == NOW + timedelta(days=7)
    after = approved(pending, "hfin", NOW, "ok", "A3", NOW + timedelta(days=30))
    assert after.status is RequestStatus.APPROVED and after.approval_id == "A3" and after.decided_by == "hfin"


def test_a_request_round_trips_through_json_and_keeps_its_key_out_of_the_public_record() -> None:
    item = approved(request(client_ip=None), "hfin", NOW, "ok", "A3", NOW + timedelta(days=30))
    assert AccessRequest.from_json(item.to_json()) == item
    assert "key" not in item.to_record(with_key=False)
    assert item.open_key == "alice\twebmail\tmail.google.com"


def test_the_directory_takes_an_optional_email_column() -> None:
    with_email = "user,department,heads,email\nhfin,Finance,Finance,hfin@example.gov\nbob,Finance,,\n"
    hfin, bob = parse_directory_csv(with_email.splitlines())
    assert hfin.email == "hfin@example.gov" and bob.email == ""
    assert Person.from_json(hfin.to_json()) == hfin
    assert Person.from_json('{"user": "old", "department": "IT"}').email == ""  # stored before the column
    (plain,) = parse_directory_csv("user,department\ncarol,IT\n".splitlines())
    assert plain.email == ""
    with pytest.raises(DirectoryError, match="line 2: invalid email"):
        parse_directory_csv("user,department,email\nx,IT,not-an-address\n".splitlines())
