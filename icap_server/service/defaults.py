"""The shipped category lists, loaded into an empty store the first time `serve` starts."""

from __future__ import annotations

from icap_server.config import Config
from policy.categories import default_list
from policy.store import PolicyStore


async def load_default_lists(store: PolicyStore, config: Config) -> dict[str, int]:
    """Load the shipped lists into an empty store, once (an admin who empties a list keeps it empty)."""
    if not config.policy.load_default_lists or await store.defaults_loaded():
        return {}
    loaded: dict[str, int] = {}
    if await store.is_empty():
        for category in config.policy.restricted_categories:
            try:
                hosts = default_list(category)
            except FileNotFoundError:
                continue  # no shipped list for a category the admin invented
            loaded[category] = await store.add_hosts(category, hosts)
    await store.mark_defaults_loaded()
    return loaded
