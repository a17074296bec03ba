"""ICAP responses to bytes: status line, headers, a computed Encapsulated header, chunked body."""

from __future__ import annotations

from .errors import LocalProtocolError
from .events import Response
from .headers import serialize_headers

REASONS = {
    100: "Continue",
    200: "OK",
    204: "No Content",
    400: "Bad Request",
    404: "ICAP Service Not Found",
    405: "Method Not Allowed For Service",
    408: "Request Timeout",
    500: "Server Error",
    501: "Method Not Implemented",
    503: "Service Overloaded",
    505: "ICAP Version Not Supported",
}

CONTINUE_BYTES = b"ICAP/1.0 100 Continue\r\n\r\n"


def chunked(body: bytes) -> bytes:
    """A whole body as one chunk plus the terminating zero chunk."""
    if not body:
        return b"0\r\n\r\n"
    return b"%x\r\n%b\r\n0\r\n\r\n" % (len(body), body)


def chunk(data: bytes) -> bytes:
    """One chunk of a body being streamed (never empty: a zero-size chunk is the end of the body)."""
    return b"%x\r\n%b\r\n" % (len(data), data)


LAST_CHUNK = b"0\r\n\r\n"


def encapsulated_value(response: Response, streamed: bool = False) -> str:
    """Offsets computed from the bytes actually sent, so they cannot drift from the sections.

    `streamed`: the body is not in `response` but follows in chunks (see `serialize_head`).
    """
    items = []
    offset = 0
    if response.http_request_head is not None:
        items.append(f"req-hdr={offset}")
        offset += len(response.http_request_head)
    if response.http_response_head is not None:
        items.append(f"res-hdr={offset}")
        offset += len(response.http_response_head)
    if response.body is None and not streamed:
        items.append(f"null-body={offset}")
    else:
        kind = "res-body" if response.http_response_head is not None else "req-body"
        items.append(f"{kind}={offset}")
    return ", ".join(items)


_bodyless: dict[tuple[Response, bool], bytes] = {}


def serialize_response(response: Response, close: bool) -> bytes:
    """Bytes of a response; those without encapsulated parts (204, OPTIONS, errors) repeat, so are remembered."""
    if response.body is None and response.http_request_head is None and response.http_response_head is None:
        key = (response, close)
        found = _bodyless.get(key)
        if found is None:
            found = _serialize(response, close)
            if len(_bodyless) >= 256:
                _bodyless.clear()
            _bodyless[key] = found
        return found
    return _serialize(response, close)


def serialize_head(response: Response, close: bool) -> bytes:
    """The head of a response whose body is streamed after it: `Encapsulated` names the body; no chunk yet."""
    if response.body is not None or (response.http_request_head is None and response.http_response_head is None):
        raise LocalProtocolError("a streamed response carries an HTTP head and no body of its own")
    return _serialize(response, close, streamed=True)


def _serialize(response: Response, close: bool, streamed: bool = False) -> bytes:
    names = {name.lower() for name, _ in response.headers}
    if "istag" not in names:
        raise LocalProtocolError("every ICAP response must carry an ISTag header")
    if "encapsulated" in names:
        raise LocalProtocolError("Encapsulated is computed by the connection; do not set it")
    if response.status == 204 and (
        response.body is not None or response.http_response_head or response.http_request_head
    ):
        raise LocalProtocolError("a 204 response carries nothing encapsulated")
    reason = REASONS.get(response.status, "Unknown")
    headers = list(response.headers)
    headers.append(("Encapsulated", encapsulated_value(response, streamed)))
    if close and "connection" not in names:
        headers.append(("Connection", "close"))
    out = [f"ICAP/1.0 {response.status} {reason}\r\n".encode("ascii"), serialize_headers(headers), b"\r\n"]
    if response.http_request_head is not None:
        out.append(response.http_request_head)
    if response.http_response_head is not None:
        out.append(response.http_response_head)
    if response.body is not None:
        out.append(chunked(response.body))
    return b"".join(out)
