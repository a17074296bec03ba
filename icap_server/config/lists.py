"""The `import` section: how third-party lists (UT1, CSV) map onto Clearance's categories, and where
`clearance categories update` fetches the UT1 archive from, within which limits."""

from __future__ import annotations

import types
from collections.abc import Mapping
from typing import Annotated

import msgspec

from icap_server.config.types import Category, Positive, Seconds, Section, wrong

DEFAULT_CATEGORY_MAP: Mapping[str, str] = types.MappingProxyType(
    {"webmail": "webmail", "filehosting": "cloud-storage", "chat": "web-im"}
)
# The UT1 lists of the Université Toulouse Capitole, as one archive (`blacklists/<category>/domains`, `urls`).
UT1_URL = "https://dsi.ut-capitole.fr/blacklists/download/blacklists.tar.gz"
Sha256 = Annotated[str, wrong("expected a SHA-256 digest (64 hex digits)", pattern=r"\A(?:[0-9a-fA-F]{64})?\Z")]
# An http(s) URL, or a file (a path, or file://); checked again when it is used.
Location = Annotated[str, wrong("expected an http(s):// URL or a file path", min_length=1)]


class ImportConfig(Section, frozen=True):
    """`clearance categories import` / `update`: which categories of a third-party list go where, and the fetch."""

    category_map: Mapping[str, Category] = DEFAULT_CATEGORY_MAP
    only_mapped: bool = True
    ut1_url: Location = UT1_URL
    ut1_sha256: Sha256 = ""  # empty: not checked (the published archive changes every day)
    max_archive_bytes: Positive = 256 * 1024 * 1024  # the archive as fetched (compressed)
    max_unpacked_bytes: Positive = 2 * 1024 * 1024 * 1024  # every member together, unpacked
    max_members: Positive = 200_000
    fetch_timeout_seconds: Seconds = 120.0

    def __post_init__(self) -> None:
        """msgspec builds a dict; the map is kept read-only like every other setting."""
        if not isinstance(self.category_map, types.MappingProxyType):
            msgspec.structs.force_setattr(self, "category_map", types.MappingProxyType(dict(self.category_map)))
