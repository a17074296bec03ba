"""All Redis I/O for policy data lives in this package; everything else works on the plain values it returns.

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
- `discovery:{day}`, `discovery:{day}:last` (hashes), `discovery:days` (set): sightings in monitor and
  caution mode, counted per day (`policy.store.discovery`)
- `graces` (hash), `grace:count` (hash): the caution pages' continues in force, and how often each person
  continued (`policy.store.graces`)
- `modes` (hash): `{scope}:{name}` -> a roll-out mode setting's JSON (`policy.modes.ModeSetting`)
- `services` (hash): service id -> an admin's service JSON (an added service, or an override of a shipped one)
- `requests` (hash): access request id -> request JSON (from the portal); `request:seq` (counter);
  `request:open` (hash): "user TAB category TAB host" -> the id of its one pending request;
  `request:token:{nonce}` (string, expires with the token): the request a block-page token already made
- `portal:secret` (string): signs block-page tokens when the config gives no `portal.secret`
- `reminder:{mark}` (string, expiring): a reminder mail claimed (`claim TOKEN`) or `sent` (`policy.store.reminders`)
- `meta:epoch` (string): the store's identity (`policy.state.StoreEpoch` JSON), written with the default lists
  in the one transaction that initialises the store (`policy.store.identity`)
- `meta:defaults-loaded` (string): stores from before `meta:epoch`: when the shipped lists were loaded
- `policy:version` (counter): bumped on every change; the ICAP ISTag is derived from it
- `changes` (pub/sub channel): `{version} {json}` for every change, published in the same transaction
  (the typed changes and their encoding: `policy.store.changes`)

Serve processes load everything once and then follow `changes`; a request never waits for Redis.
Imports build a new generation beside the live one and switch in one step, so nobody sees half a list.

`PolicyStore` is composed of one part per area (categories, approvals, requests, directory, rules and
exemptions, audit, loading, the change feed, reminders sent), each in its own module over the shared `StoreBase`.
"""

from __future__ import annotations

import redis.asyncio as aioredis

from policy.store.feed import FeedPart
from policy.store.loading import LoadingPart
from policy.store.reminders import RemindersPart
from policy.store.sentinel import is_sentinel_url, sentinel_client


class PolicyStore(LoadingPart, FeedPart, RemindersPart):
    """The policy in Redis: every read and write of it, and the feed of its changes."""

    _sentinels: tuple[aioredis.Redis, ...] = ()

    @classmethod
    def from_url(cls, url: str, prefix: str = "clearance:") -> PolicyStore:
        """A store on `redis://`, `rediss://`, `unix://`, or the master Sentinel names (`policy.store.sentinel`)."""
        if not is_sentinel_url(url):
            return cls(aioredis.Redis.from_url(url, decode_responses=True), prefix)
        master, sentinels = sentinel_client(url)
        store = cls(master, prefix)
        store._sentinels = sentinels
        return store

    async def close(self) -> None:
        await self.client.aclose()
        for sentinel in self._sentinels:
            await sentinel.aclose()
