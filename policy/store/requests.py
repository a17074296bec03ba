"""Access requests from the portal: one pending request per user, category, host and service; decided once."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from redis.exceptions import WatchError

from policy.approvals import Approval
from policy.requests import AccessRequest, RequestStatus
from policy.store.approvals import ApprovalsPart
from policy.store.base import in_id_order
from policy.store.errors import RequestChanged, StoreError


class RequestsPart(ApprovalsPart):
    async def portal_secret(self, generated: str) -> str:
        """The shared token secret: `generated` if none was kept yet, else the one every instance uses."""
        key = self.key("portal", "secret")
        await self.client.set(key, generated, nx=True)
        return str(await self.client.get(key))

    async def use_link(self, nonce: str, ttl_s: int) -> bool:
        """Record a head's single-use link as used: True the first time, False on every replay.

        `request:link:{nonce}`, set only if absent (one round trip, so two clicks at once cannot both win),
        kept a little longer than the link itself is valid, then gone with it.
        """
        return bool(await self.client.set(self.key("request", "link", nonce), "used", nx=True, ex=max(1, ttl_s)))

    async def link_used(self, nonce: str) -> bool:
        return bool(await self.client.exists(self.key("request", "link", nonce)))

    async def get_request(self, request_id: str) -> AccessRequest:
        return AccessRequest.from_json(await self._record("requests", request_id, "access request"))

    async def all_requests(self) -> list[AccessRequest]:
        return in_id_order((AccessRequest.from_json(text) for text in await self._records("requests")), "Q")

    async def create_request(
        self,
        build: Callable[[str], AccessRequest],
        open_key: str,
        nonce: str,
        nonce_ttl_s: int,
        max_open_per_user: int = 0,
        actor: str | None = None,
    ) -> tuple[AccessRequest | None, bool]:
        """A new pending request (built by `build` from its id), unless one exists: (request, created).

        The request already made with this token (its nonce), or the pending one for the same user, category,
        host and service (`policy.requests.open_key`), is returned instead, so a second submit never makes a
        second request. (None, False) when the user already has `max_open_per_user` pending requests (0: no
        bound), checked in the same WATCH. The audit names `actor` (default: the requester).
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
                    user = open_key.partition("\t")[0] + "\t"
                    if max_open_per_user and sum(
                        str(key).startswith(user) for key in await pipe.hkeys(open_hash)
                    ) >= max_open_per_user:
                        await pipe.reset()
                        return None, False
                    number = await self.client.incr(self.key("request", "seq"))
                    request = build(f"Q{number}")
                    pipe.multi()
                    pipe.hset(self.key("requests"), request.id, request.to_json())
                    pipe.hset(open_hash, open_key, request.id)
                    pipe.set(token_key, request.id, ex=max(1, nonce_ttl_s))
                    self._audit(
                        pipe, actor or request.user, "request-submit", request.id, request.department, None,
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
