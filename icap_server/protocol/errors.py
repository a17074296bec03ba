"""Errors of the ICAP protocol core.

Two kinds, as in h11: the peer broke the protocol (`RemoteProtocolError`, which carries the ICAP status the
server should answer with), or our own code tried something the protocol forbids (`LocalProtocolError`, a bug).
"""

from __future__ import annotations


class ProtocolError(Exception):
    """Base class: something about an ICAP exchange is not allowed."""


class RemoteProtocolError(ProtocolError):
    """The client sent something we cannot accept; answer with `status` and close the connection."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message

    def __repr__(self) -> str:
        return f"RemoteProtocolError({self.status}, {self.message!r})"


class LocalProtocolError(ProtocolError):
    """Our side tried to send something the protocol (or the client's request) does not permit."""
