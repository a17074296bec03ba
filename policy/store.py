"""All Redis I/O for policy data lives here; everything else works on the plain values it returns.

Layout (all keys under the configurable prefix, default `clearance:`):

- `categories` (hash): category -> its current generation number
- `cat:{category}:{generation}` (set): the list entries (hosts, IPs) of one generation of a category
- `gen:seq` (counter): the last generation number handed out
- `approvals:user:{user}` (hash): approval id -> approval JSON; one read fetches all of a user's approvals
- `approval:owner` (hash): approval id -> user, to find an approval by id
- `approval:seq` (counter): the last approval number
- `rules` (hash): rule id -> rule JSON (allow-list entries and path rules); `rule:seq` (counter)
- `policy:version` (counter): bumped on every change; the ICAP ISTag is derived from it
- `changes` (pub/sub channel): `{version} {json}` for every change, published in the same transaction

Serve processes load everything once and then follow `changes`; a request never waits for Redis.
Imports build a new generation beside the live one and switch in one step, so nobody sees half a list.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from .approvals import Approval, utc_now
from .categories import NO_MATCH, CategoryMatch
from .hosts import host_suffixes
from .rules import Rule, RuleIndex, RuleKind
from .state import PolicyState

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

# A retired generation outlives the switch briefly, so a reader that fetched the old generation number
# just before the switch still finds its entries (never an empty category).
RETIRED_TTL_S = 300

ADD_BATCH = 1000
IMPORT_BATCH = 5000
LOAD_BATCH = 20000


class StoreError(Exception):
    """A policy change that cannot be made (unknown approval, already revoked, …)."""


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
        state.approvals = await self.all_approvals()
        state.rules = RuleIndex(await self.list_rules())
        return state

    async def state_for(self, host: str | None, user: str | None) -> PolicyState:
        """Just what one request needs (its host's entries, its user's approvals, all rules): for the CLI."""
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
        if user:
            state.set_user_approvals(user, await self.user_approvals(user))
        state.rules = RuleIndex(await self.list_rules())
        return state

    async def lookup_categories(self, host: str) -> CategoryMatch:
        state = await self.state_for(host, None)
        return state.categories.match(host) if len(state.categories) else NO_MATCH

    # ---- categories -----------------------------------------------------------------------

    async def add_hosts(self, category: str, hosts: Sequence[str]) -> int:
        """Add entries to a category's live generation; returns how many were new."""
        added = 0
        keys = [self.key("categories"), self.key("gen", "seq"), *self._bump_keys()]
        for start in range(0, len(hosts), ADD_BATCH):
            batch = list(hosts[start : start + ADD_BATCH])
            message = json.dumps({"kind": "hosts", "category": category, "hosts": batch})
            added += int(await self._add_hosts(keys=keys, args=[self.prefix, category, message, *batch]))
        return added

    async def import_categories(
        self,
        sources: Mapping[str, Iterable[Sequence[str]]],
        replace: bool,
        progress: Callable[[int], None] | None = None,
    ) -> ImportResult:
        """Stage each category's new generation beside the live one, then switch all of them in one step.

        `replace` starts each generation empty; otherwise it starts as a copy of the live one. If anything
        fails before the switch, the staged sets are deleted and the live lists are untouched.
        """
        live = await self.generations()
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
        return ImportResult(entries=sizes, version=version)

    async def _sizes(self, generations: Mapping[str, str]) -> dict[str, int]:
        async with self.client.pipeline(transaction=False) as pipe:
            for category, generation in generations.items():
                pipe.scard(self.key("cat", category, generation))
            sizes = await pipe.execute()
        return dict(sorted(zip(generations, (int(size) for size in sizes), strict=True)))

    async def category_sizes(self) -> dict[str, int]:
        return await self._sizes(await self.generations())

    async def is_empty(self) -> bool:
        return not await self.client.exists(self.key("categories"))

    # ---- approvals ------------------------------------------------------------------------

    async def grant(
        self,
        user: str,
        category: str,
        expires_at: datetime,
        approver: str,
        reason: str,
        now: datetime | None = None,
    ) -> Approval:
        number = await self.client.incr(self.key("approval", "seq"))
        approval = Approval(
            id=f"A{number}",
            user=user,
            category=category,
            approver=approver,
            reason=reason,
            created_at=now or utc_now(),
            expires_at=expires_at,
        )
        await self._save(approval)
        return approval

    async def get_approval(self, approval_id: str) -> Approval:
        user = await self.client.hget(self.key("approval", "owner"), approval_id)
        text = await self.client.hget(self.key("approvals", "user", str(user)), approval_id) if user else None
        if not text:
            raise StoreError(f"no approval with id {approval_id!r}")
        return Approval.from_json(text)

    async def revoke(self, approval_id: str, by: str, reason: str | None, now: datetime | None = None) -> Approval:
        approval = await self.get_approval(approval_id)
        if approval.revoked_at is not None:
            raise StoreError(f"approval {approval_id} was already revoked by {approval.revoked_by}")
        revoked = approval.revoked(by=by, at=now or utc_now(), reason=reason)
        await self._save(revoked)
        return revoked

    async def user_approvals(self, user: str) -> list[Approval]:
        return [Approval.from_json(text) for text in await self.client.hvals(self.key("approvals", "user", user))]

    async def all_approvals(self) -> dict[str, tuple[Approval, ...]]:
        users = sorted({str(name) for name in await self.client.hvals(self.key("approval", "owner"))})
        async with self.client.pipeline(transaction=False) as pipe:
            for name in users:
                pipe.hvals(self.key("approvals", "user", name))
            results = await pipe.execute()
        return {
            name: tuple(Approval.from_json(text) for text in texts)
            for name, texts in zip(users, results, strict=True)
            if texts
        }

    async def list_approvals(self, user: str | None = None) -> list[Approval]:
        if user:
            approvals = await self.user_approvals(user)
        else:
            approvals = [approval for held in (await self.all_approvals()).values() for approval in held]
        return sorted(approvals, key=lambda approval: int(approval.id.lstrip("A")))

    async def _save(self, approval: Approval) -> None:
        message = json.dumps({"kind": "approvals", "user": approval.user}, ensure_ascii=False)
        await self._load_scripts()
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.hset(self.key("approvals", "user", approval.user), approval.id, approval.to_json())
            pipe.hset(self.key("approval", "owner"), approval.id, approval.user)
            pipe.evalsha(self._bump.sha, 2, *self._bump_keys(), message)
            await pipe.execute()

    async def _load_scripts(self) -> None:
        """EVALSHA inside MULTI cannot fall back to EVAL, so make sure the script is loaded first."""
        if await self.client.script_exists(self._bump.sha) != [True]:
            await self.client.script_load(BUMP_SCRIPT)

    # ---- rules ----------------------------------------------------------------------------

    async def add_rule(
        self, kind: RuleKind, host: str, path_prefix: str = "/", category: str | None = None, note: str = ""
    ) -> Rule:
        number = await self.client.incr(self.key("rule", "seq"))
        rule = Rule(id=f"R{number}", kind=kind, host=host, path_prefix=path_prefix, category=category, note=note)
        await self._load_scripts()
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.hset(self.key("rules"), rule.id, rule.to_json())
            pipe.evalsha(self._bump.sha, 2, *self._bump_keys(), json.dumps({"kind": "rules"}))
            await pipe.execute()
        return rule

    async def remove_rule(self, rule_id: str) -> None:
        if not await self.client.hexists(self.key("rules"), rule_id):
            raise StoreError(f"no rule with id {rule_id!r}")
        await self._load_scripts()
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.hdel(self.key("rules"), rule_id)
            pipe.evalsha(self._bump.sha, 2, *self._bump_keys(), json.dumps({"kind": "rules"}))
            await pipe.execute()

    async def list_rules(self) -> list[Rule]:
        rules = [Rule.from_json(text) for text in await self.client.hvals(self.key("rules"))]
        return sorted(rules, key=lambda rule: int(rule.id.lstrip("R")))
