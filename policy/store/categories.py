"""Category lists, kept per (category, source) and switched in one step, so nobody sees half a list.

Why per source: the shipped lists (`curated`), the admin's additions (`admin`) and each imported list (`ut1`,
or a file's name) are kept apart, so replacing one source never touches another, a re-import drops exactly
that source's stale entries, and an upgrade can replace the curated lists while the rest stays. A category's
policy is the union of its sources, taken when a worker loads it.

Layout: `lists` (hash) `{category}:{source}` -> generation; `cat:{category}:{generation}` (set) the entries;
`sources` (hash) source -> `SourceInfo` JSON. A store from before sources has `categories` (hash) category ->
generation instead: it is read as the source `legacy`, and moved into `lists` in place (one Lua step, the sets
stay where they are) by the first write.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from redis.exceptions import ResponseError

from policy.approvals import utc_now
from policy.categories import CATEGORY_RE
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

CURATED = "curated"  # the shipped lists (`icap_server.service.defaults.default_seed`), replaced on an upgrade
ADMIN = "admin"  # `categories add` and `load`
LEGACY = "legacy"  # the lists of a store written before sources existed
ListKey = tuple[str, str]  # (category, source)


def check_source(name: str) -> str:
    """A source name: the rule of category names (it is part of a key and a hash field; ':' never occurs)."""
    if not CATEGORY_RE.match(name):
        raise ValueError(f"invalid source name {name!r}: use lower-case letters, digits, '-' or '_' (at most 63)")
    return name


@dataclass(frozen=True, slots=True)
class SourceInfo:
    """What the store knows of one source besides its entries: when it was written and what it came from."""

    updated: str = ""  # when an import or update last replaced or merged it (ISO 8601, UTC)
    date: str = ""  # the data's own date: an archive's newest member (ISO 8601, UTC)
    origin: str = ""  # a URL or file name
    version: str = ""  # curated: `policy.categories.shipped_version()` of the data it holds
    fingerprint: str = ""  # curated: `fingerprint` of the lists it holds

    def to_json(self) -> str:
        return json.dumps({name: value for name, value in asdict(self).items() if value})

    @classmethod
    def from_json(cls, text: str) -> SourceInfo:
        try:
            data = json.loads(text)
            return cls(**{item.name: str(data[item.name]) for item in fields(cls) if item.name in data})
        except (ValueError, TypeError):
            return cls()


def fingerprint(lists: Mapping[str, Iterable[str]]) -> str:
    """A hash of lists' content (categories and entries, in any order): equal lists, equal fingerprints."""
    digest = hashlib.sha256()
    for category in sorted(lists):
        digest.update(f"{category}\n".encode() + "\n".join(sorted(set(lists[category]))).encode() + b"\n\n")
    return digest.hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class ImportResult:
    """One source's write: its entries per category after and before, what was added and removed."""

    entries: dict[str, int]  # category -> the source's entries in it now (0: the category left the source)
    version: int
    source: str = ""
    before: dict[str, int] = field(default_factory=dict)
    added: dict[str, int] = field(default_factory=dict)
    removed: dict[str, int] = field(default_factory=dict)


