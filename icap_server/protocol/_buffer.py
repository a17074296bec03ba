"""The receive buffer: bytes from the client that no reader has consumed yet.

Readers take whole units off its front (a head up to its blank line, a chunk-size line, some chunk data) and
leave the rest. The search for a blank line resumes where the previous search stopped, so a head that
arrives a byte at a time costs linear time, not quadratic.
"""

from __future__ import annotations

from ._abnf import BLANK_LINE, CRLF


class ReceiveBuffer:
    __slots__ = ("_data", "_search_from")

    def __init__(self) -> None:
        self._data = bytearray()
        self._search_from = 0

    def __iadd__(self, data: bytes) -> ReceiveBuffer:
        self._data += data
        return self

    def __len__(self) -> int:
        return len(self._data)

    def __bool__(self) -> bool:
        return bool(self._data)

    def holds_more_than_blank_lines(self) -> bool:
        """Whether a message has begun (stray CRLFs between messages do not count)."""
        return bool(self._data.lstrip(b"\r\n"))

    def skip_blank_lines(self) -> None:
        """Drop stray CRLFs between messages (RFC 9112 section 2.2 tolerates them)."""
        data = self._data
        while data[:2] == CRLF:
            del data[:2]

    def starts_with_crlf(self) -> bool:
        return self._data[:2] == CRLF

    def find_blank_line(self) -> int:
        """Where the first CRLF CRLF starts, or -1 (and the next search starts near the end)."""
        end = self._data.find(BLANK_LINE, self._search_from)
        if end < 0:
            self._search_from = max(0, len(self._data) - 3)
        return end

    def find_line_end(self, limit: int) -> int:
        """Where the first CRLF within the first `limit` bytes starts, or -1."""
        return self._data.find(CRLF, 0, limit)

    def peek(self, start: int, end: int) -> bytes:
        return bytes(self._data[start:end])

    def extract(self, count: int) -> bytes:
        """The first `count` bytes, removed."""
        data = bytes(self._data[:count])
        self.discard(count)
        return data

    def discard(self, count: int) -> None:
        del self._data[:count]
        self._search_from = 0
