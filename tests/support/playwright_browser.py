"""Headless Chromium (Debian's /usr/bin/chromium) driven by Playwright, optionally through a proxy.

Playwright answers the proxy's authentication challenge itself, so the browser reaches Squid as a real,
authenticated user, exactly as staff would. Playwright's own browser download is never used.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from .browser import FLAGS
from .requirements import require_program


@contextmanager
def chromium_page(
    proxy_url: str | None = None,
    user: str | None = None,
    password: str = "anypass",
    locale: str = "en-GB",
    viewport: tuple[int, int] = (1000, 1100),
) -> Iterator[Any]:
    executable = require_program("chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        proxy: dict[str, str] | None = None
        if proxy_url:
            proxy = {"server": proxy_url}
            if user:
                proxy |= {"username": user, "password": password}
        browser = playwright.chromium.launch(executable_path=executable, args=FLAGS[1:], proxy=proxy)  # type: ignore[arg-type]
        try:
            context = browser.new_context(
                locale=locale,
                extra_http_headers={"Accept-Language": locale},
                viewport={"width": viewport[0], "height": viewport[1]},
            )
            page = context.new_page()
            yield page
        finally:
            browser.close()
