"""What the connection hands the server (events), and what the server hands back (a Response).

Plain frozen dataclasses, so the protocol core can be tested by comparing values.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .encapsulated import Encapsulated
from .headers import Headers
from .http import HTTPRequestHead, HTTPResponseHead


@dataclass(frozen=True, slots=True)
class ICAPRequest:
    """An ICAP request head, with the encapsulated HTTP heads already parsed."""

    method: str
    uri: str
    service: str  # the URI's path, e.g. "/reqmod"
    headers: Headers
    encapsulated: Encapsulated
    http_request: HTTPRequestHead | None
    http_response: HTTPResponseHead | None
    preview: int | None  # Preview: N when a body preview follows, else None
    allow: frozenset[str]  # the Allow tokens, e.g. {"204", "trailers"}

    @property
    def has_body(self) -> bool:
        return self.encapsulated.has_body

    @property
    def wants_close(self) -> bool:
        return "close" in self.headers.tokens("Connection")


@dataclass(frozen=True, slots=True)
class BodyData:
    """A piece of the encapsulated body, de-chunked."""

    data: bytes


@dataclass(frozen=True, slots=True)
class EndOfPreview:
    """The preview ended without ieof: answer now, or send 100 Continue to receive the rest."""


@dataclass(frozen=True, slots=True)
class EndOfMessage:
    """The request is complete. `ieof` is true when the preview already held the whole body."""

    ieof: bool = False
    trailers: Headers = field(default_factory=Headers)


@dataclass(frozen=True, slots=True)
class ConnectionClosed:
    """The client closed its side. `clean` is false when it did so in the middle of a message."""

    clean: bool = True


class _NeedData:
    def __repr__(self) -> str:
        return "NEED_DATA"


class _Paused:
    def __repr__(self) -> str:
        return "PAUSED"


NEED_DATA = _NeedData()
"""More bytes are needed before another event can be produced."""

PAUSED = _Paused()
"""The client's message is complete (or its preview is); nothing more is read until we answer."""

Event = ICAPRequest | BodyData | EndOfPreview | EndOfMessage | ConnectionClosed


@dataclass(frozen=True, slots=True)
class Response:
    """An ICAP response to serialize.

    `http_request_head` / `http_response_head` are encapsulated header sections (raw bytes); `body` is the
    encapsulated body to send chunked, or None for `null-body`. The connection computes `Encapsulated`.
    """

    status: int
    headers: tuple[tuple[str, str], ...]
    http_request_head: bytes | None = None
    http_response_head: bytes | None = None
    body: bytes | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.headers, tuple):  # accept a list; keep the value hashable
            object.__setattr__(self, "headers", tuple(self.headers))
