"""The shipped category lists, and the one initialisation that loads them into a store with no identity.

`serve` initialises the store before its workers start; a worker that later finds the store's identity gone
(Redis flushed, or replaced by an empty one) re-initialises it the same way (`PolicySync`), so the default
lists come back without an admin and a restricted site is never passed because its list vanished.
"""

from __future__ import annotations

from icap_server.config import Config
from policy.categories import default_list
from policy.store import PolicyStore


def default_seed(config: Config) -> dict[str, tuple[str, ...]]:
    """The lists an initialisation loads: the shipped list of each restricted category that has one."""
    if not config.policy.load_default_lists:
        return {}
    seed: dict[str, tuple[str, ...]] = {}
    for category in config.policy.restricted_categories:
        try:
            seed[category] = tuple(default_list(category))
        except FileNotFoundError:
            continue  # no shipped list for a category the admin invented
    return seed


async def load_default_lists(store: PolicyStore, config: Config, actor: str = "clearance serve") -> dict[str, int]:
    """Initialise a store that has no identity yet (seeding the lists); {} if it had one, or seeded none."""
    initialised = await store.initialise(default_seed(config), actor)
    return initialised.seeded if initialised is not None else {}
