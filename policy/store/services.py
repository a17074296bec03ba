"""The admins' services: additions to the shipped catalogue and overrides of it, one record per service id.

Kept like the rules table (a short hash, WATCHed from read to write, the whole table announced after each
change), so every worker holds exactly the table stored. The shipped catalogue is not here: it ships with the
code (`policy.services.shipped_catalogue`), so an upgrade brings its new entries without touching the store.
"""

from __future__ import annotations

from collections.abc import Iterable

from policy.services import Service, ServiceError
from policy.store.changes import Change, ServicesChanged
from policy.store.errors import StoreError
from policy.store.rules import RulesPart


def sorted_services(texts: Iterable[str]) -> tuple[Service, ...]:
    """The records by id; StoreError if one cannot be read (hand-written into Redis).

    Not skipped: a record nobody can read might be the one that blocks a service, so a worker keeps the policy
    it holds (and says why) rather than load one without it, and an admin's change is refused until it is fixed.
    """
    services = []
    for text in texts:
        try:
            services.append(Service.from_json(text))
        except ServiceError as error:
            raise StoreError(f"the store's services table holds an unreadable record {text[:60]!r}: {error}") from None
    return tuple(sorted(services, key=lambda service: service.id))


class ServicesPart(RulesPart):
    async def admin_services(self) -> list[Service]:
        return list(sorted_services(await self._records("services")))

    async def put_service(self, service: Service, actor: str = "clearance") -> None:
        """Add a service, or replace the admin record with its id (a shipped one is overridden, not changed)."""
        await self._write_record("service", service.id, service.to_json(), actor, _services_changed)

    async def remove_service(self, service_id: str, actor: str = "clearance") -> None:
        """Drop the admin record: an added service goes, an overridden shipped one is itself again."""
        await self._write_record("service", service_id, None, actor, _services_changed)


def _services_changed(texts: list[str]) -> Change:
    return ServicesChanged(services=sorted_services(texts))
