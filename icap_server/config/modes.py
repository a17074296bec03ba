"""The `modes` section: how blocks an approval could lift are applied while a department rolls out.

`default` applies where nothing more specific is set; `departments`, `services` and `categories` map a name to
`enforce`, `monitor` or `caution` (`policy.modes` says which wins: the department, then the service, then the
category). Left out, everything is `enforce`.
"""

from __future__ import annotations

from typing import Literal

import msgspec

from icap_server.config.types import Section

ModeName = Literal["enforce", "monitor", "caution"]


class ModesConfig(Section, frozen=True):
    default: ModeName = "enforce"
    departments: dict[str, ModeName] = msgspec.field(default_factory=dict)
    services: dict[str, ModeName] = msgspec.field(default_factory=dict)
    categories: dict[str, ModeName] = msgspec.field(default_factory=dict)
