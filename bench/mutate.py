"""Mutated ICAP messages for bench/fuzz.py: valid ones of every kind, then one to three mutations each.

Valid: OPTIONS, REQMOD GET / CONNECT / POST (previews, `ieof`, chunk extensions, trailers), RESPMOD, in random
chunkings. Mutations: bit flips, bytes set, inserted or deleted, truncation, duplicated or dropped header
lines, a bad `Encapsulated`, huge sizes and counts, bare LF, case changes, pipelining, garbage.
"""

from __future__ import annotations

import random

from live import ALLOWED_HOSTS, BLOCKED_HOSTS

INTERESTING = b"\x00\r\n \t:;,=\"'\\%\x7f\x80\xff0189aAfF-"


# ---- valid messages -----------------------------------------------------------------------------------


def icap_head(method: str, service: str, lines: list[str], encapsulated: str) -> bytes:
    head = [f"{method} icap://127.0.0.1/{service} ICAP/1.0", "Host: 127.0.0.1", *lines]
    head.append(f"Encapsulated: {encapsulated}")
    return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1")


def http_head(first: str, host: str, extra: list[str]) -> bytes:
    return ("\r\n".join([first, f"Host: {host}", *extra]) + "\r\n\r\n").encode("latin-1")


def chunked(rng: random.Random, body: bytes, last: bytes = b"0") -> bytes:
    """The body in random-sized chunks, sometimes with extensions, ended by `last` (b"0" or b"0; ieof")."""
    out, pos = bytearray(), 0
    while pos < len(body):
        size = rng.randint(1, max(1, len(body) - pos))
        ext = rng.choice((b"", b"", b";x=1", b'; name="v a"', b";ext"))
        out += b"%x%b\r\n%b\r\n" % (size, ext, body[pos : pos + size])
        pos += size
    trailer = rng.choice((b"", b"", b"X-Trailer: 1\r\n"))
    return bytes(out) + last + b"\r\n" + trailer + b"\r\n"


def common_lines(rng: random.Random) -> list[str]:
    lines = []
    if rng.random() < 0.7:
        lines.append("Allow: 204" if rng.random() < 0.8 else "Allow: 204, trailers")
    if rng.random() < 0.6:
        lines.append(f"X-Client-Username: {rng.choice(('alice', 'bob', 'CORP%5Cwong', 'chan@corp'))}")
    if rng.random() < 0.5:
        lines.append(f"X-Client-IP: 10.0.{rng.randint(0, 255)}.{rng.randint(1, 254)}")
    if rng.random() < 0.1:
        lines.append("Connection: close")
    return lines


def valid_message(rng: random.Random) -> bytes:
    kind = rng.choices(("options", "get", "connect", "post", "respmod"), (1, 6, 1, 3, 1))[0]
    host = rng.choice(BLOCKED_HOSTS + ALLOWED_HOSTS)
    lines = common_lines(rng)
    if kind == "options":
        return f"OPTIONS icap://127.0.0.1/{rng.choice(('reqmod', 'respmod'))} ICAP/1.0\r\nHost: x\r\n\r\n".encode()
    if kind in ("get", "connect"):
        first = f"CONNECT {host}:443 HTTP/1.1" if kind == "connect" else f"GET http://{host}/p?q=1 HTTP/1.1"
        http = http_head(first, host, ["Accept: */*"])
        if rng.random() < 0.8:
            lines.append("Preview: 0")
        return icap_head("REQMOD", "reqmod", lines, f"req-hdr=0, null-body={len(http)}") + http
    body = rng.randbytes(rng.choice((0, 1, 10, 100, 3000)))
    if kind == "respmod":
        req = http_head(f"GET http://{host}/ HTTP/1.1", host, [])
        res = b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\n\r\n"
        enc = f"req-hdr=0, res-hdr={len(req)}, res-body={len(req) + len(res)}"
        return icap_head("RESPMOD", "respmod", lines, enc) + req + res + chunked(rng, body)
    http = http_head(f"POST http://{host}/up HTTP/1.1", host, [f"Content-Length: {len(body)}"])
    preview = rng.choice((None, None, 0, 4, 1024, 4096))
    if preview is not None:
        lines.append(f"Preview: {preview}")
    head = icap_head("REQMOD", "reqmod", lines, f"req-hdr=0, req-body={len(http)}") + http
    if preview is None:
        return head + chunked(rng, body)
    if len(body) <= preview:
        return head + chunked(rng, body, b"0; ieof")
    return head + chunked(rng, body[:preview])  # the server answers at the end of the preview


# ---- mutations ----------------------------------------------------------------------------------------

BAD_ENCAPSULATED = (
    "", "req-hdr=0", "req-hdr=abc", "req-hdr=0, null-body=99999999999", "req-hdr=5, req-body=0", "req-body=0",
    "null-body=0, req-hdr=0", "res-hdr=0, req-body=10", "req-hdr=-1, null-body=0", "req-hdr=0,,null-body=5",
    "opt-body=0", "req-hdr=0, req-hdr=0, null-body=9", "req-hdr=0, null-body=999999", "req-hdr=0 null-body=40",
    "req-hdr=0, res-hdr=0, null-body=0", "req-hdr=00, null-body=40", "REQ-HDR=0, NULL-BODY=40", "x=0",
)  # fmt: skip
HUGE = (b"ffffffffffffffff", b"10000000000000000", b"-1", b"7fffffff", b"fffffff", b"+5", b"0x10", b" 5")


