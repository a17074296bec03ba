"""The value types of the settings: constrained aliases whose `Meta` carries the sentence a reader sees.

Every section module builds its Structs from these, so a constraint (a port, a colour, a category name) is
declared once. A leaf, like the rest of `config`: it imports nothing of ours.
"""

from __future__ import annotations

from typing import Annotated, Any, Final, Literal

import msgspec
from msgspec import Meta


class Invalid(ValueError):
    """What a `__post_init__` check found: the keys of its struct at fault and what is wrong with them."""

    def __init__(self, message: str, *keys: str) -> None:
        super().__init__(f"{' and '.join(keys)}: {message}")
        self.message, self.keys = message, keys


def wrong(sentence: str, **constraints: Any) -> Meta:
    """A constraint carrying the sentence shown when a value breaks it (msgspec's own would show the regex)."""
    return Meta(**constraints, extra={"wrong": sentence})


# The rule of policy.categories.validate_category (its CATEGORY_RE), repeated here because this module imports
# nothing of ours: the two must agree, and tests/test_config.py checks that they do on a table of names.
CATEGORY_PATTERN: Final = r"^[a-z0-9][a-z0-9_-]{0,62}\Z"
Category = Annotated[
    str,
    wrong("invalid category name: use lower-case letters, digits, '-' or '_' (at most 63)", pattern=CATEGORY_PATTERN),
]
HostName = Annotated[str, wrong("expected a host name", pattern=r"\A(?![\d.]*\Z)(\*\.|\.)?([\w-]+\.)*[\w-]+\.?\Z")]
AtLeastOne = Annotated[int, wrong("must be at least 1", ge=1)]
Positive = Annotated[int, wrong("must be greater than 0", gt=0)]
Seconds = Annotated[float, wrong("must be greater than 0 seconds", gt=0)]
Workers = Annotated[int, wrong("must be 0 (one per core) or more", ge=0)]
Port = Annotated[int, wrong("expected a port number", gt=0, lt=65536)]
Sender = Annotated[str, wrong("expected an e-mail address", pattern="@")]
HttpUrl = Annotated[str, wrong("expected an http:// or https:// URL", pattern=r"\Ahttps?://")]
# An empty URL counts as none (as no `url:` does), so only a non-empty one must name a scheme.
RedisUrl = Annotated[
    str,
    wrong(
        "expected a redis://, rediss:// or unix:// URL",  # or redis+sentinel:// (tests match this sentence)
        pattern=r"\A(?:rediss?://|unix://|rediss?\+(?:sentinel|cluster)://|\Z)",  # cluster: refused by name
    ),
]
# Values that end up in the block page's CSS and links: only harmless shapes (no javascript: link, no CSS).
Colour = Annotated[str, wrong("expected a colour as #rrggbb", pattern=r"\A#[0-9a-fA-F]{6}\Z")]
PageUrl = Annotated[str, wrong("expected an http:// or https:// URL", pattern=r"\Ahttps?://[^\s\"'<>`]+\Z")]
Email = Annotated[
    str,
    wrong(
        "expected an e-mail address",
        pattern=r"\A[^@\s<>\"'()\[\],;:]+@[^@\s<>\"'()\[\],;:]+\.[^@\s<>\"'()\[\],;:]+\Z",
    ),
]
Phone = Annotated[
    str, wrong("expected a phone number (digits, spaces, + - ( ))", pattern=r"\A\+?[0-9][0-9 ()\-]{2,30}\Z")
]
UsernameEncoding = Literal["auto", "plain", "base64"]


class Section(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Frozen (hashable, safe to share) and strict about keys; subclasses say `frozen=True` again for mypy."""
