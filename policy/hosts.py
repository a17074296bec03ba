"""Which host a request is for, in one canonical spelling, and the names it falls under.

Category lists are matched on label boundaries, so every spelling of a host that a browser (the WHATWG URL
host parser) or Squid would send to the same place must reduce to the same key before the lookup: mixed
case, a trailing dot, percent-escapes, Unicode (UTS #46: fullwidth letters, 。 and ． as dots), a port,
bracketed IPv6, an IPv4-mapped IPv6 address, and every IPv4 spelling a browser accepts (decimal `3405803783`,
hex `0xcb.0x0.0x71.0x7`, octal `0313.0.0161.07`, short `203.113.7`). A spelling that stays ambiguous (an
empty label, a character no host name has, two different hosts) has no canonical form: it is None, and the
service blocks such a request as `bad-request` rather than judge a host it cannot name.
"""

from __future__ import annotations

import ipaddress
import re
from functools import lru_cache
from urllib.parse import unquote_to_bytes

import idna

LABEL_RE = re.compile(r"^[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?$")
# The absolute form of a request target (RFC 3986 scheme, then "//"); anything else names no host of its own.
ABSOLUTE_FORM_RE = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")
_AUTHORITY_END = re.compile(r"[?#]")
_HEX_RE = re.compile(r"^0[xX][0-9a-fA-F]*\Z")
_OCTAL_RE = re.compile(r"^0[0-7]+\Z")
# 64:ff9b::/96 (RFC 6052) reaches the IPv4 address in its last 32 bits through any NAT64 gateway.
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


@lru_cache(maxsize=65536)
def normalise_host(raw: str) -> str | None:
    """Canonical host (lower-case, punycode, no trailing dot, no port; an IP as Python prints it), or None.

    Remembered: traffic keeps naming the same hosts, and IDNA and IP parsing are not cheap.
    """
    host = raw.strip()
    if host.startswith("["):  # [IPv6]:port
        end = host.find("]")
        if end < 0 or not _valid_port_suffix(host[end + 1 :]) or ":" not in host[1:end]:
            return None  # brackets hold an IPv6 address, nothing else (as in a URL)
        return _ip_literal(host[1:end])
    if host.count(":") > 1:  # bare IPv6 without brackets
        return _ip_literal(host)
    host, colon, port = host.partition(":")
    if colon and not _valid_port_suffix(":" + port):
        return None
    return _domain(host)


def _valid_port_suffix(text: str) -> bool:
    """Nothing, ":" or ":PORT" with a port a URL may carry (0 to 65535)."""
    if not text:
        return True
    port = text[1:]
    return text[0] == ":" and (not port or (port.isascii() and port.isdigit() and int(port) <= 65535))


def _domain(text: str) -> str | None:
    """A host name or IPv4 address (no port) in its canonical form, in the WHATWG host parser's order."""
    if "%" in text:
        decoded = _percent_decoded(text)
        if decoded is None:
            return None
        text = decoded
    if not text.isascii():
        mapped = _uts46(text)
        if mapped is None:
            return None
        text = mapped
    host = text.rstrip(".").lower()
    if not host:
        return None
    if _ends_in_number(host):
        return _ipv4(host)  # a name whose last label is a number is an IPv4 address or nothing
    if len(host) > 253 or not all(LABEL_RE.match(label) for label in host.split(".")):
        return None
    return host


def _percent_decoded(text: str) -> str | None:
    """`mail%2egoogle%2ecom` is mail.google.com to a browser; bytes that are not UTF-8 name no host."""
    try:
        return unquote_to_bytes(text).decode("utf-8")
    except UnicodeError:
        return None


def _uts46(text: str) -> str | None:
    """UTS #46 (non-transitional, as browsers do): map, then punycode each non-ASCII label; None if invalid."""
    try:
        mapped = idna.uts46_remap(text, std3_rules=False, transitional=False)
        labels = [label if label.isascii() else idna.alabel(label).decode("ascii") for label in mapped.split(".")]
    except UnicodeError:  # idna.IDNAError and its kinds are UnicodeErrors
        return None
    return ".".join(labels)


