"""The roll-out modes the config file sets (`modes`), as the `policy.modes.ModeTable` a process starts from.

The store's settings (set at run time) go over this table at every load; an emptied store leaves this one,
and a config without a `modes` section leaves everything `enforce`.
"""

from __future__ import annotations

from icap_server.config.modes import ModesConfig
from policy.modes import ModeSetting, ModeTable, Scope, parse_mode


def configured_modes(section: ModesConfig) -> ModeTable:
    settings = [
        ModeSetting(scope, name, parse_mode(mode), "config file")
        for scope, table in (
            (Scope.DEPARTMENT, section.departments),
            (Scope.SERVICE, section.services),
            (Scope.CATEGORY, section.categories),
        )
        for name, mode in table.items()
    ]
    return ModeTable.build(parse_mode(section.default), settings)