class CategoriesPart(AuditPart):
    async def list_generations(self) -> dict[ListKey, str]:
        """Every live (category, source) list and its generation; a legacy store's lists as source `legacy`.

        Both hashes in one MULTI, so the move of a legacy store never shows a reader neither.
        """
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.hgetall(self.key("categories"))
            pipe.hgetall(self.key("lists"))
            legacy, current = await pipe.execute()
        found: dict[ListKey, str] = {(str(name), LEGACY): str(gen) for name, gen in legacy.items()}
        for name, generation in current.items():
            category, _, source = str(name).partition(":")
            found[(category, source)] = str(generation)
        return dict(sorted(found.items()))

    async def category_entries(self, category: str, generation: str) -> AsyncIterator[list[str]]:
        """The entries of one list generation, in batches (SSCAN, so a huge list never blocks Redis)."""
        key = self.key("cat", category, generation)
        cursor = 0
        while True:
            cursor, batch = await self.client.sscan(key, cursor, count=LOAD_BATCH)
            if batch:
                yield [str(entry) for entry in batch]
            if cursor == 0:
                return

    async def adopt_legacy(self) -> int:
        """Move a legacy store's `categories` into `lists` as source `legacy` (one Lua step); how many moved."""
        return int(await self._run("adopt_legacy", [self.key("categories"), self.key("lists")], []))

    async def add_hosts(
        self, category: str, hosts: Sequence[str], actor: str = "clearance", action: str = "categories-add"
    ) -> int:
        """Add entries to a category's `admin` list; returns how many were new. One audit entry per call."""
        await self.adopt_legacy()
        added = 0
        before = await self._live_size(category, ADMIN)
        keys = [self.key("lists"), self.key("gen", "seq"), self.key("sources"), *self._bump_keys()]
        for start in range(0, len(hosts), ADD_BATCH):
            batch = list(hosts[start : start + ADD_BATCH])
            message = encode(HostsAdded(category=category, hosts=tuple(batch)))
            info = SourceInfo(updated=utc_now().isoformat()).to_json()
            args = [self.prefix, category, ADMIN, message, info, *batch]
            added += int(await self._run("add_hosts", keys, args))
        after = {
            "entries": await self._live_size(category, ADMIN),
            "added": added,
            "submitted": len(hosts),
            "hosts": list(hosts[:AUDIT_HOSTS]),  # the first few: the entry stays small for a big list file
        }
        await self.audit(actor, action, category, {"entries": before}, after)
        return added

    async def _live_size(self, category: str, source: str) -> int:
        generation = await self.client.hget(self.key("lists"), f"{category}:{source}")
        return int(await self.client.scard(self.key("cat", category, str(generation)))) if generation else 0

    async def import_categories(
        self,
        sources: Mapping[str, Iterable[Sequence[str]]],
        replace: bool,
        progress: Callable[[int], None] | None = None,
        actor: str = "clearance",
        source: str = "import",
        info: SourceInfo | None = None,
        whole: bool = False,
        action: str = "categories-import",
    ) -> ImportResult:
        """Stage `source`'s new list for each category beside the live one, then switch all of them in one step.

        `replace` starts each list empty; otherwise it starts as a copy of the live one. `whole` replaces the
        source entirely: its lists in categories not in `sources` are dropped too. Other sources are never
        touched. If anything fails before the switch, the staged sets are deleted and the live lists stay.
        """
        check_source(source)
        await self.adopt_legacy()
        live = {category: gen for (category, name), gen in (await self.list_generations()).items() if name == source}
        targets = sorted(set(sources) | (set(live) if whole else set()))
        staged: dict[str, str] = {}
        try:
            for category in targets:
                staged[category] = str(await self.client.incr(self.key("gen", "seq")))
                copy_of = None if replace else live.get(category)
                await self._stage(category, staged[category], copy_of, sources.get(category, ()), progress)
            counts = await self._compare(staged, live)
            stamped = info or SourceInfo()
            stamped = SourceInfo(**{**asdict(stamped), "updated": stamped.updated or utc_now().isoformat()})
            version = await self._switch_to(staged, live, replace, source, stamped, counts[1])
        except BaseException:
            if staged:
                await self.client.unlink(*(self.key("cat", c, g) for c, g in staged.items()))
            raise
        await self._retire({category: live[category] for category in staged if category in live})
        before, entries, added, removed = counts
        result = ImportResult(entries, version, source, before, added, removed)
        mode = ("whole" if whole else "replace") if replace else "merge"
        after: dict[str, object] = {"entries": result.entries, "added": result.added, "removed": result.removed}
        after |= {"mode": mode, "source": source, "version": version}
        await self.audit(actor, action, ", ".join(targets), {"entries": result.before}, after)
        return result

    async def _compare(
        self, staged: Mapping[str, str], live: Mapping[str, str]
    ) -> tuple[dict[str, int], dict[str, int], dict[str, int], dict[str, int]]:
        """(before, after, added, removed) per category, from the live and staged sets (SINTERSTORE: no copy out)."""
        scratch = self.key("tmp", secrets.token_hex(8))
        async with self.client.pipeline(transaction=True) as pipe:
            for category, generation in staged.items():
                old = self.key("cat", category, live.get(category, "none"))
                pipe.scard(old)
                pipe.scard(self.key("cat", category, generation))
                pipe.sinterstore(scratch, [old, self.key("cat", category, generation)])
            pipe.unlink(scratch)
            results = [int(value) for value in (await pipe.execute())[:-1]]
        before: dict[str, int] = {}
        after: dict[str, int] = {}
        added: dict[str, int] = {}
        removed: dict[str, int] = {}
        for index, category in enumerate(staged):
            was, now, common = results[index * 3 : index * 3 + 3]
            before[category], after[category] = was, now
            added[category], removed[category] = now - common, was - common
        return before, after, added, removed

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

    async def _switch_to(
        self,
        staged: Mapping[str, str],
        live: Mapping[str, str],
        replace: bool,
        source: str,
        info: SourceInfo,
        sizes: Mapping[str, int],
    ) -> int:
        """Switch to the staged lists in one script run (an empty one drops the list); StoreError if one moved."""
        message = encode(CategoriesSwitched(categories=tuple(sorted(staged))))
        args: list[str] = [message, self.prefix, "0" if replace else "1", source, info.to_json()]
        for category, generation in staged.items():
            args += [category, generation if sizes.get(category) else "", live.get(category, "")]
        keys = [self.key("lists"), self.key("sources"), *self._bump_keys()]
        try:
            return int(await self._run("switch", keys, args))
        except ResponseError as error:
            if "CONFLICT" not in str(error):
                raise
            raise StoreError(str(error).partition("CONFLICT ")[2] + "; nothing was changed, run it again") from None

    async def _retire(self, generations: Mapping[str, str]) -> None:
        async with self.client.pipeline(transaction=False) as pipe:
            for category, generation in generations.items():
                pipe.expire(self.key("cat", category, generation), RETIRED_TTL_S)
            await pipe.execute()

    def _queue_seed(self, pipe: Any, lists: Mapping[str, Sequence[str]], generation: int) -> dict[str, int]:
        """Queue (in the caller's MULTI) the `curated` lists of a store being initialised; entries per category."""
        seeded: dict[str, int] = {}
        for category, hosts in lists.items():
            if hosts:
                generation += 1
                pipe.hset(self.key("lists"), f"{category}:{CURATED}", str(generation))
                pipe.sadd(self.key("cat", category, str(generation)), *hosts)
                seeded[category] = len(set(hosts))
        if seeded:
            info = SourceInfo(updated=utc_now().isoformat(), fingerprint=fingerprint({c: lists[c] for c in seeded}))
            pipe.hset(self.key("sources"), CURATED, info.to_json())
        pipe.set(self.key("gen", "seq"), str(generation))
        return seeded

    async def replace_curated(
        self, lists: Mapping[str, Sequence[str]], version: str, actor: str
    ) -> ImportResult | None:
        """Make the `curated` source exactly `lists` if it holds other content (an upgrade); None if it was current.

        Only the curated lists change, in one switch; admin and imported entries stay. Equal content under
        another version only has its version noted.
        """
        wanted = {category: hosts for category, hosts in lists.items() if hosts}
        known = (await self.source_infos()).get(CURATED, SourceInfo())
        stamp = SourceInfo(updated=utc_now().isoformat(), version=version, fingerprint=fingerprint(wanted))
        if known.fingerprint == stamp.fingerprint:
            if known.version != version:
                noted = SourceInfo(**{**asdict(known), "version": version})
                await self.client.hset(self.key("sources"), CURATED, noted.to_json())
            return None
        batches = {category: [list(hosts)] for category, hosts in wanted.items()}
        return await self.import_categories(
            batches, True, actor=actor, source=CURATED, info=stamp, whole=True, action="categories-curated"
        )

    async def source_infos(self) -> dict[str, SourceInfo]:
        found = await self.client.hgetall(self.key("sources"))
        return {str(name): SourceInfo.from_json(str(text)) for name, text in sorted(found.items())}

    async def list_sizes(self) -> dict[ListKey, int]:
        """Entries per (category, source) list."""
        generations = await self.list_generations()
        async with self.client.pipeline(transaction=False) as pipe:
            for (category, _), generation in generations.items():
                pipe.scard(self.key("cat", category, generation))
            sizes = await pipe.execute()
        return dict(zip(generations, (int(size) for size in sizes), strict=True))

    async def category_sizes(self) -> dict[str, int]:
        """Distinct entries per category (the union of its sources, counted inside Redis)."""
        by_category: dict[str, list[str]] = {}
        for (category, _), generation in (await self.list_generations()).items():
            by_category.setdefault(category, []).append(self.key("cat", category, generation))
        scratch = self.key("tmp", secrets.token_hex(8))
        async with self.client.pipeline(transaction=True) as pipe:
            for keys in by_category.values():
                pipe.sunionstore(scratch, keys)
            pipe.unlink(scratch)
            sizes = (await pipe.execute())[:-1]
        return {category: int(size) for category, size in zip(by_category, sizes, strict=True) if int(size)}
