"""The changes the store announces on its `changes` channel, typed, with their wire format in one place.

The store publishes one `Change` per write, in the same Redis transaction that bumps `policy:version`; every
serve process applies it to its in-memory policy. The changed records travel in the message, so a worker
applies a grant or a revoke without reading it back from Redis.

Wire format: `{version} {json}`. The version is assigned by the Lua script that publishes (it is only known
inside the transaction), so `encode` builds the JSON without it and `decode` reads it from the prefix.
The JSON is `{"kind": ..., ...fields}`; records (approvals, rules, exemptions) are their stored JSON text, so
a worker parses exactly what `load_state` would have read.

A message that cannot be decoded (unknown kind, malformed) raises `ChangeError`: the receiver cannot know what
changed, so it must reload everything (fail safe), never skip it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any, ClassVar, get_args, get_type_hints

from policy.approvals import Approval
from policy.modes import Grace, ModeSetting
from policy.rules import Rule
from policy.services import Service
from policy.state import Exemption


class ChangeError(ValueError):
    """A change message that cannot be decoded: the receiver must resync."""


def _item_parser(item_type: Any) -> Callable[[Any], Any]:
    """A tuple item's parser: strings must be strings; a record is read from its stored JSON."""
    if item_type is str:
        return _string
    return item_type.from_json  # type: ignore[no-any-return]


def _string(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected a string, got {value!r}")
    return value


def _item_text(element: Any) -> str:
    return element if isinstance(element, str) else str(element.to_json())


# Each change is plain data; `encode`/`decode` handle every field alike: a string as itself, a tuple as a JSON
# list of its strings or of its records' stored JSON (a record type has `to_json` and `from_json`).


@dataclass(frozen=True, slots=True, kw_only=True)
class HostsAdded:
    """Entries added to a category's live generation (merged into the live index)."""

    kind: ClassVar[str] = "hosts"
    version: int = 0
    category: str
    hosts: tuple[str, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class CategoriesSwitched:
    """Categories switched to new generations (an import): the index is rebuilt beside the live one."""

    kind: ClassVar[str] = "categories"
    version: int = 0
    categories: tuple[str, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class ApprovalsSaved:
    """Approvals written (granted, revoked, reviewed, imported): the records themselves."""

    kind: ClassVar[str] = "approvals"
    version: int = 0
    approvals: tuple[Approval, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class ApprovalsReloaded:
    """So many approvals written at once (a bulk import) that a worker reloads them all instead."""

    kind: ClassVar[str] = "approvals-reload"
    version: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class DirectoryChanged:
    """The directory was loaded or merged: a worker reloads it (it may be thousands of people)."""

    kind: ClassVar[str] = "directory"
    version: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class ExemptionsChanged:
    """An exemption added or removed: every exemption in the store afterwards (a short list), in id order."""

    kind: ClassVar[str] = "exemptions"
    version: int = 0
    exemptions: tuple[Exemption, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class RulesChanged:
    """A rule added or removed: every rule in the store afterwards (a short list), in id order."""

    kind: ClassVar[str] = "rules"
    version: int = 0
    rules: tuple[Rule, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class ServicesChanged:
    """An admin's service added, replaced or removed: every admin service record afterwards, by id."""

    kind: ClassVar[str] = "services"
    version: int = 0
    services: tuple[Service, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class ModesChanged:
    """A roll-out mode set or cleared (`clearance modes`): every mode setting in the store afterwards."""

    kind: ClassVar[str] = "modes"
    version: int = 0
    modes: tuple[ModeSetting, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class GraceGranted:
    """A person continued past a caution page: their grace for one service (or host), until it runs out."""

    kind: ClassVar[str] = "grace"
    version: int = 0
    graces: tuple[Grace, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class StoreInitialised:
    """A store without an identity was given one (and the default lists): workers reload it.

    After an emptied or replaced Redis the version starts again from 1, so this change is handled whatever
    its version; the worker reloads, keeping its last-known-good policy if the new store holds no lists.
    """

    kind: ClassVar[str] = "store-initialised"
    version: int = 0
    epoch: str


@dataclass(frozen=True, slots=True, kw_only=True)
class StoreReset:
    """An admin's deliberate `clearance store reset`: workers adopt the new store, even with no lists in it."""

    kind: ClassVar[str] = "store-reset"
    version: int = 0
    epoch: str


Change = (
    HostsAdded
    | CategoriesSwitched
    | ApprovalsSaved
    | ApprovalsReloaded
    | DirectoryChanged
    | ExemptionsChanged
    | RulesChanged
    | ServicesChanged
    | ModesChanged
    | GraceGranted
    | StoreInitialised
    | StoreReset
)

KINDS: tuple[type[Change], ...] = (
    HostsAdded,
    CategoriesSwitched,
    ApprovalsSaved,
    ApprovalsReloaded,
    DirectoryChanged,
    ExemptionsChanged,
    RulesChanged,
    ServicesChanged,
    ModesChanged,
    GraceGranted,
    StoreInitialised,
    StoreReset,
)

FieldParser = tuple[bool, Callable[[Any], Any]]  # (is a tuple, the parser of the string or of one tuple item)


def _field_parsers(kind: type[Change]) -> dict[str, FieldParser]:
    hints = get_type_hints(kind)
    parsers: dict[str, FieldParser] = {}
    for item in fields(kind):
        hint = hints[item.name]
        if item.name != "version":
            parsers[item.name] = (False, _string) if hint is str else (True, _item_parser(get_args(hint)[0]))
    return parsers


_PARSERS = {kind.kind: (kind, _field_parsers(kind)) for kind in KINDS}


def _read_field(value: Any, is_tuple: bool, parse: Callable[[Any], Any]) -> Any:
    if not is_tuple:
        return parse(value)
    if not isinstance(value, list):
        raise TypeError(f"expected a list, got {value!r}")
    return tuple(parse(element) for element in value)


def encode(change: Change) -> str:
    """The message's JSON, without the version (the publishing script prefixes it)."""
    payload: dict[str, Any] = {"kind": change.kind}
    for item in fields(change):
        if item.name != "version":
            value = getattr(change, item.name)
            payload[item.name] = value if isinstance(value, str) else [_item_text(element) for element in value]
    return json.dumps(payload)


def decode(message: str | bytes) -> Change:
    """A `{version} {json}` message as its Change; ChangeError if it is not one we know."""
    text = message.decode() if isinstance(message, bytes) else message
    version, _, payload = text.partition(" ")
    try:
        data = json.loads(payload)
        known = _PARSERS.get(data["kind"]) if isinstance(data, dict) else None
        if known is None:
            raise ChangeError(f"unknown change {text[:120]!r}")
        kind, parsers = known
        values = {name: _read_field(data[name], *parser) for name, parser in parsers.items()}
        return kind(version=int(version), **values)
    except ChangeError:
        raise
    except (ValueError, KeyError, TypeError) as error:  # JSONDecodeError is a ValueError
        raise ChangeError(f"malformed change {text[:120]!r}: {error!r}") from None
