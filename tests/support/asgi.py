"""Calling an ASGI app in-process, as uvicorn would, with the TCP peer chosen by the test.

Who the peer is matters to the portal (trusted proxies), and an in-process call is the one way to play any
address without a network: the scope's `client` is what `request.client` reports.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode, urlsplit


@dataclass(frozen=True)
class Answer:
    status: int
    headers: dict[str, str]
    text: str


async def call(
    app: Any,
    method: str,
    url: str,
    headers: list[tuple[str, str]] | None = None,
    form: dict[str, str] | None = None,
    peer: str = "127.0.0.1",
) -> Answer:
    """One HTTP request to `app` from `peer`; a `form` is sent url-encoded."""
    parts = urlsplit(url)
    body = urlencode(form).encode() if form is not None else b""
    pairs = list(headers or [])
    if form is not None:
        pairs.append(("content-type", "application/x-www-form-urlencoded"))
    pairs.append(("content-length", str(len(body))))
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": parts.path,
        "raw_path": parts.path.encode(),
        "query_string": parts.query.encode(),
        "root_path": "",
        "headers": [(name.lower().encode(), value.encode()) for name, value in pairs],
        "client": (peer, 50000),
        "server": ("127.0.0.1", 8080),
    }
    sent = False
    status = 0
    answer_headers: dict[str, str] = {}
    chunks: list[bytes] = []

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
            answer_headers.update({k.decode().lower(): v.decode() for k, v in message.get("headers", [])})
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))

    await app(scope, receive, send)
    return Answer(status, answer_headers, b"".join(chunks).decode("utf-8", "replace"))
