"""`clearance directory …`: who is in which department, in which groups, and who heads or deputises for it.

The directory decides whose head approves a personal approval, and which group and department approvals a
user falls under; it is loaded whole (or merged) from a CSV export.
"""

from __future__ import annotations

import argparse
from pathlib import Path

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


def directory_show(args: argparse.Namespace, config: Config) -> StoreAction:
    user = normalise_username(args.user, config.identity)

    async def action(store: PolicyStore) -> int:
        directory = await store.load_directory()
        person = directory.person(user)
        if person is None:
            raise StoreError(f"{user!r} is not in the directory")
        heads, delegates = directory.approvers_of(person.department)
        print(f"user:       {person.user}")
        print(f"name:       {person.name or '-'}")
        print(
            f"department: {person.department} (heads: {', '.join(sorted(heads)) or '-'}; "
            f"delegates: {', '.join(sorted(delegates)) or '-'})"
        )
        print(f"groups:     {', '.join(sorted(person.groups)) or '-'}")
        print(f"heads:      {', '.join(sorted(person.heads)) or '-'}")
        print(f"delegate:   {', '.join(sorted(person.delegates)) or '-'}")
        print(f"email:      {person.email or '-'}")
        return 0

    return action
