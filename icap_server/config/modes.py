"""The `modes` section: how blocks an approval could lift are applied while a department rolls out.

`default` applies where nothing more specific is set; `departments`, `services` and `categories` map a name to
`enforce`, `monitor` or `caution` (`policy.modes` says which wins: the department, then the service, then the
category). Left out, everything is `enforce`.
What monitor and caution see is counted for `clearance report discovery`, kept `discovery_keep_days`.
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from icap_server.config.types import AtLeastOne, Section, wrong

ModeName = Literal["enforce", "monitor", "caution"]
Minutes = Annotated[float, wrong("must be greater than 0 minutes", gt=0)]


class ModesConfig(Section, frozen=True):
    default: ModeName = "enforce"
    departments: dict[str, ModeName] = msgspec.field(default_factory=dict)
    services: dict[str, ModeName] = msgspec.field(default_factory=dict)
    categories: dict[str, ModeName] = msgspec.field(default_factory=dict)
    caution_grace_minutes: Minutes = 60.0  # how long a caution page's "continue" lets one person through
    discovery_keep_days: AtLeastOne = 90  # how long the counts behind `report discovery` are kept