def _lines(message: bytes) -> tuple[list[bytes], bytes]:
    head, sep, rest = message.partition(b"\r\n\r\n")
    return head.split(b"\r\n"), rest if sep else b""


def _join(lines: list[bytes], rest: bytes) -> bytes:
    return b"\r\n".join(lines) + b"\r\n\r\n" + rest


def m_flip(rng: random.Random, m: bytes) -> bytes:
    if not m:
        return m
    i = rng.randrange(len(m))
    return m[:i] + bytes([m[i] ^ (1 << rng.randrange(8))]) + m[i + 1 :]


def m_set(rng: random.Random, m: bytes) -> bytes:
    i = rng.randrange(len(m) + 1)
    return m[:i] + bytes([rng.choice(INTERESTING)]) + m[i + 1 :]


def m_insert(rng: random.Random, m: bytes) -> bytes:
    i = rng.randrange(len(m) + 1)
    return m[:i] + bytes(rng.choice(INTERESTING) for _ in range(rng.randint(1, 8))) + m[i:]


def m_delete(rng: random.Random, m: bytes) -> bytes:
    i = rng.randrange(len(m) + 1)
    return m[:i] + m[i + rng.randint(1, 24) :]


def m_truncate(rng: random.Random, m: bytes) -> bytes:
    return m[: rng.randrange(len(m) + 1)]


def m_dup_line(rng: random.Random, m: bytes) -> bytes:
    lines, rest = _lines(m)
    i = rng.randrange(len(lines))
    lines.insert(rng.randrange(1, len(lines) + 1), lines[i])
    return _join(lines, rest)


def m_drop_line(rng: random.Random, m: bytes) -> bytes:
    lines, rest = _lines(m)
    del lines[rng.randrange(len(lines))]
    return _join(lines, rest)


def m_encapsulated(rng: random.Random, m: bytes) -> bytes:
    lines, rest = _lines(m)
    value = rng.choice(BAD_ENCAPSULATED) if rng.random() < 0.7 else f"req-hdr=0, null-body={rng.randint(0, 10**6)}"
    kept = [line for line in lines if not line.lower().startswith(b"encapsulated:")]
    return _join([*kept, b"Encapsulated: " + value.encode()], rest)


def m_huge(rng: random.Random, m: bytes) -> bytes:
    choice = rng.randrange(4)
    if choice == 0 and b"\r\n\r\n" in m:  # a chunk-size line after the heads
        head, rest = m.rsplit(b"\r\n\r\n", 1) if rng.random() < 0.5 else m.split(b"\r\n\r\n", 1)
        return head + b"\r\n\r\n" + rng.choice(HUGE) + b"\r\n" + rest
    lines, rest = _lines(m)
    if choice == 1:
        lines.append(b"Preview: " + rng.choice((b"999999999", b"4294967296", b"-1", b"1e3", b"00000000001")))
    elif choice == 2:
        lines.append(b"X-Big: " + b"a" * rng.choice((8000, 70000, 200000)))
    else:
        lines.extend(b"X-%d: v" % n for n in range(rng.choice((100, 1000, 5000))))
    return _join(lines, rest)


def m_bare_lf(rng: random.Random, m: bytes) -> bytes:
    head, sep, rest = m.partition(b"\r\n\r\n")
    return head.replace(b"\r\n", b"\n") + (b"\n\n" if rng.random() < 0.5 else sep) + rest


def m_case(rng: random.Random, m: bytes) -> bytes:
    lines, rest = _lines(m)
    i = rng.randrange(len(lines))
    lines[i] = lines[i].swapcase() if rng.random() < 0.5 else lines[i].lower()
    return _join(lines, rest)


def m_pipeline(rng: random.Random, m: bytes) -> bytes:
    return m + valid_message(rng)


def m_garbage(rng: random.Random, m: bytes) -> bytes:
    return rng.randbytes(rng.randint(1, 300)) + (b"\r\n\r\n" if rng.random() < 0.5 else b"")


MUTATIONS = (
    (m_flip, 6), (m_set, 5), (m_insert, 4), (m_delete, 4), (m_truncate, 4), (m_dup_line, 3), (m_drop_line, 3),
    (m_encapsulated, 4), (m_huge, 2), (m_bare_lf, 1), (m_case, 2), (m_pipeline, 2), (m_garbage, 1),
)  # fmt: skip


def mutated_message(rng: random.Random) -> bytes:
    message = valid_message(rng)
    functions, weights = zip(*MUTATIONS, strict=True)
    for mutate in rng.choices(functions, weights, k=rng.choice((1, 1, 1, 2, 3))):
        message = mutate(rng, message)
    return message
