"""Which language and which format a block page is sent in, from the request's Accept-Language and Accept.

Both follow RFC 9110 (12.5.1, 12.5.4) closely enough for the two languages and three formats there are:
q-values count, q=0 rules a choice out, and among equals the header's own order (language) or the more
specific match (format) wins.
"""

from __future__ import annotations

import functools
from typing import Literal

Language = Literal["en", "zh-HK"]
Format = Literal["html", "json", "text"]

LANGUAGES: tuple[Language, ...] = ("en", "zh-HK")

# Media types each format answers to; a browser's text/html or XHTML gets the page.
_MEDIA: dict[Format, tuple[str, ...]] = {
    "html": ("text/html", "application/xhtml+xml"),
    "json": ("application/json",),
    "text": ("text/plain",),
}


def _weighted(header: str) -> list[tuple[str, float]]:
    """`a;q=0.5, b` into [("a", 0.5), ("b", 1.0)], lower-cased; a malformed q counts as 0."""
    items = []
    for part in header.split(","):
        value, *params = (piece.strip() for piece in part.split(";"))
        if not value:
            continue
        q = 1.0
        for param in params:
            name, _, number = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    q = max(0.0, min(1.0, float(number)))
                except ValueError:
                    q = 0.0
        items.append((value.lower(), q))
    return items


def language_of(tag: str) -> Language | None:
    """The page language for one language tag: any Chinese is the Traditional Chinese page (the only one)."""
    primary = tag.split("-", 1)[0]
    if primary == "zh":
        return "zh-HK"
    if primary == "en":
        return "en"
    return None


@functools.lru_cache(maxsize=256)  # browsers send a handful of distinct headers; bounded for the rest
def choose_language(accept_language: str | None, default: Language) -> Language:
    """The most preferred of English and Chinese in Accept-Language; `*` or neither named: the default."""
    best: tuple[float, int, Language] | None = None
    refused: set[Language] = set()
    for position, (tag, q) in enumerate(_weighted(accept_language or "")):
        language = default if tag == "*" else language_of(tag)
        if language is None:
            continue
        if q <= 0:
            refused.add(language)
            continue
        if best is None or (q, -position) > (best[0], best[1]):
            best = (q, -position, language)
    if best is not None:
        return best[2]
    allowed = [language for language in (default, *LANGUAGES) if language not in refused]
    return allowed[0] if allowed else default


@functools.lru_cache(maxsize=256)
def choose_format(accept: str | None) -> Format:
    """html, json or text for an Accept header.

    No Accept, `*/*` or `text/*`: the HTML page (curl and most tools send `*/*`; people read its output).
    application/json preferred at least as much as HTML: JSON. Anything else that rules HTML and JSON out
    (text/plain, image/png, …): plain text.
    """
    if not accept or not accept.strip():
        return "html"
    ranges = _weighted(accept)
    scores: dict[Format, tuple[float, int]] = {}  # format -> (q, specificity of the range that set it)
    for fmt, types in _MEDIA.items():
        best_specificity = -1
        quality = 0.0
        for media, q in ranges:
            for candidate in types:
                if media == candidate:
                    specificity = 2
                elif media == candidate.split("/")[0] + "/*":
                    specificity = 1
                elif media == "*/*":
                    specificity = 0
                else:
                    continue
                if specificity > best_specificity:  # the most specific range decides (RFC 9110 12.5.1)
                    best_specificity, quality = specificity, q
        scores[fmt] = (quality, best_specificity)
    order: tuple[Format, ...] = ("html", "json", "text")  # among equals: explicit first, then this order
    chosen = max(order, key=lambda fmt: (scores[fmt][0], scores[fmt][1] == 2, -order.index(fmt)))
    return chosen if scores[chosen][0] > 0 else "text"
