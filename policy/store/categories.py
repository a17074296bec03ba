"""Category lists: generations staged beside the live one and switched in one step, so nobody sees half a list."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from redis.exceptions import ResponseError

from policy.store.audit import AuditPart
from policy.store.changes import CategoriesSwitched, HostsAdded, encode
from policy.store.errors import StoreError

# A retired generation outlives the switch briefly, so a reader that fetched the old generation number
# just before the switch still finds its entries (never an empty category).
RETIRED_TTL_S = 300
AUDIT_HOSTS = 20  # hosts named in a `categories add/load` audit entry (the counts are always there)

ADD_BATCH = 1000
IMPORT_BATCH = 5000
LOAD_BATCH = 20000
STAGE_ROUND = 8  # batches sent per round trip while staging


@dataclass(frozen=True, slots=True)
class ImportResult:
    entries: dict[str, int]  # category -> entries in its new generation
    version: int


class CategoriesPart(AuditPart):
    async def generations(self) -> dict[str, str]:
        return {
            str(name): str(generation)
            for name, generation in (await self.client.hgetall(self.key("categories"))).items()
        }

    async def category_entries(self, category: str, generation: str) -> AsyncIterator[list[str]]:
        """The entries of one category generation, in batches (SSCAN, so a huge list never blocks Redis)."""
        key = self.key("cat", category, generation)
        cursor = 0
        while True:
            cursor, batch = await self.client.sscan(key, cursor, count=LOAD_BATCH)
            if batch:
                yield [str(entry) for entry in batch]
            if cursor == 0:
                return

    async def add_hosts(
        self, category: str, hosts: Sequence[str], actor: str = "clearance", action: str = "categories-add"
    ) -> int:
        """Add entries to a category's live generation; returns how many were new. One audit entry per call."""
        added = 0
        before = await self._live_size(category)
        keys = [self.key("categories"), self.key("gen", "seq"), *self._bump_keys()]
        for start in range(0, len(hosts), ADD_BATCH):
            batch = list(hosts[start : start + ADD_BATCH])
            message = encode(HostsAdded(category=category, hosts=tuple(batch)))
            added += int(await self._run("add_hosts", keys, [self.prefix, category, message, *batch]))
        after = {
            "entries": await self._live_size(category),
            "added": added,
            "submitted": len(hosts),
            "hosts": list(hosts[:AUDIT_HOSTS]),  # the first few: the entry stays small for a big list file
        }
        await self.audit(actor, action, category, {"entries": before}, after)
        return added

    async def _live_size(self, category: str) -> int:
        generation = await self.client.hget(self.key("categories"), category)
        return int(await self.client.scard(self.key("cat", category, str(generation)))) if generation else 0

    async def import_categories(
        self,
        sources: Mapping[str, Iterable[Sequence[str]]],
        replace: bool,
        progress: Callable[[int], None] | None = None,
        actor: str = "clearance",
    ) -> ImportResult:
        """Stage each category's new generation beside the live one, then switch all of them in one step.

        `replace` starts each generation empty; otherwise it starts as a copy of the live one. If anything
        fails before the switch, the staged sets are deleted and the live lists are untouched.
        """
        live = await self.generations()
        before = await self._sizes({category: live[category] for category in sources if category in live})
        staged: dict[str, str] = {}
        try:
            for category, batches in sources.items():
                staged[category] = str(await self.client.incr(self.key("gen", "seq")))
                copy_of = None if replace else live.get(category)
                await self._stage(category, staged[category], copy_of, batches, progress)
            version = await self._switch_to(staged, live, replace)
        except BaseException:
            if staged:
                await self.client.unlink(*(self.key("cat", c, g) for c, g in staged.items()))
            raise
        await self._retire({category: live[category] for category in staged if category in live})
        sizes = await self._sizes(staged)
        await self.audit(
            actor,
            "categories-import",
            ", ".join(sizes),
            {"entries": {category: before.get(category, 0) for category in sizes}},
            {"entries": sizes, "mode": "replace" if replace else "merge", "version": version},
        )
        return ImportResult(entries=sizes, version=version)

    async def _stage(
        self,
        category: str,
        generation: str,
        copy_of: str | None,
        batches: Iterable[Sequence[str]],
        progress: Callable[[int], None] | None,
    ) -> None:
        """Fill one new generation (starting from a copy of generation `copy_of`, if given), a few batches a trip."""
        target = self.key("cat", category, generation)
        if copy_of is not None:
            await self.client.sunionstore(target, [self.key("cat", category, copy_of)])
        async with self.client.pipeline(transaction=False) as pipe:
            pending = 0
            queued = 0
            for batch in batches:
                if batch:
                    pipe.sadd(target, *batch)
                    pending += 1
                    queued += len(batch)
                if pending >= STAGE_ROUND:
                    await pipe.execute()
                    if progress is not None:
                        progress(queued)
                    pending = queued = 0
            await pipe.execute()
            if progress is not None and queued:
                progress(queued)

    async def _switch_to(self, staged: Mapping[str, str], live: Mapping[str, str], replace: bool) -> int:
        """Switch to the staged generations in one script run; StoreError if a live one moved meanwhile."""
        message = encode(CategoriesSwitched(categories=tuple(sorted(staged))))
        args: list[str] = [message, self.prefix, "0" if replace else "1"]
        for category, generation in staged.items():
            args += [category, generation, live.get(category, "")]
        try:
            return int(await self._run("switch", [self.key("categories"), *self._bump_keys()], args))
        except ResponseError as error:
            if "CONFLICT" not in str(error):
                raise
            raise StoreError(str(error).partition("CONFLICT ")[2] + "; nothing was changed, run it again") from None

    async def _retire(self, generations: Mapping[str, str]) -> None:
        async with self.client.pipeline(transaction=False) as pipe:
            for category, generation in generations.items():
                pipe.expire(self.key("cat", category, generation), RETIRED_TTL_S)
            await pipe.execute()

    async def _sizes(self, generations: Mapping[str, str]) -> dict[str, int]:
        async with self.client.pipeline(transaction=False) as pipe:
            for category, generation in generations.items():
                pipe.scard(self.key("cat", category, generation))
            sizes = await pipe.execute()
        return dict(sorted(zip(generations, (int(size) for size in sizes), strict=True)))

    async def category_sizes(self) -> dict[str, int]:
        return await self._sizes(await self.generations())
