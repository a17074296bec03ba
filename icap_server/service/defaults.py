"""The shipped category lists: the one initialisation that loads them into a store with no identity, and
their replacement when an installed upgrade ships other lists.

`serve` initialises the store before its workers start; a worker that later finds the store's identity gone
(Redis flushed, or replaced by an empty one) re-initialises it the same way (`PolicySync`), so the default
lists come back without an admin and a restricted site is never passed because its list vanished.

The shipped lists are the store's `curated` source, recorded with `policy.categories.shipped_version()` and a
fingerprint of their content. At every `serve` and `store init`, lists that differ from what is installed
now are replaced, in one switch, by the installed ones: an upgrade brings its new entries into an existing
store and drops those it no longer ships, while the admin's and the imported lists stay as they are.
"""

from __future__ import annotations

import structlog

from icap_server.config import Config
from policy.categories import shipped_version
from policy.services import default_list
from policy.store import ImportResult, PolicyStore

log = structlog.get_logger("clearance.defaults")


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
    """Initialise a store that has no identity yet (seeding the lists); {} if it had one, or seeded none.

    Then the curated lists are brought to the installed version (`refresh_curated`), and that is logged.
    """
    initialised = await store.initialise(default_seed(config), actor)
    replaced = await refresh_curated(store, config, actor)
    if replaced is not None:
        log.info(
            "curated_lists_updated",
            version=shipped_version(),
            entries=replaced.entries,
            added=replaced.added,
            removed=replaced.removed,
        )
    return initialised.seeded if initialised is not None else {}


async def refresh_curated(store: PolicyStore, config: Config, actor: str = "clearance serve") -> ImportResult | None:
    """Bring the `curated` lists to the installed shipped data; None when they already hold it.

    `policy.load_default_lists: false` keeps the shipped lists out: nothing is loaded, nor replaced.
    """
    seed = default_seed(config)
    if not seed:
        return None
    return await store.replace_curated(seed, shipped_version(), actor)
