"""What a block page is made from, as plain values: the blocked request's facts, the forms it offers, the result.

The library knows no server: `icap_server` fills these in, `render.py` and `prebuilt.py` turn them into pages.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from urllib.parse import quote, urlsplit

from .negotiate import Language
from .texts import REQUESTABLE


@dataclass(frozen=True, slots=True)
class ServiceName:
    """The catalogue service a blocked host belongs to, as a page names it (the library knows no catalogue)."""

    id: str
    name_en: str
    name_zh: str

    def name(self, language: Language) -> str:
        return self.name_zh if language == "zh-HK" else self.name_en


@dataclass(frozen=True, slots=True)
class BlockFacts:
    """What is known about the blocked request; plain text, escaped at render time."""

    host: str
    path: str
    category: str | None
    user: str | None
    client_ip: str | None
    reason: str
    reference: str
    time: datetime  # aware, in the time zone the page shows
    service: ServiceName | None = None  # the catalogue service of the host, when it belongs to one
    mode: str = "enforce"  # "enforce" or "caution" (a monitored request gets no page)


def page_mode(facts: BlockFacts) -> str:
    """The mode the page shows: caution only for a reason an approval could fix; anything else is enforced."""
    return "caution" if facts.mode == "caution" and facts.reason in REQUESTABLE else "enforce"


@dataclass(frozen=True, slots=True)
class RequestForm:
    """The "Request access" form: where it posts, the signed token, and the longest validity on offer."""

    action: str  # absolute URL of the portal's POST /request
    token: str
    max_days: int
    min_chars: int = 0

    @property
    def default_days(self) -> int:
        return min(30, self.max_days)

    @property
    def link(self) -> str:
        """The same request as a link (the portal's GET /request shows the form for a token)."""
        return f"{self.action}?token={quote(self.token, safe='')}"

    @property
    def origin(self) -> str:
        parts = urlsplit(self.action)
        return f"{parts.scheme}://{parts.netloc}"


@dataclass(frozen=True, slots=True)
class ContinueForm:
    """The caution page's "Continue" form: where it posts, the signed token, and how long it lets one through."""

    action: str  # absolute URL of the portal's POST /continue
    token: str  # signed, opaque to the page
    minutes: int  # how long "continue" lets this person through for this service

    @property
    def origin(self) -> str:
        parts = urlsplit(self.action)
        return f"{parts.scheme}://{parts.netloc}"


def offered(facts: BlockFacts, proceed: ContinueForm | None) -> ContinueForm | None:
    """The continue form the page shows: only a caution page has one."""
    return proceed if page_mode(facts) == "caution" else None


@dataclass(frozen=True, slots=True)
class Rendered:
    body: bytes
    content_type: str
    language: Language
    headers: tuple[tuple[str, str], ...]  # Content-Security-Policy, Content-Language, Vary
