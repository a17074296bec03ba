"""One small reader per framing, over the receive buffer (in the manner of h11's `_readers.py`).

Each reader consumes what it can and returns an event, or None for "need more bytes"; malformed input raises
RemoteProtocolError with the ICAP status to answer. Readers never look past the unit they frame, so the bytes
of the next message stay in the buffer untouched.
"""

from __future__ import annotations

from enum import Enum, auto

from ._abnf import HEX_DIGITS
from ._buffer import ReceiveBuffer
from .errors import RemoteProtocolError
from .events import BodyData, EndOfMessage, EndOfPreview
from .headers import MAX_HEADER_FIELDS, Headers, parse_header_block

MAX_CHUNK_LINE = 1024


def read_head(buffer: ReceiveBuffer, max_bytes: int, too_large: str) -> bytes | None:
    """A head up to (not including) its blank line, removed from the buffer; None until it is all there.

    Past `max_bytes` it is RemoteProtocolError(400, too_large), whether the bytes came at once or slowly.
    """
    end = buffer.find_blank_line()
    if end < 0:
        if len(buffer) > max_bytes:
            raise RemoteProtocolError(400, too_large)
        return None
    if end + 4 > max_bytes:
        raise RemoteProtocolError(400, too_large)
    head = buffer.extract(end)
    buffer.discard(4)
    return head


class _Part(Enum):
    SIZE = auto()  # waiting for a chunk-size line
    DATA = auto()  # inside a chunk's data
    END = auto()  # waiting for the CRLF after a chunk's data
    TRAILERS = auto()  # after the zero chunk: trailers up to an empty line


class ChunkedReader:
    """An encapsulated body: chunks (RFC 9112 section 7.1) with ICAP's preview and `ieof` (RFC 3507 4.5).

    While a preview is being read the reader counts its bytes against the announced `Preview` size and ends
    with EndOfPreview, unless the zero chunk says `ieof` (the preview was the whole body): then EndOfMessage.
    After `100 Continue` (`resume`), the rest of the body follows in the same framing.
    """

    __slots__ = (
        "_chunk_left",
        "_ieof",
        "_in_preview",
        "_max_fields",
        "_max_header_bytes",
        "_part",
        "_preview",
        "_preview_bytes",
    )

    def __init__(self, preview: int | None, max_header_bytes: int, max_fields: int = MAX_HEADER_FIELDS) -> None:
        self._preview = preview
        self._max_fields = max_fields
        self._in_preview = preview is not None
        self._preview_bytes = 0
        self._max_header_bytes = max_header_bytes
        self._part = _Part.SIZE
        self._chunk_left = 0
        self._ieof = False

    def resume(self) -> None:
        """The server asked for the rest with 100 Continue."""
        self._in_preview = False
        self._part = _Part.SIZE

    def __call__(self, buffer: ReceiveBuffer) -> BodyData | EndOfPreview | EndOfMessage | None:
        while True:
            part = self._part
            if part is _Part.DATA:
                return self._data(buffer)
            if part is _Part.SIZE:
                if not self._size(buffer):
                    return None
            elif part is _Part.END:
                if len(buffer) < 2:
                    return None
                if not buffer.starts_with_crlf():
                    raise RemoteProtocolError(400, "chunk data is not followed by CRLF")
                buffer.discard(2)
                self._part = _Part.SIZE
            else:
                return self._trailers(buffer)

    def _size(self, buffer: ReceiveBuffer) -> bool:
        """Read a chunk-size line; False until one is complete."""
        end = buffer.find_line_end(MAX_CHUNK_LINE + 2)
        if end < 0:
            if len(buffer) > MAX_CHUNK_LINE:
                raise RemoteProtocolError(400, "chunk-size line too long")
            return False
        line = buffer.extract(end)
        buffer.discard(2)
        size_text, _, extensions = line.partition(b";")
        size_text = size_text.strip(b" \t")
        if not size_text or len(size_text) > 16 or not HEX_DIGITS.issuperset(size_text):
            raise RemoteProtocolError(400, f"malformed chunk size {line[:40]!r}")
        size = int(size_text, 16)
        ieof = any(ext.strip(b" \t").lower() == b"ieof" for ext in extensions.split(b";")) if extensions else False
        if size:
            if ieof:
                raise RemoteProtocolError(400, "ieof extension on a non-zero chunk")
            if self._in_preview and self._preview is not None:
                self._preview_bytes += size
                if self._preview_bytes > self._preview:
                    raise RemoteProtocolError(400, f"preview carries more than the {self._preview} bytes announced")
            self._chunk_left = size
            self._part = _Part.DATA
            return True
        if ieof and not self._in_preview:
            raise RemoteProtocolError(400, "ieof outside a preview")
        self._ieof = ieof
        self._part = _Part.TRAILERS
        return True

    def _data(self, buffer: ReceiveBuffer) -> BodyData | None:
        if not buffer:
            return None
        data = buffer.extract(min(self._chunk_left, len(buffer)))
        self._chunk_left -= len(data)
        if not self._chunk_left:
            self._part = _Part.END
        return BodyData(data)

    def _trailers(self, buffer: ReceiveBuffer) -> EndOfPreview | EndOfMessage | None:
        if buffer.starts_with_crlf():
            trailers = Headers()
            buffer.discard(2)
        else:
            block = read_head(buffer, self._max_header_bytes, "trailers too large")
            if block is None:
                return None
            trailers = parse_header_block(block, "trailer", self._max_fields)
        if self._in_preview and not self._ieof:
            return EndOfPreview()
        return EndOfMessage(ieof=self._ieof, trailers=trailers)
