"""All Redis I/O for policy data lives here; everything else works on the plain values it returns.

Layout (all keys under the configurable prefix, default `clearance:`):

- `categories` (hash): category -> its current generation number
- `cat:{category}:{generation}` (set): the list entries (hosts, IPs) of one generation of a category
- `gen:seq` (counter): the last generation number handed out
- `approvals` (hash): approval id -> approval JSON; `approval:seq` (counter): the last approval number
- `usage:count`, `usage:last` (hashes): approval id -> requests passed on it, and when it was last used
- `directory` (hash): user -> person JSON (department, groups, departments headed or delegated)
- `exemptions` (hash): exemption id -> JSON (network, categories); `exemption:seq` (counter)
- `audit` (stream): every change, with actor, time, action, target, department, before and after
- `rules` (hash): rule id -> rule JSON (allow-list entries and path rules); `rule:seq` (counter)
- `requests` (hash): access request id -> request JSON (from the portal); `request:seq` (counter);
  `request:open` (hash): "user TAB category TAB host" -> the id of its one pending request;
  `request:token:{nonce}` (string, expires with the token): the request a block-page token already made
- `portal:secret` (string): signs block-page tokens when the config gives no `portal.secret`
- `policy:version` (counter): bumped on every change; the ICAP ISTag is derived from it
- `changes` (pub/sub channel): `{version} {json}` for every change, published in the same transaction

Serve processes load everything once and then follow `changes`; a request never waits for Redis.
Imports build a new generation beside the live one and switch in one step, so nobody sees half a list.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import redis.asyncio as aioredis
import structlog
from redis.exceptions import RedisError, ResponseError, WatchError

from policy.approvals import Approval, utc_now
from policy.categories import NO_MATCH, CategoryMatch
from policy.directory import Directory, Person
from policy.hosts import host_suffixes
from policy.requests import AccessRequest, RequestStatus
from policy.rules import Rule, RuleIndex, RuleKind
from policy.state import ApprovalIndex, Exemption, PolicyState

audit_log = structlog.get_logger("clearance.audit")

BUMP_SCRIPT = """
local version = redis.call('INCR', KEYS[1])
redis.call('PUBLISH', KEYS[2], version .. ' ' .. ARGV[1])
return version
"""

ADD_HOSTS_SCRIPT = """
local generation = redis.call('HGET', KEYS[1], ARGV[2])
if not generation then
  generation = redis.call('INCR', KEYS[2])
  redis.call('HSET', KEYS[1], ARGV[2], generation)
end
local key = ARGV[1] .. 'cat:' .. ARGV[2] .. ':' .. generation
local added = redis.call('SADD', key, unpack(ARGV, 4))
if added > 0 then
  local version = redis.call('INCR', KEYS[3])
  redis.call('PUBLISH', KEYS[4], version .. ' ' .. ARGV[3])
