"""The grammar ICAP and its encapsulated HTTP heads are read with, in one place (RFC 3507, RFC 9110, RFC 9112).

Every pattern is anchored with `\\Z` rather than `$`, because `$` also matches before a final newline, and a
newline smuggled into a token is exactly what must not pass.
"""

from __future__ import annotations

import re

# token = 1*tchar (RFC 9110 section 5.6.2): what a header name, an ICAP method and an HTTP method are made of.
TCHAR = r"!#$%&'*+\-.^_`|~0-9A-Za-z"
TOKEN_RE = re.compile(rb"^[" + TCHAR.encode() + rb"]+\Z")

# field-content = field-vchar [ 1*( SP / HTAB / field-vchar ) field-vchar ] (RFC 9110 section 5.5): no control
# character but HTAB. CR, LF and NUL would split or end a message; the rest would be echoed to the origin
# (and were, until bench/fuzz.py found it). The same holds for reason-phrase (RFC 9112 section 4).
CTL = "\x00-\x08\x0a-\x1f\x7f"
FORBIDDEN_RE = re.compile(rb"[" + CTL.encode() + rb"]")

# request-target: no whitespace and no control character at all (RFC 9112 section 3.2).
TARGET_FORBIDDEN_RE = re.compile(rb"[\x00-\x20\x7f]")

# field-line = field-name ":" OWS field-value OWS, one at the start of a line. Anchored with ^ (MULTILINE), a
# match can only begin where a line does, so when every CRLF-ended line matched and no bare LF exists, the block
# was valid; anything else goes line by line for a precise error. Matching the whole block in C is the fast path.
FIELD_RE = re.compile(r"^([" + TCHAR + r"]+):[ \t]*([^" + CTL + r"]*)\r\n", re.MULTILINE)

# ICAP-Version = "ICAP/" 1*DIGIT "." 1*DIGIT (RFC 3507 section 4.3.2); only 1.0 is served, others get 505.
ICAP_VERSION_RE = re.compile(r"^ICAP/[0-9]+\.[0-9]+\Z")

# HTTP-version = "HTTP/" DIGIT "." DIGIT (RFC 9112 section 2.3), inside req-hdr and res-hdr.
HTTP_VERSION_RE = re.compile(r"^HTTP/[0-9]\.[0-9]\Z")

# Control characters in the request line (urlsplit would silently drop TAB, CR and LF from the URI).
REQUEST_LINE_CTL_RE = re.compile(rb"[\x00-\x1f\x7f]")

# chunk-size = 1*HEXDIG (RFC 9112 section 7.1); chunk-ext = *( BWS ";" BWS chunk-ext-name [ "=" value ] ).
HEX_DIGITS = frozenset(b"0123456789abcdefABCDEF")

# The blank line that ends a head or a trailer section, and the line end of everything else.
BLANK_LINE = b"\r\n\r\n"
CRLF = b"\r\n"
