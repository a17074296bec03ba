"""All Redis I/O for policy data lives here; everything else works on the plain values it returns.

Layout (all keys under the configurable prefix, default `clearance:`):

- `hosts` (hash): list entry (host or IP) -> comma-separated categories
- `category:{name}` (set): the entries of one category, for listing and counting
- `approvals:user:{user}` (hash): approval id -> approval JSON; one read fetches all of a user's approvals
- `approval:owner` (hash): approval id -> user, to find an approval by id
- `approval:seq` (counter): the next approval number
- `policy:version` (counter): bumped on every change; the ICAP ISTag is derived from it

A request costs one round trip: the host's suffixes, the user's approvals and the version in one pipeline.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

import redis.asyncio as aioredis

from .approvals import Approval, utc_now
from .categories import NO_MATCH, CategoryMatch, most_specific
from .hosts import host_suffixes

ADD_HOSTS_SCRIPT = """
local added = 0
for i = 2, #ARGV do
  local host = ARGV[i]
  local current = redis.call('HGET', KEYS[1], host)
  if not current then
    redis.call('HSET', KEYS[1], host, ARGV[1])
    added = added + 1
  else
    local present = false
    for name in string.gmatch(current, '[^,]+') do
      if name == ARGV[1] then present = true end
    end
    if not present then
      redis.call('HSET', KEYS[1], host, current .. ',' .. ARGV[1])
      added = added + 1
    end
  end
  redis.call('SADD', KEYS[2], host)
end
if added > 0 then redis.call('INCR', KEYS[3]) end
return added
"""

BATCH = 1000


class StoreError(Exception):
    """A policy change that cannot be made (unknown approval, already revoked, …)."""


@dataclass(frozen=True, slots=True)
class Lookup:
    """Everything a decision needs about one request, fetched in one round trip."""

    match: CategoryMatch
    approvals: tuple[Approval, ...]
    version: int


class PolicyStore:
    def __init__(self, client: aioredis.Redis, prefix: str = "clearance:") -> None:
        self.client = client
        self.prefix = prefix
        self._add_hosts = client.register_script(ADD_HOSTS_SCRIPT)

    @classmethod
    def from_url(cls, url: str, prefix: str = "clearance:") -> PolicyStore:
        return cls(aioredis.Redis.from_url(url, decode_responses=True), prefix)

    async def close(self) -> None:
        await self.client.aclose()

    def key(self, *parts: str) -> str:
        return self.prefix + ":".join(parts)

    # ---- the request path ---------------------------------------------------------------

    async def lookup(self, host: str | None, user: str | None) -> Lookup:
        suffixes = host_suffixes(host) if host else []
        async with self.client.pipeline(transaction=False) as pipe:
            if suffixes:
                pipe.hmget(self.key("hosts"), suffixes)
            if user:
                pipe.hvals(self.key("approvals", "user", user))
            pipe.get(self.key("policy", "version"))
            results = await pipe.execute()
        match = most_specific(suffixes, results.pop(0)) if suffixes else NO_MATCH
        approvals = tuple(Approval.from_json(text) for text in results.pop(0)) if user else ()
        return Lookup(match=match, approvals=approvals, version=int(results[0] or 0))

    async def version(self) -> int:
        return int(await self.client.get(self.key("policy", "version")) or 0)

    # ---- categories -----------------------------------------------------------------------

    async def add_hosts(self, category: str, hosts: Sequence[str]) -> int:
        """Add entries to a category (merging with other categories of the same entry); returns how many changed."""
        added = 0
        keys = [self.key("hosts"), self.key("category", category), self.key("policy", "version")]
        for start in range(0, len(hosts), BATCH):
            added += int(await self._add_hosts(keys=keys, args=[category, *hosts[start : start + BATCH]]))
        return added

    async def category_sizes(self) -> dict[str, int]:
        names = [
            key.removeprefix(self.key("category", ""))
            async for key in self.client.scan_iter(match=self.key("category", "*"), count=1000)
        ]
        async with self.client.pipeline(transaction=False) as pipe:
            for name in names:
                pipe.scard(self.key("category", name))
            sizes = await pipe.execute()
        return dict(sorted(zip(names, (int(size) for size in sizes), strict=True)))

    async def is_empty(self) -> bool:
        return not await self.client.exists(self.key("hosts"))

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

    async def list_approvals(self, user: str | None = None) -> list[Approval]:
        if user:
            users: Iterable[str] = [user]
        else:
            users = sorted({str(name) for name in await self.client.hvals(self.key("approval", "owner"))})
        async with self.client.pipeline(transaction=False) as pipe:
            for name in users:
                pipe.hvals(self.key("approvals", "user", name))
            results = await pipe.execute()
        approvals = [Approval.from_json(text) for texts in results for text in texts]
        return sorted(approvals, key=lambda approval: int(approval.id.lstrip("A")))

    async def _save(self, approval: Approval) -> None:
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.hset(self.key("approvals", "user", approval.user), approval.id, approval.to_json())
            pipe.hset(self.key("approval", "owner"), approval.id, approval.user)
            pipe.incr(self.key("policy", "version"))
            await pipe.execute()
