"""Which shipped services a process holds, and how they join the policy loaded from the store.

The shipped catalogue comes with the code, not from Redis: every process adds it to each policy it loads
(after the store's checks, like the protected hosts), so an upgrade brings its new entries at once and an
emptied store cannot drop them. `policy.load_default_lists: false` leaves it out, as it leaves out the lists.
"""

from __future__ import annotations

from icap_server.config import Config
from policy.services import Service, shipped_catalogue
from policy.state import PolicyState, ServiceCatalogue


def shipped_services(config: Config) -> tuple[Service, ...]:
    """The shipped services of the categories this configuration restricts or forbids."""
    if not config.policy.load_default_lists:
        return ()
    governed = {*config.policy.restricted_categories, *config.policy.forbidden_categories}
    return tuple(service for service in shipped_catalogue() if service.category in governed)


def add_catalogue(state: PolicyState, shipped: tuple[Service, ...]) -> None:
    """Put the shipped services before the store's admin records (which override them), and list their entries."""
    state.services = ServiceCatalogue((*shipped, *state.services.admin_records()))
    state.services.apply_to(state.categories)
