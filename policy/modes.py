"""Roll-out modes: how a restricted category's block is applied, per department, per service, per category.

A department does not switch a block on for thousands of people on the day it learns who relies on what.
So a block that an approval could lift (`no-approval` and the lapsed reasons) is applied in one of three modes:

- `enforce`: blocked, with the block page (what Clearance always did, and the default);
- `monitor`: passed, and logged and counted as `would-block` with the reason it would have had;
- `caution`: an interstitial page saying what the rule is and that this use is recorded, with a "continue"
  button (a `Grace` for this person and service for some minutes) and the request form.

Which mode applies is the most specific setting for the person and the request: their department's, else the
service's, else the category's, else the default. A setting comes from the config file or from the store
(`clearance modes set`); for the same scope the store's wins, so a run-time change needs no restart.

What never softens, in any mode: a forbidden category (`not-permitted`), a destination nobody can name
(`bad-request`) and no policy at all (`policy-unavailable`). With nothing set anywhere, everything is
`enforce`: an emptied store falls back to the config file's modes, and without those, to blocking.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class Mode(StrEnum):
    ENFORCE = "enforce"
    MONITOR = "monitor"
    CAUTION = "caution"


class Scope(StrEnum):
    """What a mode is set for, in the order a setting wins: the person's department first."""

    DEPARTMENT = "department"
    SERVICE = "service"
    CATEGORY = "category"


PRECEDENCE: tuple[Scope, ...] = (Scope.DEPARTMENT, Scope.SERVICE, Scope.CATEGORY)

# The blocks a mode may soften: the ones an approval would lift. Everything else is always enforced.
SOFTENED = frozenset({"no-approval", "approval-expired", "approval-revoked", "approval-suspended"})


class ModeError(ValueError):
    """A mode or scope that is not one of ours."""


def parse_mode(text: str) -> Mode:
    try:
        return Mode(text)
    except ValueError:
        raise ModeError(f"unknown mode {text!r}: use {', '.join(mode.value for mode in Mode)}") from None


def parse_scope(text: str) -> Scope:
    try:
        return Scope(text)
    except ValueError:
        raise ModeError(f"unknown scope {text!r}: use {', '.join(scope.value for scope in Scope)}") from None


@dataclass(frozen=True, slots=True)
class ModeSetting:
    """One mode, set for one department, service or category (a record of the store's `modes` table)."""

    scope: Scope
    name: str
    mode: Mode
    note: str = ""

    @property
    def id(self) -> str:
        """The record's key in the store: `department:finance`."""
        return f"{self.scope}:{self.name}"

    def describe(self) -> str:
        return f"{self.scope} {self.name}"

    def to_json(self) -> str:
        record = {"scope": str(self.scope), "name": self.name, "mode": str(self.mode), "note": self.note}
        return json.dumps(record, ensure_ascii=False, sort_keys=True)

    @classmethod
    def from_json(cls, text: str | bytes) -> ModeSetting:
        record: dict[str, Any] = json.loads(text)
        return cls(
            parse_scope(record["scope"]), str(record["name"]), parse_mode(record["mode"]), record.get("note", "")
        )


@dataclass(frozen=True, slots=True)
class ModeChoice:
    """The mode for one request and the setting that chose it (`default` when none did)."""

    mode: Mode
    source: str  # e.g. "department finance", "service whatsapp", "default"


ENFORCED = ModeChoice(Mode.ENFORCE, "default")


@dataclass(frozen=True, slots=True)
class ModeTable:
    """Modes set by one source (the config file, or the store), looked up in `PRECEDENCE` order."""

    default: Mode = Mode.ENFORCE
    settings: Mapping[tuple[Scope, str], ModeSetting] = field(default_factory=dict)

    @classmethod
    def build(cls, default: Mode, settings: Iterable[ModeSetting]) -> ModeTable:
        """The table of these settings (a later one for the same scope replaces an earlier one)."""
        return cls(default, {(setting.scope, setting.name): setting for setting in settings})

    def choose(
        self, department: str | None, service: str | None, category: str | None, under: ModeTable | None = None
    ) -> ModeChoice:
        """The most specific setting for this person and request: department, service, category, else the default.

        `under` is the config file's table beneath this one (the store's): for each scope, this table's setting
        wins, else `under`'s; the default is `under`'s when there is one.
        """
        layers = [table for table in (self, under) if table is not None and table.settings]
        if layers:
            for scope, name in ((Scope.DEPARTMENT, department), (Scope.SERVICE, service), (Scope.CATEGORY, category)):
                if name:
                    for table in layers:
                        setting = table.settings.get((scope, name))
                        if setting is not None:
                            return ModeChoice(setting.mode, setting.describe())
        default = under.default if under is not None else self.default
        return ENFORCED if default is Mode.ENFORCE else ModeChoice(default, "default")

    def entries(self) -> list[ModeSetting]:
        """The settings in precedence order, then by name (what `clearance modes list` shows)."""
        return sorted(self.settings.values(), key=lambda s: (PRECEDENCE.index(s.scope), s.name))


@dataclass(frozen=True, slots=True)
class Grace:
    """A person's "continue" on a caution page: this person, from this address, may reach `target` until then.

    `target` is the catalogue service (`service:whatsapp`), or the host when it belongs to none (`host:x.y`),
    so one click never opens a whole category. It counts only while the mode is still `caution`: switching to
    `enforce` closes every grace at once.
    """

    user: str
    client_ip: str | None
    target: str
    expires_at: int  # Unix seconds

    @property
    def id(self) -> str:
        return f"{self.user}\t{self.target}"

    def lets(self, user: str | None, client_ip: str | None, target: str, now: float) -> bool:
        return user == self.user and client_ip == self.client_ip and target == self.target and now < self.expires_at

    def to_json(self) -> str:
        record = {"user": self.user, "client_ip": self.client_ip, "target": self.target, "expires_at": self.expires_at}
        return json.dumps(record, ensure_ascii=False, sort_keys=True)

    @classmethod
    def from_json(cls, text: str | bytes) -> Grace:
        record: dict[str, Any] = json.loads(text)
        return cls(record["user"], record.get("client_ip"), record["target"], int(record["expires_at"]))


def grace_target(service: str | None, host: str) -> str:
    """What a "continue" opens: the service the host belongs to, else the host alone."""
    return f"service:{service}" if service else f"host:{host}"


@dataclass(slots=True)
class GraceIndex:
    """The graces in force, by person and target: one dict look-up on a caution request."""

    graces: dict[str, Grace] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.graces)

    def put(self, grace: Grace) -> None:
        self.graces[grace.id] = grace

    def find(self, user: str | None, client_ip: str | None, target: str, now: float) -> Grace | None:
        if not user or not self.graces:
            return None
        grace = self.graces.get(f"{user}\t{target}")
        return grace if grace is not None and grace.lets(user, client_ip, target, now) else None

    def prune(self, now: float) -> None:
        """Forget the graces that have run out (a worker does it now and then; an expired one never lets in)."""
        for key in [key for key, grace in self.graces.items() if grace.expires_at <= now]:
            del self.graces[key]