end
return added
"""

# Switch categories to their staged generations in one step; refuse if any moved on since staging began.
# Switch categories to their staged generations in one step; refuse if any moved on since staging began.
# ARGV: message, prefix, merge flag, then (category, staged generation, live generation) per category.
# A merge first folds in what `add_hosts` wrote to the live generation while the import was staging.
SWITCH_SCRIPT = """
local n = (#ARGV - 3) / 3
for i = 0, n - 1 do
  local current = redis.call('HGET', KEYS[1], ARGV[4 + i * 3]) or ''
  if current ~= ARGV[6 + i * 3] then
    return redis.error_reply('CONFLICT ' .. ARGV[4 + i * 3] .. ' changed during the import')
  end
end
for i = 0, n - 1 do
  local category, staged, live = ARGV[4 + i * 3], ARGV[5 + i * 3], ARGV[6 + i * 3]
  if ARGV[3] == '1' and live ~= '' then
    local staged_key = ARGV[2] .. 'cat:' .. category .. ':' .. staged
    redis.call('SUNIONSTORE', staged_key, staged_key, ARGV[2] .. 'cat:' .. category .. ':' .. live)
  end
  redis.call('HSET', KEYS[1], category, staged)
end
local version = redis.call('INCR', KEYS[2])
redis.call('PUBLISH', KEYS[3], version .. ' ' .. ARGV[1])
return version
"""

# Above both the counter and every id in the file, so a new grant never takes an id the file restores.
RESERVE_IDS_SCRIPT = """
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
local floor = tonumber(ARGV[1])
if current < floor then current = floor end
local last = current + tonumber(ARGV[2])
redis.call('SET', KEYS[1], last)
return last
"""

# A retired generation outlives the switch briefly, so a reader that fetched the old generation number
# just before the switch still finds its entries (never an empty category).
RETIRED_TTL_S = 300
AUDIT_MAXLEN = 1_000_000
AUDIT_HOSTS = 20  # hosts named in a `categories add/load` audit entry (the counts are always there)

ADD_BATCH = 1000
IMPORT_BATCH = 5000
LOAD_BATCH = 20000


# Any failure to reach or talk to Redis. Callers catch this name, so only the store imports redis.
StoreUnavailable = RedisError


class StoreError(Exception):
    """A policy change that cannot be made (unknown approval, already revoked, …)."""


class RequestChanged(StoreError):
    """An access request changed between reading and deciding it (someone else decided it): read it again."""


@dataclass(frozen=True, slots=True)
class Change:
    """One message from the `changes` channel."""

    version: int
    kind: str  # hosts | categories | approvals | rules
    data: Mapping[str, Any]

    @classmethod
    def parse(cls, message: str) -> Change:
        version, _, payload = message.partition(" ")
        data = json.loads(payload)
        return cls(version=int(version), kind=str(data["kind"]), data=data)


@dataclass(frozen=True, slots=True)
class ImportResult:
    entries: dict[str, int]  # category -> entries in its new generation
    version: int


class PolicyStore:
    def __init__(self, client: aioredis.Redis, prefix: str = "clearance:") -> None:
        self.client = client
        self.prefix = prefix
        self._bump = client.register_script(BUMP_SCRIPT)
        self._add_hosts = client.register_script(ADD_HOSTS_SCRIPT)
        self._switch = client.register_script(SWITCH_SCRIPT)
        self._reserve_ids = client.register_script(RESERVE_IDS_SCRIPT)

    @classmethod
    def from_url(cls, url: str, prefix: str = "clearance:") -> PolicyStore:
        return cls(aioredis.Redis.from_url(url, decode_responses=True), prefix)

    async def close(self) -> None:
        await self.client.aclose()

    def key(self, *parts: str) -> str:
        return self.prefix + ":".join(parts)

    @property
    def channel(self) -> str:
        return self.key("changes")

    def _bump_keys(self) -> list[str]:
        return [self.key("policy", "version"), self.channel]

    async def version(self) -> int:
        return int(await self.client.get(self.key("policy", "version")) or 0)

    # ---- loading policy into memory ---------------------------------------------------------

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

    async def load_state(self) -> PolicyState:
        """Everything, for a serve process: version first, so later changes are re-applied, never missed."""
        state = PolicyState(version=await self.version())
        for category, generation in (await self.generations()).items():
            async for batch in self.category_entries(category, generation):
                state.categories.add(category, batch)
        state.approvals = ApprovalIndex(await self.all_approvals())
        state.rules = RuleIndex(await self.list_rules())
        state.directory = await self.load_directory()
        state.exemptions = tuple(await self.exemptions())
        return state

    async def state_for(self, host: str | None) -> PolicyState:
        """What one request needs without loading every list (its host's entries, and all the rest): the CLI."""
        suffixes = host_suffixes(host) if host else []
        generations = await self.generations()
        async with self.client.pipeline(transaction=False) as pipe:
            pipe.get(self.key("policy", "version"))
            for category, generation in generations.items():
                if suffixes:
                    pipe.smismember(self.key("cat", category, generation), suffixes)
            results = await pipe.execute()
        state = PolicyState(version=int(results[0] or 0))
        if suffixes:
            for category, flags in zip(generations, results[1:], strict=True):
                state.categories.add(category, [entry for entry, hit in zip(suffixes, flags, strict=True) if hit])
        state.approvals = ApprovalIndex(await self.all_approvals())
        state.rules = RuleIndex(await self.list_rules())
        state.directory = await self.load_directory()
        state.exemptions = tuple(await self.exemptions())
        return state

    async def lookup_categories(self, host: str) -> CategoryMatch:
        state = await self.state_for(host)
        return state.categories.match(host) if len(state.categories) else NO_MATCH

    # ---- categories -----------------------------------------------------------------------

    async def add_hosts(
        self, category: str, hosts: Sequence[str], actor: str = "clearance", action: str = "categories-add"
    ) -> int:
        """Add entries to a category's live generation; returns how many were new. One audit entry per call."""
        added = 0
        before = await self._live_size(category)
        keys = [self.key("categories"), self.key("gen", "seq"), *self._bump_keys()]
        for start in range(0, len(hosts), ADD_BATCH):
            batch = list(hosts[start : start + ADD_BATCH])
            message = json.dumps({"kind": "hosts", "category": category, "hosts": batch})
            added += int(await self._add_hosts(keys=keys, args=[self.prefix, category, message, *batch]))
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
                generation = str(await self.client.incr(self.key("gen", "seq")))
                staged[category] = generation
                target = self.key("cat", category, generation)
                if not replace and category in live:
                    await self.client.sunionstore(target, [self.key("cat", category, live[category])])
                async with self.client.pipeline(transaction=False) as pipe:
                    pending = 0
                    queued = 0
                    for batch in batches:
                        if batch:
                            pipe.sadd(target, *batch)
                            pending += 1
                            queued += len(batch)
                        if pending >= 8:  # a few batches per round trip
                            await pipe.execute()
                            if progress is not None:
                                progress(queued)
                            pending = queued = 0
                    await pipe.execute()
                    if progress is not None and queued:
                        progress(queued)
            message = json.dumps({"kind": "categories", "categories": sorted(staged)})
            args: list[str] = [message, self.prefix, "0" if replace else "1"]
            for category, generation in staged.items():
                args += [category, generation, live.get(category, "")]
            keys = [self.key("categories"), *self._bump_keys()]
            try:
                version = int(await self._switch(keys=keys, args=args))
            except ResponseError as error:
                if "CONFLICT" not in str(error):
                    raise
                raise StoreError(str(error).partition("CONFLICT ")[2] + "; nothing was changed, run it again") from None
        except BaseException:
            if staged:
                await self.client.unlink(*(self.key("cat", c, g) for c, g in staged.items()))
            raise
        async with self.client.pipeline(transaction=False) as pipe:
            for category in staged:
                if category in live:
                    pipe.expire(self.key("cat", category, live[category]), RETIRED_TTL_S)
            await pipe.execute()
        sizes = await self._sizes(staged)
        await self.audit(
            actor,
            "categories-import",
            ", ".join(sizes),
            {"entries": {category: before.get(category, 0) for category in sizes}},
            {"entries": sizes, "mode": "replace" if replace else "merge", "version": version},
        )
        return ImportResult(entries=sizes, version=version)

    async def _sizes(self, generations: Mapping[str, str]) -> dict[str, int]:
        async with self.client.pipeline(transaction=False) as pipe:
            for category, generation in generations.items():
                pipe.scard(self.key("cat", category, generation))
            sizes = await pipe.execute()
        return dict(sorted(zip(generations, (int(size) for size in sizes), strict=True)))

    async def category_sizes(self) -> dict[str, int]:
        return await self._sizes(await self.generations())

    async def defaults_loaded(self) -> bool:
        """Whether the shipped lists were loaded once already (an admin who empties a list keeps it empty)."""
        return bool(await self.client.exists(self.key("meta", "defaults-loaded")))

    async def mark_defaults_loaded(self) -> None:
        await self.client.set(self.key("meta", "defaults-loaded"), datetime.now(UTC).isoformat())

    async def is_empty(self) -> bool:
        return not await self.client.exists(self.key("categories"))

    # ---- approvals ------------------------------------------------------------------------

    async def next_approval_id(self) -> str:
        return f"A{await self.client.incr(self.key('approval', 'seq'))}"

    async def reserve_approval_ids(self, floor: int, count: int) -> int:
        """Reserve `count` ids above both the counter and `floor` (ids an import restores); the last one."""
        return int(await self._reserve_ids(keys=[self.key("approval", "seq")], args=[floor, count]))

    async def get_approval(self, approval_id: str) -> Approval:
        text = await self.client.hget(self.key("approvals"), approval_id)
        if not text:
            raise StoreError(f"no approval with id {approval_id!r}")
        return Approval.from_json(text)

    async def all_approvals(self) -> list[Approval]:
        approvals = [Approval.from_json(text) for text in await self.client.hvals(self.key("approvals"))]
        return sorted(approvals, key=lambda approval: int(approval.id.lstrip("A") or 0))

    async def save_approval(self, approval: Approval, actor: str, action: str, before: Approval | None) -> None:
        """Write one approval, its audit entry and the change announcement in one transaction."""
        await self.save_approvals([(approval, before)], actor, action)

    async def save_approvals(
        self, changes: Sequence[tuple[Approval, Approval | None]], actor: str, action: str
    ) -> None:
        """Write many approvals (an import) in one transaction: all of them or none."""
        if not changes:
            return
        await self._load_scripts()
        async with self.client.pipeline(transaction=True) as pipe:
            self._queue_approvals(pipe, changes, actor, action)
            await pipe.execute()

    def _queue_approvals(
        self, pipe: Any, changes: Sequence[tuple[Approval, Approval | None]], actor: str, action: str
    ) -> None:
        """Queue approvals, their audit entries and the change announcement on a MULTI pipeline."""
        message = json.dumps({"kind": "approvals", "ids": [approval.id for approval, _ in changes]})
        if len(changes) > 100:
            message = json.dumps({"kind": "approvals", "ids": None})  # reload them all
        records: dict[Any, Any] = {approval.id: approval.to_json() for approval, _ in changes}
        pipe.hset(self.key("approvals"), mapping=records)
        numbers = [int(approval.id.lstrip("A") or 0) for approval, _ in changes]
        self._raise_seq(pipe, max(numbers))
        quiet = len(changes) > 10  # a bulk import logs one summary line, the stream still gets every entry
        for approval, before in changes:
            self._audit(pipe, actor, action, approval.id, approval.department, before, approval, log=not quiet)
        if quiet:
            audit_log.info("audit", actor=actor, action=action, target=f"{len(changes)} approvals")
        pipe.evalsha(self._bump.sha, 2, *self._bump_keys(), message)

    def _raise_seq(self, pipe: Any, number: int) -> None:
        """Imported ids must never be handed out again."""
        pipe.eval(
            "if tonumber(redis.call('GET', KEYS[1]) or '0') < tonumber(ARGV[1]) then "
            "redis.call('SET', KEYS[1], ARGV[1]) end",
            1,
            self.key("approval", "seq"),
            str(number),
        )

    async def _load_scripts(self) -> None:
        """EVALSHA inside MULTI cannot fall back to EVAL, so make sure the script is loaded first."""
        if await self.client.script_exists(self._bump.sha) != [True]:
            await self.client.script_load(BUMP_SCRIPT)

    # ---- usage ----------------------------------------------------------------------------

    async def record_usage(self, usage: Mapping[str, tuple[int, datetime]]) -> None:
        """Add counts and move `last used` forward (never back: workers flush in any order)."""
        if not usage:
            return
        async with self.client.pipeline(transaction=False) as pipe:
            for approval_id, (count, last_used) in usage.items():
                pipe.hincrby(self.key("usage", "count"), approval_id, count)
                pipe.eval(
                    "local old = redis.call('HGET', KEYS[1], ARGV[1]) "
                    "if (not old) or old < ARGV[2] then redis.call('HSET', KEYS[1], ARGV[1], ARGV[2]) end",
                    1,
                    self.key("usage", "last"),
                    approval_id,
                    last_used.astimezone(UTC).isoformat(),
                )
            await pipe.execute()

    async def usage(self) -> dict[str, tuple[int, datetime | None]]:
        counts = await self.client.hgetall(self.key("usage", "count"))
        lasts = await self.client.hgetall(self.key("usage", "last"))
        return {
            str(approval_id): (
                int(count),
                datetime.fromisoformat(str(lasts[approval_id])) if approval_id in lasts else None,
            )
            for approval_id, count in counts.items()
        }

    # ---- directory --------------------------------------------------------------------------

    async def load_directory(self) -> Directory:
        texts = await self.client.hvals(self.key("directory"))
        return Directory({person.user: person for person in (Person.from_json(text) for text in texts)})

    async def write_directory(self, people: Sequence[Person], actor: str, merge: bool) -> tuple[int, int]:
        """A full load replaces the directory in one step (staged, then RENAME); --merge updates rows.

        Returns (rows written, people in the directory afterwards).
        """
        await self._load_scripts()
        mapping: dict[Any, Any] = {person.user: person.to_json() for person in people}
        message = json.dumps({"kind": "directory"})
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
            pipe.evalsha(self._bump.sha, 2, *self._bump_keys(), message)
            pipe.hlen(self.key("directory"))
            results = await pipe.execute()
        return len(people), int(results[-1])

    # ---- exemptions -------------------------------------------------------------------------

    async def exemptions(self) -> list[Exemption]:
        items = [Exemption.from_json(text) for text in await self.client.hvals(self.key("exemptions"))]
        return sorted(items, key=lambda item: int(item.id.lstrip("E") or 0))

    async def add_exemption(self, network: str, categories: frozenset[str], note: str, actor: str) -> Exemption:
        exemption = Exemption(
            id=f"E{await self.client.incr(self.key('exemption', 'seq'))}",
            network=network,
            categories=categories,
            note=note,
        )
        await self._load_scripts()
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.hset(self.key("exemptions"), exemption.id, exemption.to_json())
            self._audit(pipe, actor, "exemption-add", exemption.id, None, None, json.loads(exemption.to_json()))
            pipe.evalsha(self._bump.sha, 2, *self._bump_keys(), json.dumps({"kind": "exemptions"}))
            await pipe.execute()
        return exemption

    async def remove_exemption(self, exemption_id: str, actor: str) -> None:
        text = await self.client.hget(self.key("exemptions"), exemption_id)
        if not text:
            raise StoreError(f"no exemption with id {exemption_id!r}")
        await self._load_scripts()
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.hdel(self.key("exemptions"), exemption_id)
            self._audit(pipe, actor, "exemption-remove", exemption_id, None, json.loads(text), None)
            pipe.evalsha(self._bump.sha, 2, *self._bump_keys(), json.dumps({"kind": "exemptions"}))
            await pipe.execute()

    # ---- access requests (the portal) -----------------------------------------------------

    async def portal_secret(self, generated: str) -> str:
        """The shared token secret: `generated` if none was kept yet, else the one every instance uses."""
        key = self.key("portal", "secret")
        await self.client.set(key, generated, nx=True)
        return str(await self.client.get(key))

    async def get_request(self, request_id: str) -> AccessRequest:
        text = await self.client.hget(self.key("requests"), request_id)
        if not text:
            raise StoreError(f"no access request with id {request_id!r}")
        return AccessRequest.from_json(text)

    async def all_requests(self) -> list[AccessRequest]:
        items = [AccessRequest.from_json(text) for text in await self.client.hvals(self.key("requests"))]
        return sorted(items, key=lambda item: int(item.id.lstrip("Q") or 0))

    async def create_request(
        self, build: Callable[[str], AccessRequest], open_key: str, nonce: str, nonce_ttl_s: int
    ) -> tuple[AccessRequest, bool]:
        """A new pending request (built by `build` from its id), unless one exists: (request, created).

        The request already made with this token (its nonce), or the pending one for the same user, category
        and host, is returned instead, so a second submit never makes a second request.
        """
        open_hash = self.key("request", "open")
        token_key = self.key("request", "token", nonce)
        while True:
            pipeline: Any = self.client.pipeline(transaction=True)  # WATCH/MULTI: redis-py leaves them untyped
            async with pipeline as pipe:
                try:
                    await pipe.watch(open_hash, token_key)
                    existing = await pipe.get(token_key) or await pipe.hget(open_hash, open_key)
                    if existing:
                        await pipe.reset()
                        return await self.get_request(str(existing)), False
                    number = await self.client.incr(self.key("request", "seq"))
                    request = build(f"Q{number}")
                    pipe.multi()
                    pipe.hset(self.key("requests"), request.id, request.to_json())
                    pipe.hset(open_hash, open_key, request.id)
                    pipe.set(token_key, request.id, ex=max(1, nonce_ttl_s))
                    self._audit(
                        pipe, request.user, "request-submit", request.id, request.department, None,
                        request.to_record(with_key=False),
                    )
                    await pipe.execute()
                    return request, True
                except WatchError:
                    continue  # another submit touched the index: look again

    async def save_decision(
        self, before: AccessRequest, after: AccessRequest, approval: Approval | None, actor: str
    ) -> None:
        """A request decided, with its approval (if approved), audit entries and change announcement, at once.

        RequestChanged if the stored request is no longer `before` (decided meanwhile): nothing is written.
        """
        if before.status is not RequestStatus.PENDING:
            raise StoreError(f"request {before.id} is already {before.status}")
        await self._load_scripts()
        requests = self.key("requests")
        pipeline: Any = self.client.pipeline(transaction=True)
        async with pipeline as pipe:
            try:
                await pipe.watch(requests)
                current = await pipe.hget(requests, before.id)
                if not current or AccessRequest.from_json(current) != before:
                    raise RequestChanged(f"request {before.id} changed meanwhile")
                pipe.multi()
                pipe.hset(requests, after.id, after.to_json())
                pipe.hdel(self.key("request", "open"), before.open_key)
                if approval is not None:
                    self._queue_approvals(pipe, [(approval, None)], actor, "grant")
                self._audit(
                    pipe, actor, f"request-{'approve' if approval is not None else 'deny'}", after.id,
                    after.department, before.to_record(with_key=False), after.to_record(with_key=False),
                )
                await pipe.execute()
            except WatchError:
                raise RequestChanged(f"request {before.id} changed meanwhile") from None

    # ---- audit ----------------------------------------------------------------------------

    def _audit(
        self,
        pipe: Any,
        actor: str,
        action: str,
        target: str,
        department: str | None,
        before: Approval | Mapping[str, Any] | None,
        after: Approval | Mapping[str, Any] | None,
        log: bool = True,
    ) -> None:
        def render(value: Approval | Mapping[str, Any] | None) -> str:
            if value is None:
                return ""
            if isinstance(value, Approval):
                return value.to_json()
            return json.dumps(value, ensure_ascii=False, sort_keys=True, default=str)

        if log:
            audit_log.info("audit", actor=actor, action=action, target=target, department=department or None)
        pipe.xadd(
            self.key("audit"),
            {
                "at": utc_now().isoformat(),
                "actor": actor,
                "action": action,
                "target": target,
                "department": department or "",
                "before": render(before),
                "after": render(after),
            },
            maxlen=AUDIT_MAXLEN,
            approximate=True,
        )

    async def audit(
        self, actor: str, action: str, target: str, before: Mapping[str, Any] | None, after: Mapping[str, Any] | None
    ) -> None:
        """An audit entry on its own (category changes, which are written by scripts)."""
        async with self.client.pipeline(transaction=False) as pipe:
            self._audit(pipe, actor, action, target, None, before, after)
            await pipe.execute()

    async def read_audit(self, since: datetime | None = None) -> list[dict[str, str]]:
        start = "-" if since is None else f"{int(since.timestamp() * 1000)}-0"
        entries: Any = await self.client.xrange(self.key("audit"), min=start, max="+")
        return [{"id": str(entry_id), **{str(k): str(v) for k, v in fields.items()}} for entry_id, fields in entries]

    # ---- rules ----------------------------------------------------------------------------

    async def add_rule(
        self,
        kind: RuleKind,
        host: str,
        path_prefix: str = "/",
        category: str | None = None,
        note: str = "",
        actor: str = "clearance",
    ) -> Rule:
        number = await self.client.incr(self.key("rule", "seq"))
        rule = Rule(id=f"R{number}", kind=kind, host=host, path_prefix=path_prefix, category=category, note=note)
        await self._load_scripts()
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.hset(self.key("rules"), rule.id, rule.to_json())
            self._audit(pipe, actor, "rule-add", rule.id, None, None, json.loads(rule.to_json()))
            pipe.evalsha(self._bump.sha, 2, *self._bump_keys(), json.dumps({"kind": "rules"}))
            await pipe.execute()
        return rule

    async def remove_rule(self, rule_id: str, actor: str = "clearance") -> None:
        text = await self.client.hget(self.key("rules"), rule_id)
        if not text:
            raise StoreError(f"no rule with id {rule_id!r}")
        await self._load_scripts()
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.hdel(self.key("rules"), rule_id)
            self._audit(pipe, actor, "rule-remove", rule_id, None, json.loads(text), None)
            pipe.evalsha(self._bump.sha, 2, *self._bump_keys(), json.dumps({"kind": "rules"}))
            await pipe.execute()

    async def list_rules(self) -> list[Rule]:
        rules = [Rule.from_json(text) for text in await self.client.hvals(self.key("rules"))]
        return sorted(rules, key=lambda rule: int(rule.id.lstrip("R")))
