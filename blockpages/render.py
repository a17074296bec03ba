"""Block pages: what staff see when a request is stopped, in English and Traditional Chinese.

Rendering is separate from the ICAP layer so the page can be previewed and tested on its own; everything
reflected from the request (host, user, path) goes through Jinja2's autoescaping.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache

import jinja2

CATEGORY_LABELS: dict[str, tuple[str, str]] = {
    "webmail": ("Personal webmail", "個人網上電郵"),
    "cloud-storage": ("Public cloud storage", "公共雲端儲存"),
    "web-im": ("Web instant messaging", "網頁版即時通訊"),
}

REASON_TEXT: dict[str, tuple[str, str]] = {
    "no-approval": (
        "You have no approval to use this kind of service from an office computer.",
        "你未獲批准在辦公室電腦使用此類服務。",
    ),
    "approval-expired": (
        "Your approval for this kind of service has expired.",
        "你使用此類服務的批准已經到期。",
    ),
    "approval-suspended": (
        "Your approval for this kind of service is suspended until your department head reviews it.",
        "你使用此類服務的批准已暫停，須待部門主管覆核。",
    ),
    "approval-revoked": (
        "Your approval for this kind of service has been revoked.",
        "你使用此類服務的批准已被撤銷。",
    ),
}


@dataclass(frozen=True, slots=True)
class BlockPage:
    """The facts a block page shows; all plain text, escaped at render time."""

    organisation_en: str
    organisation_zh: str
    host: str
    category: str
    user: str | None
    reason: str
    reference: str
    time: datetime
    how_to_request_en: str
    how_to_request_zh: str
    contact: str


@lru_cache(maxsize=1)
def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.PackageLoader("blockpages", "templates"),
        autoescape=jinja2.select_autoescape(default=True, default_for_string=True),
        undefined=jinja2.StrictUndefined,
        auto_reload=False,  # templates do not change under a running server; no stat() per block
        trim_blocks=True,
        lstrip_blocks=True,
    )


def render_block_page(page: BlockPage) -> bytes:
    label_en, label_zh = CATEGORY_LABELS.get(page.category, (page.category, page.category))
    reason_en, reason_zh = REASON_TEXT.get(page.reason, (page.reason, page.reason))
    html = (
        _environment()
        .get_template("block.html")
        .render(
            page=page,
            category_en=label_en,
            category_zh=label_zh,
            reason_en=reason_en,
            reason_zh=reason_zh,
            time_text=page.time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        )
    )
    return html.encode("utf-8")
