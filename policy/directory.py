"""Directory data: who belongs to which department and groups, and who may approve for a department.

Loaded from a CSV as an admin exports it from Active Directory or LDAP, one row per person:

    user,name,department,groups,heads,delegates,email
    alice,Alice Chan,Finance,finance-staff;travel,,,
    hfin,Henry Fung,Finance,finance-staff,Finance,,hfin@example.gov
    dfin,Dora Fok,Finance,,,Finance,dfin@example.gov

`groups`, `heads` (departments this person heads) and `delegates` (departments this person may approve for
on the head's behalf) are lists separated by `;`. `email` is optional (the column too): where the portal
sends a department's access requests for its heads and delegates to decide. User names are normalised like
the proxy's, so the directory, the approvals and the traffic all use one spelling.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

COLUMNS = ("user", "name", "department", "groups", "heads", "delegates", "email")
REQUIRED = ("user", "department")
NAME_RE = re.compile(r"^[^\x00-\x1f;]{1,128}$")
EMAIL_RE = re.compile(r"^[^@\s,;<>\"]{1,64}@[^@\s,;<>\"]{1,255}\.[^@\s,;<>\".]{1,63}$")


class DirectoryError(ValueError):
    """A bad directory row, with its line number."""

    def __init__(self, line: int, message: str) -> None:
        super().__init__(f"line {line}: {message}")
        self.line = line


@dataclass(frozen=True, slots=True)
class Person:
    user: str
    department: str
    name: str = ""
    groups: frozenset[str] = frozenset()
    heads: frozenset[str] = frozenset()
    delegates: frozenset[str] = frozenset()
    email: str = ""

    def to_json(self) -> str:
        return json.dumps(
            {
                "user": self.user,
                "name": self.name,
                "department": self.department,
                "groups": sorted(self.groups),
                "heads": sorted(self.heads),
                "delegates": sorted(self.delegates),
                "email": self.email,
            },
            ensure_ascii=False,
            sort_keys=True,
        )

    @classmethod
    def from_json(cls, text: str | bytes) -> Person:
        record = json.loads(text)
        return cls(
            user=record["user"],
            department=record["department"],
            name=record.get("name", ""),
            groups=frozenset(record.get("groups", ())),
            heads=frozenset(record.get("heads", ())),
            delegates=frozenset(record.get("delegates", ())),
            email=record.get("email", ""),
        )


@dataclass
class Directory:
    people: dict[str, Person] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.people)

    def person(self, user: str | None) -> Person | None:
        return self.people.get(user) if user else None

    def approvers_of(self, department: str) -> tuple[frozenset[str], frozenset[str]]:
        """(heads, delegates) of a department."""
        heads = frozenset(p.user for p in self.people.values() if department in p.heads)
        delegates = frozenset(p.user for p in self.people.values() if department in p.delegates)
        return heads, delegates

    def may_approve(self, approver: str, department: str) -> bool:
        person = self.people.get(approver)
        return person is not None and (department in person.heads or department in person.delegates)

    def departments(self) -> list[str]:
        return sorted({p.department for p in self.people.values()})


def _split_list(text: str) -> frozenset[str]:
    return frozenset(item.strip() for item in text.split(";") if item.strip())


def parse_directory_csv(lines: Iterable[str], normalise_user: object = None) -> list[Person]:
    """Every row checked; the first bad one raises DirectoryError with its line number."""
    from collections.abc import Callable

    normalise: Callable[[str], str] = normalise_user if callable(normalise_user) else (lambda name: name)
    reader = csv.reader(lines)
    try:
        header = next(reader)
    except StopIteration:
        raise DirectoryError(1, "the file is empty; expected a header row: " + ",".join(COLUMNS)) from None
    columns = [name.strip().lower() for name in header]
    missing = [name for name in REQUIRED if name not in columns]
    if missing:
        raise DirectoryError(1, f"missing column(s) {', '.join(missing)}; expected: {','.join(COLUMNS)}")
    unknown = [name for name in columns if name not in COLUMNS]
    if unknown:
        raise DirectoryError(1, f"unknown column(s) {', '.join(unknown)}; expected: {','.join(COLUMNS)}")
    people: list[Person] = []
    seen: dict[str, int] = {}
    for row in reader:
        line = reader.line_num
        if not row or all(not cell.strip() for cell in row):
            continue
        if len(row) != len(columns):
            raise DirectoryError(line, f"{len(row)} fields, the header has {len(columns)}")
        values: Mapping[str, str] = {name: cell.strip() for name, cell in zip(columns, row, strict=True)}
        user = normalise(values["user"]) if values["user"] else ""
        if not user:
            raise DirectoryError(line, "empty user")
        department = values["department"]
        if not department or not NAME_RE.match(department):
            raise DirectoryError(line, f"invalid department {department!r}")
        if user in seen:
            raise DirectoryError(line, f"user {user!r} already appears on line {seen[user]}")
        seen[user] = line
        groups = _split_list(values.get("groups", ""))
        heads = _split_list(values.get("heads", ""))
        delegates = _split_list(values.get("delegates", ""))
        for kind, items in (("group", groups), ("heads department", heads), ("delegates department", delegates)):
            bad = [item for item in items if not NAME_RE.match(item)]
            if bad:
                raise DirectoryError(line, f"invalid {kind} {bad[0]!r}")
        email = values.get("email", "")
        if email and not EMAIL_RE.match(email):
            raise DirectoryError(line, f"invalid email {email!r}")
        people.append(Person(user, department, values.get("name", ""), groups, heads, delegates, email))
    return people


class IndexedDirectory(Directory):
    """`approvers_of` from an index built once: an import may name thousands of approvers without authority."""

    def __init__(self, people: dict[str, Person]) -> None:
        super().__init__(people)
        heads: dict[str, set[str]] = {}
        delegates: dict[str, set[str]] = {}
        for person in people.values():
            for department in person.heads:
                heads.setdefault(department, set()).add(person.user)
            for department in person.delegates:
                delegates.setdefault(department, set()).add(person.user)
        self._approvers = {
            department: (frozenset(heads.get(department, ())), frozenset(delegates.get(department, ())))
            for department in heads.keys() | delegates.keys()
        }

    def approvers_of(self, department: str) -> tuple[frozenset[str], frozenset[str]]:
        return self._approvers.get(department, (frozenset(), frozenset()))
