"""The typed change messages: every kind survives encode -> decode, and a bad message is an error, not a guess."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from policy.approvals import Approval, SubjectKind
from policy.rules import Rule
from policy.state import Exemption
from policy.store import (
    ApprovalsReloaded,
    ApprovalsSaved,
    CategoriesSwitched,
    Change,
    ChangeError,
    DirectoryChanged,
    ExemptionsChanged,
    HostsAdded,
    RulesChanged,
    StoreInitialised,
    StoreReset,
)
from policy.store.changes import decode, encode

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)


def approval(approval_id: str, subject: str = "alice") -> Approval:
    return Approval(
        id=approval_id, subject_kind=SubjectKind.USER, subject=subject, category="webmail", host=None,
        department="Finance", approver="hfin", justification="Liaison with the overseas office",
        created_by="admin", created_at=NOW, valid_from=NOW, valid_until=NOW + timedelta(days=30),
        review_due=NOW + timedelta(days=20),
    )


EXAMPLES: list[Change] = [
    HostsAdded(version=7, category="webmail", hosts=("mail.example", "10.0.0.1")),
    CategoriesSwitched(version=7, categories=("cloud-storage", "webmail")),
    ApprovalsSaved(version=7, approvals=(approval("A1"), approval("A2", "bob").revoked("hfin", NOW, "left"))),
    ApprovalsReloaded(version=7),
    DirectoryChanged(version=7),
    ExemptionsChanged(
        version=7,
        exemptions=(Exemption("E1", "10.1.0.0/16", frozenset({"webmail"}), "devices"), Exemption("E2", "::1")),
    ),
    RulesChanged(
        version=7,
        rules=(Rule("R1", "allow", "intranet.example"), Rule("R2", "category", "x.example", "/mail", "webmail")),
    ),
    StoreInitialised(version=7, epoch="0123456789abcdef"),
    StoreReset(version=7, epoch="fedcba9876543210"),
]


@pytest.mark.parametrize("change", EXAMPLES, ids=lambda change: type(change).__name__)
def test_every_change_survives_encode_and_decode(change: Change) -> None:
    text = encode(change)
    assert "version" not in json.loads(text)  # the publishing script prefixes the version
    assert json.loads(text)["kind"] == change.kind
    assert decode(f"7 {text}") == change
    assert decode(f"7 {text}".encode()) == change


def test_the_version_comes_from_the_prefix() -> None:
    change = decode("42 " + encode(DirectoryChanged()))
    assert change == DirectoryChanged(version=42)


def test_the_kinds_are_distinct() -> None:
    assert len({change.kind for change in EXAMPLES}) == len(EXAMPLES)


@pytest.mark.parametrize(
    "message",
    [
        "",
        "7",
        "7 not json",
        "seven " + encode(DirectoryChanged()),
        '7 {"kind": "no-such-kind"}',
        '7 {"category": "webmail"}',
        "7 [1, 2]",
        '7 {"kind": ["hosts"]}',
        '7 {"kind": "hosts", "category": "webmail"}',
        '7 {"kind": "hosts", "category": "webmail", "hosts": "mail.example"}',
        '7 {"kind": "hosts", "category": 1, "hosts": []}',
        '7 {"kind": "approvals", "approvals": ["{}"]}',
        '7 {"kind": "rules", "rules": [{"id": "R1"}]}',
        '7 {"kind": "approvals", "ids": ["A1"]}',  # the untyped announcement before typed changes
    ],
)
def test_an_unknown_or_malformed_message_is_a_change_error(message: str) -> None:
    with pytest.raises(ChangeError):
        decode(message)
