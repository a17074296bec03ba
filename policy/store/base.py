"""The connection every part of the store shares: key names, the Lua scripts, and announcing a change."""

from __future__ import annotations

from collections.abc import Iterable
from importlib import resources
from typing import Any, Protocol, TypeVar

import redis.asyncio as aioredis

from policy.store.changes import Change, encode
from policy.store.errors import StoreError

# The Lua scripts, as files under scripts/ (each says what it does and why it must run inside Redis).
SCRIPTS = ("bump", "add_hosts", "switch", "adopt_legacy", "reserve_ids", "raise_seq", "last_used")


def script_text(name: str) -> str:
    return (resources.files("policy.store") / "scripts" / f"{name}.lua").read_text(encoding="utf-8")


class Identified(Protocol):
    @property
    def id(self) -> str: ...


Item = TypeVar("Item", bound=Identified)


def in_id_order(items: Iterable[Item], prefix: str) -> list[Item]:
    """Sorted by the number in their ids (A12, R3, Q7, …): the order they were made in."""
    return sorted(items, key=lambda item: int(item.id.lstrip(prefix) or 0))


class StoreBase:
    """The Redis client, the key prefix and the registered scripts; the per-area parts build on it."""

    def __init__(self, client: aioredis.Redis, prefix: str = "clearance:") -> None:
        self.client = client
        self.prefix = prefix
        self._scripts = {name: client.register_script(script_text(name)) for name in SCRIPTS}

    def key(self, *parts: str) -> str:
        return self.prefix + ":".join(parts)

    @property
    def channel(self) -> str:
        return self.key("changes")

    def _bump_keys(self) -> list[str]:
        return [self.key("policy", "version"), self.channel]

    def _sha(self, name: str) -> str:
        return str(self._scripts[name].sha)

    async def _run(self, name: str, keys: list[str], args: list[Any]) -> Any:
        """Run a script on its own (EVALSHA, loading it if Redis does not know it yet)."""
        return await self._scripts[name](keys=keys, args=args)

    async def _load_scripts(self) -> None:
        """EVALSHA inside MULTI cannot fall back to EVAL, so make sure the scripts are loaded first."""
        names = list(self._scripts)
        known = await self.client.script_exists(*(self._sha(name) for name in names))
        for name, exists in zip(names, known, strict=True):
            if not exists:
                await self.client.script_load(self._scripts[name].script)

    def _eval(self, pipe: Any, name: str, keys: list[str], args: list[Any]) -> None:
        """Queue a script on a pipeline (call `_load_scripts` before opening a MULTI one)."""
        pipe.evalsha(self._sha(name), len(keys), *keys, *args)

    def _publish(self, pipe: Any, change: Change) -> None:
        """Queue the version bump and the announcement of `change`, in the caller's transaction."""
        self._eval(pipe, "bump", self._bump_keys(), [encode(change)])

    async def _record(self, table: str, record_id: str, what: str) -> str:
        """The stored JSON of one record of a hash; StoreError naming `what` if there is none."""
        text = await self.client.hget(self.key(table), record_id)
        if not text:
            raise StoreError(f"no {what} with id {record_id!r}")
        return str(text)

    async def _records(self, table: str) -> list[str]:
        return [str(text) for text in await self.client.hvals(self.key(table))]

    async def version(self) -> int:
        return int(await self.client.get(self.key("policy", "version")) or 0)
