"""The floor: an asyncio + uvloop ICAP server that answers every REQMOD with a fixed 204.

It still reads each request completely (the ICAP head up to CRLFCRLF, then the encapsulated bytes the
`Encapsulated` header announces), so it measures what any Python asyncio ICAP server pays before it makes a
single decision. Only `null-body` REQMODs and OPTIONS are supported; anything else gets a 400 and a close.

    python floor_server.py PORT
"""

from __future__ import annotations

import asyncio
import sys
from typing import cast

import uvloop

NO_CONTENT = b'ICAP/1.0 204 No Content\r\nISTag: "floor-1"\r\nServer: floor/1\r\nEncapsulated: null-body=0\r\n\r\n'
OPTIONS = (
    b'ICAP/1.0 200 OK\r\nMethods: REQMOD\r\nService: floor/1\r\nISTag: "floor-1"\r\n'
    b"Encapsulated: null-body=0\r\nAllow: 204\r\nPreview: 0\r\nTransfer-Preview: *\r\n\r\n"
)
BAD_REQUEST = b'ICAP/1.0 400 Bad Request\r\nISTag: "floor-1"\r\nConnection: close\r\nEncapsulated: null-body=0\r\n\r\n'
MAX_HEAD = 65536


def null_body_offset(head: bytes) -> int | None:
    """The null-body offset from the Encapsulated header, 0 when absent (OPTIONS), None when unsupported."""
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"encapsulated":
            entities = dict(part.strip().split(b"=", 1) for part in value.split(b",") if b"=" in part)
            if set(entities) - {b"req-hdr", b"null-body"} or b"null-body" not in entities:
                return None
            return int(entities[b"null-body"])
    return 0


class FloorProtocol(asyncio.Protocol):
    def __init__(self) -> None:
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports are not asyncio subclasses

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while self.transport is not None:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(self.buffer) > MAX_HEAD:
                    self.fail()
                return
            head = bytes(self.buffer[: end + 4])
            try:
                offset = null_body_offset(head)
            except ValueError:
                offset = None
            if offset is None:
                self.fail()
                return
            total = end + 4 + offset
            if len(self.buffer) < total:
                return
            del self.buffer[:total]
            self.transport.write(OPTIONS if head.startswith(b"OPTIONS ") else NO_CONTENT)

    def fail(self) -> None:
        if self.transport is not None:
            self.transport.write(BAD_REQUEST)
            self.transport.close()
            self.transport = None


async def serve(port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(FloorProtocol, "127.0.0.1", port, backlog=1024)
    async with server:
        await server.serve_forever()


def main() -> None:
    uvloop.run(serve(int(sys.argv[1])))


if __name__ == "__main__":
    main()
