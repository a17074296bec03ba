"""Sans-I/O ICAP/1.0 (RFC 3507): bytes in, events out; responses to bytes. No sockets, no asyncio."""

from ._quick import QuickRequest, QuickScan, quick_scan
from .connection import ICAPConnection, Phase
from .encapsulated import Encapsulated, parse_encapsulated
from .errors import LocalProtocolError, ProtocolError, RemoteProtocolError
from .events import (
    NEED_DATA,
    PAUSED,
    BodyData,
    ConnectionClosed,
    EndOfMessage,
    EndOfPreview,
    Event,
    ICAPRequest,
    Response,
)
from .headers import Headers, token_list
from .http import HTTPRequestHead, HTTPResponseHead, build_http_response_head
from .serialize import REASONS, chunked

__all__ = [
    "NEED_DATA",
    "PAUSED",
    "REASONS",
    "BodyData",
    "ConnectionClosed",
    "Encapsulated",
    "EndOfMessage",
    "EndOfPreview",
    "Event",
    "HTTPRequestHead",
    "HTTPResponseHead",
    "Headers",
    "ICAPConnection",
    "ICAPRequest",
    "LocalProtocolError",
    "Phase",
    "ProtocolError",
    "QuickRequest",
    "QuickScan",
    "RemoteProtocolError",
    "Response",
    "build_http_response_head",
    "chunked",
    "parse_encapsulated",
    "quick_scan",
    "token_list",
]
