"""The `import` section: how third-party lists (UT1, CSV) map onto Clearance's categories."""

from __future__ import annotations

import types
from collections.abc import Mapping

import msgspec

from icap_server.config.types import Category, Section

DEFAULT_CATEGORY_MAP: Mapping[str, str] = types.MappingProxyType(
    {"webmail": "webmail", "filehosting": "cloud-storage", "chat": "web-im"}
)


class ImportConfig(Section, frozen=True):
    """`clearance categories import`: which categories of a third-party list (UT1, CSV) go where."""

    category_map: Mapping[str, Category] = DEFAULT_CATEGORY_MAP
    only_mapped: bool = True

    def __post_init__(self) -> None:
        """msgspec builds a dict; the map is kept read-only like every other setting."""
        if not isinstance(self.category_map, types.MappingProxyType):
            msgspec.structs.force_setattr(self, "category_map", types.MappingProxyType(dict(self.category_map)))
