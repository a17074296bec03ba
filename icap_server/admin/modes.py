"""`clearance modes …`: the roll-out mode of a department, service or category, set at run time.

`set` and `clear` write the store (audited with the actor, announced: every worker has it within a second);
`list` shows the config file's settings and the store's, and which one is in force for each scope (the store's,
where both set one). The precedence between scopes is `policy.modes`': department, service, category, default.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from zoneinfo import ZoneInfo

from icap_server.admin.output import Line, add_format, print_rows
from icap_server.admin.support import Commands, StoreAction, UsageError, add_group
from icap_server.config import Config
from icap_server.service.modes import configured_modes
from policy.modes import Mode, ModeError, ModeSetting, Scope, parse_mode
from policy.store import PolicyStore

NAME_CHARS = 200


def register(commands: Commands) -> None:
    modes = add_group(commands, "modes", "roll-out modes: enforce, monitor or caution")
    set_ = modes.add_parser("set", help="set the mode of a department, service or category")
    _add_scope(set_)
    set_.add_argument("mode", choices=[mode.value for mode in Mode])
    set_.add_argument("--note", default="", help="why (kept with the setting and in the audit trail)")
    set_.set_defaults(handler=modes_set)
    clear = modes.add_parser("clear", help="remove a mode set here (the config file's, if any, applies again)")
    _add_scope(clear)
    clear.set_defaults(handler=modes_clear)
    listing = modes.add_parser("list", help="every mode set, in the config file and here, and which is in force")
    add_format(listing)
    listing.set_defaults(handler=modes_list)


def _add_scope(parser: argparse.ArgumentParser) -> None:
    scope = parser.add_mutually_exclusive_group(required=True)
    scope.add_argument("--department", metavar="NAME")
    scope.add_argument("--service", metavar="ID")
    scope.add_argument("--category", metavar="NAME")


def _scope(args: argparse.Namespace) -> tuple[Scope, str]:
    for scope in Scope:
        name = getattr(args, scope.value)
        if name is not None:
            name = name.strip()
            if not name or len(name) > NAME_CHARS or any(ch.isspace() or ch == ":" for ch in name):
                raise UsageError(f"--{scope.value}: expected a name without spaces or ':', got {name!r}")
            return scope, name
    raise UsageError("give --department, --service or --category")


def modes_set(args: argparse.Namespace, config: Config) -> StoreAction:
    scope, name = _scope(args)
    try:
        setting = ModeSetting(scope, name, parse_mode(args.mode), args.note.strip())
    except ModeError as error:
        raise UsageError(str(error)) from None

    async def action(store: PolicyStore) -> int:
        await store.set_mode(setting, args.actor)
        print(f"{setting.describe()}: {setting.mode}")
        return 0

    return action


def modes_clear(args: argparse.Namespace, config: Config) -> StoreAction:
    scope, name = _scope(args)

    async def action(store: PolicyStore) -> int:
        await store.clear_mode(scope, name, args.actor)
        print(f"{scope} {name}: cleared")
        return 0

    return action


@dataclass(frozen=True)
class ModeRow:
    scope: str
    name: str
    mode: str
    source: str  # config or redis
    in_force: bool
    note: str


MODE_TABLE = (
    Line("SCOPE", "{scope}"),
    Line("NAME", "{name}"),
    Line("MODE", "{mode}"),
    Line("SOURCE", "{source}"),
    Line("IN FORCE", "yes", when="in_force", otherwise="no (redis's)"),
    Line("NOTE", "{note}"),
)


def modes_list(args: argparse.Namespace, config: Config) -> StoreAction:
    configured = configured_modes(config.modes)

    async def action(store: PolicyStore) -> int:
        stored = await store.list_modes()
        overridden = {(setting.scope, setting.name) for setting in stored}
        rows = [ModeRow("default", "", str(configured.default), "config", True, "")]
        rows += [
            ModeRow(str(s.scope), s.name, str(s.mode), "config", (s.scope, s.name) not in overridden, s.note)
            for s in configured.entries()
        ]
        rows += [ModeRow(str(s.scope), s.name, str(s.mode), "redis", True, s.note) for s in stored]
        print_rows(args.format, ModeRow, rows, MODE_TABLE, ZoneInfo(config.policy.timezone))
        return 0

    return action
