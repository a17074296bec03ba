"""`clearance directory …`: who is in which department, in which groups, and who heads or deputises for it.

The directory decides whose head approves a personal approval, and which group and department approvals a
user falls under; it is loaded whole (or merged) from a CSV export.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from zoneinfo import ZoneInfo

from icap_server.admin.output import Line, add_format, print_record
from icap_server.admin.support import Commands, StoreAction, UsageError, add_group, reading
from icap_server.config import Config
from policy.directory import DirectoryError, parse_directory_csv
from policy.identity import normalise_username
from policy.store import PolicyStore, StoreError


def register(commands: Commands) -> None:
    directory = add_group(commands, "directory", "who is in which department, and who approves")
    load = directory.add_parser("load", help="load a CSV export: user,name,department,groups,heads,delegates[,email]")
    load.add_argument("file", type=Path)
    load.add_argument("--merge", action="store_true", help="update these rows, keep everyone else")
    load.set_defaults(handler=directory_load)
    show = directory.add_parser("show", help="one person's department, groups and approver roles")
    show.add_argument("user")
    add_format(show)
    show.set_defaults(handler=directory_show)


def directory_load(args: argparse.Namespace, config: Config) -> StoreAction:
    try:
        with reading(args.file), args.file.open(encoding="utf-8-sig", newline="") as handle:
            people = parse_directory_csv(handle, lambda name: normalise_username(name, config.identity))
    except DirectoryError as error:
        raise UsageError(f"{args.file}:{error.line}: {str(error).partition(': ')[2]}") from None

    async def action(store: PolicyStore) -> int:
        written, total = await store.write_directory(people, args.actor, merge=args.merge)
        mode = "merged" if args.merge else "loaded (replacing the directory)"
        print(f"{written} people {mode}; the directory has {total}")
        return 0

    return action


@dataclass(frozen=True)
class PersonRecord:
    """One person as `directory show` shows them: `heads` and `delegates` are the departments they approve
    for; `department_heads` and `department_delegates` are who approves for theirs."""

    user: str
    name: str | None
    department: str
    department_heads: tuple[str, ...]
    department_delegates: tuple[str, ...]
    groups: tuple[str, ...]
    heads: tuple[str, ...]
    delegates: tuple[str, ...]
    email: str | None


PERSON_TABLE = (
    Line("user", "{user}"),
    Line("name", "{name}"),
    Line("department", "{department} (heads: {department_heads}; delegates: {department_delegates})"),
    Line("groups", "{groups}"),
    Line("heads", "{heads}"),
    Line("delegate", "{delegates}"),
    Line("email", "{email}"),
)


def directory_show(args: argparse.Namespace, config: Config) -> StoreAction:
    user = normalise_username(args.user, config.identity)

    async def action(store: PolicyStore) -> int:
        directory = await store.load_directory()
        person = directory.person(user)
        if person is None:
            raise StoreError(f"{user!r} is not in the directory")
        heads, delegates = directory.approvers_of(person.department)
        record = PersonRecord(
            user=person.user,
            name=person.name or None,
            department=person.department,
            department_heads=tuple(sorted(heads)),
            department_delegates=tuple(sorted(delegates)),
            groups=tuple(sorted(person.groups)),
            heads=tuple(sorted(person.heads)),
            delegates=tuple(sorted(person.delegates)),
            email=person.email or None,
        )
        print_record(args.format, record, PERSON_TABLE, ZoneInfo(config.policy.timezone), width=11)
        return 0

    return action
