"""The directory (who is in which department and groups, who heads or is delegated which departments)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from policy.directory import Directory, Person
from policy.store.audit import AuditPart
from policy.store.changes import DirectoryChanged


class DirectoryPart(AuditPart):
    async def load_directory(self) -> Directory:
        texts = await self.client.hvals(self.key("directory"))
        return Directory({person.user: person for person in (Person.from_json(text) for text in texts)})

    async def write_directory(self, people: Sequence[Person], actor: str, merge: bool) -> tuple[int, int]:
        """A full load replaces the directory in one step (staged, then RENAME); --merge updates rows.

        Returns (rows written, people in the directory afterwards). Workers reload the directory on the
        announcement rather than get it sent: a full load may be thousands of people.
        """
        await self._load_scripts()
        mapping: dict[Any, Any] = {person.user: person.to_json() for person in people}
        staging = self.key("directory", "staging")
        async with self.client.pipeline(transaction=True) as pipe:
            if merge:
                if mapping:
                    pipe.hset(self.key("directory"), mapping=mapping)
            else:
                pipe.delete(staging)
                if mapping:
                    pipe.hset(staging, mapping=mapping)
                    pipe.rename(staging, self.key("directory"))
                else:
                    pipe.delete(self.key("directory"))
            action = "directory-merge" if merge else "directory-load"
            self._audit(pipe, actor, action, f"{len(people)} people", None, None, {"rows": len(people)})
            self._publish(pipe, DirectoryChanged())
            pipe.hlen(self.key("directory"))
            results = await pipe.execute()
        return len(people), int(results[-1])
