"""Which language and format a block page is sent in, from Accept-Language and Accept."""

from __future__ import annotations

import pytest

from blockpages.negotiate import choose_format, choose_language


@pytest.mark.parametrize(
    ("header", "default", "expected"),
    [
        (None, "en", "en"),
        (None, "zh-HK", "zh-HK"),
        ("zh-HK", "en", "zh-HK"),
        ("zh-TW,zh;q=0.9", "en", "zh-HK"),
        ("zh-Hant-HK", "en", "zh-HK"),
        ("zh", "en", "zh-HK"),
        ("en-GB,en;q=0.9", "zh-HK", "en"),
        ("fr-FR,fr;q=0.9", "zh-HK", "zh-HK"),  # neither: the default
        ("fr;q=1, zh-HK;q=0.5, en;q=0.8", "zh-HK", "en"),  # q-values count
        ("en;q=0.4, zh-HK;q=0.9", "en", "zh-HK"),
        ("zh-HK, en", "en", "zh-HK"),  # equal q: the header's order
        ("en, zh-HK", "zh-HK", "en"),
        ("*", "zh-HK", "zh-HK"),
        ("en;q=0, fr", "en", "zh-HK"),  # English refused
        ("en;q=bogus, zh", "en", "zh-HK"),
    ],
)
def test_language_from_accept_language(header: str | None, default: str, expected: str) -> None:
    assert choose_language(header, default) == expected  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, "html"),
        ("", "html"),
        ("*/*", "html"),  # curl
        ("text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8", "html"),
        ("application/json", "json"),
        ("application/json, text/plain, */*", "json"),  # axios
        ("text/html;q=0.5, application/json", "json"),
        ("application/json;q=0.5, text/html", "html"),
        ("text/plain", "text"),
        ("image/png", "text"),
        ("text/*", "html"),
        ("text/html;q=0, */*", "json"),
    ],
)
def test_format_from_accept(header: str | None, expected: str) -> None:
    assert choose_format(header) == expected
