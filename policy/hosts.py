"""Which host a request is for, in one canonical spelling, and the names it falls under.

Category lists are matched on label boundaries, so every spelling of a host (mixed case, trailing dot,
Unicode, bracketed IPv6, with a port) must reduce to the same key before the lookup.
"""

from __future__ import annotations

import ipaddress
import re
from functools import lru_cache

import idna

LABEL_RE = re.compile(r"^[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?$")


@lru_cache(maxsize=65536)
def normalise_host(raw: str) -> str | None:
    """Canonical host (lower-case, punycode, no trailing dot, no port), or None if it is not a host.

    Remembered: traffic keeps naming the same hosts, and IDNA and IP parsing are not cheap.
    """
    host = raw.strip()
    if not host:
        return None
    if host.startswith("["):  # [IPv6]:port
        end = host.find("]")
        if end < 0:
            return None
        return _ip_literal(host[1:end])
    if host.count(":") == 1:
        host, _, port = host.partition(":")
        if port and not port.isdigit():
            return None
    elif host.count(":") > 1:  # bare IPv6 without brackets
        return _ip_literal(host)
    host = host.rstrip(".").lower()
    if not host:
        return None
    ip = _ip_literal(host)
    if ip is not None:
        return ip
    if not host.isascii():
        try:
            host = idna.encode(host, uts46=True).decode("ascii")
        except idna.IDNAError:
            return None
    if len(host) > 253 or not all(LABEL_RE.match(label) for label in host.split(".")):
        return None
    return host


def _ip_literal(text: str) -> str | None:
    try:
        return str(ipaddress.ip_address(text.split("%", 1)[0]))
    except ValueError:
        return None


def is_ip_literal(host: str) -> bool:
    return _ip_literal(host) == host


def request_host(method: str, target: str, host_header: str | None) -> str | None:
    """The host an HTTP request is for: CONNECT authority, absolute-form URI, or the Host header."""
    if method.upper() == "CONNECT":
        return normalise_host(target)
    scheme_end = target.find("://")
    if scheme_end > 0:
        rest = target[scheme_end + 3 :]
        end = len(rest)
        for delimiter in "/?#":
            position = rest.find(delimiter, 0, end)
            if position >= 0:
                end = position
        netloc = rest[:end].rpartition("@")[2]  # drop userinfo
        if netloc:
            return normalise_host(netloc)
    return normalise_host(host_header) if host_header else None


def host_suffixes(host: str) -> list[str]:
    """Names the host falls under, most specific first: a.mail.google.com, mail.google.com, google.com, com.

    An IP literal only falls under itself.
    """
    if is_ip_literal(host):
        return [host]
    labels = host.split(".")
    return [".".join(labels[index:]) for index in range(len(labels))]


def request_path(method: str, target: str) -> str:
    """The path of an HTTP request target, without query (CONNECT has none: "/")."""
    if method.upper() == "CONNECT":
        return "/"
    if "://" in target:
        rest = target.split("://", 1)[1]
        slash = rest.find("/")
        target = rest[slash:] if slash >= 0 else "/"
    path = target.split("?", 1)[0].split("#", 1)[0]
    return path if path.startswith("/") else "/" + path