def _ends_in_number(host: str) -> bool:
    """The WHATWG test: the last label is all digits or 0x-hex, so the host must parse as IPv4."""
    last = host.rpartition(".")[2]
    return (last.isascii() and last.isdigit()) or bool(_HEX_RE.match(last))


def _ipv4(host: str) -> str | None:
    """The WHATWG IPv4 parser: 1 to 4 parts, each decimal, 0x-hex or 0-octal; the last fills what is left."""
    parts = host.split(".")
    if len(parts) > 4:
        return None
    numbers = [_ipv4_number(part) for part in parts]
    *leading, last = numbers
    if last is None or any(number is None or number > 255 for number in leading):
        return None
    if last >= 256 ** (5 - len(numbers)):
        return None
    value = last
    for position, number in enumerate(leading):
        value += (number or 0) << (8 * (3 - position))
    return str(ipaddress.IPv4Address(value))


def _ipv4_number(part: str) -> int | None:
    if _HEX_RE.match(part):
        return int(part[2:] or "0", 16)
    if len(part) > 1 and part.startswith("0"):
        return int(part, 8) if _OCTAL_RE.match(part) else None  # "08" is neither octal nor decimal
    if part.isascii() and part.isdigit():
        return int(part)
    return None


def _ip_literal(text: str) -> str | None:
    """An IP address as Python prints it; an IPv4-mapped (or NAT64) IPv6 address is the IPv4 it reaches."""
    try:
        address = ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        if address in _NAT64:
            return str(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
    return str(address)


def is_ip_literal(host: str) -> bool:
    return _ip_literal(host) == host


def from_wire(text: str) -> str:
    """Text as the protocol hands it over (each byte one Latin-1 character) back to the UTF-8 a client sent.

    Squid passes a non-ASCII name on as UTF-8 bytes; a string that is not UTF-8 that way is left as it is.
    """
    if text.isascii():
        return text
    try:
        return text.encode("latin-1").decode("utf-8")
    except UnicodeError:
        return text


def request_host(method: str, target: str, host_headers: list[str] | None = None) -> str | None:
    """The one host an HTTP request is for, or None when that cannot be told (the request must be blocked).

    The CONNECT authority, else the absolute-form URI (it wins over Host, as in RFC 9112 and Squid), else
    the Host header for an origin-form target. Every Host header must be a host, and all must name the same
    one: two different hosts, `Host: a, b`, or an origin-form target with no Host is None. So are targets
    that different parsers could read as different hosts (a backslash or a second `@` in the authority).
    """
    named = _host_header(host_headers) if host_headers else ""
    if named is None:
        return None
    if not target.isascii():
        target = from_wire(target)
    if method == "CONNECT" or method.upper() == "CONNECT":
        return normalise_host(target)
    if target.startswith("/") or target == "*":
        return named or None
    scheme_end = target.find("://")
    scheme = target[:scheme_end]
    if scheme_end > 0 and ((scheme.isascii() and scheme.isalpha()) or ABSOLUTE_FORM_RE.match(target)):
        return _authority_host(target[scheme_end + 3 :])
    return None


def _host_header(values: list[str]) -> str | None:
    """The host all Host headers agree on, or None when one is not a host or they name different ones."""
    first = normalise_host(from_wire(values[0]))
    if len(values) > 1 and any(normalise_host(from_wire(value)) != first for value in values[1:]):
        return None
    return first


def _authority_host(rest: str) -> str | None:
    """The host of an absolute-form URI's authority (what follows "://"), without userinfo and port."""
    authority = rest.partition("/")[0]
    if "?" in authority or "#" in authority:
        authority = _AUTHORITY_END.split(authority, 1)[0]
    if "@" in authority or "\\" in authority:
        if "\\" in authority or authority.count("@") > 1:
            return None  # a browser reads `\` as `/`, others as part of the name: two readings, two hosts
        authority = authority.rpartition("@")[2]  # drop userinfo
    return normalise_host(authority) if authority else None


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
    if ABSOLUTE_FORM_RE.match(target):
        rest = target.split("://", 1)[1]
        slash = rest.find("/")
        target = rest[slash:] if slash >= 0 else "/"
    path = target.split("?", 1)[0].split("#", 1)[0]
    return path if path.startswith("/") else "/" + path
