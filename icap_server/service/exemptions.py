"""The exemptions written in the config file, as the policy's own values.

Here rather than in `icap_server.config`, which is a leaf and does not know the policy's types.
"""

from __future__ import annotations

from icap_server.config import Config
from policy.state import Exemption


def static_exemptions(config: Config) -> tuple[Exemption, ...]:
    """The exemptions written in the config file (ids C1, C2, …; those in Redis are E1, E2, …)."""
    return tuple(
        Exemption(f"C{index}", item.network, frozenset(item.categories), item.note)
        for index, item in enumerate(config.exemptions, start=1)
    )
