"""What the block pages need to know from outside, and the one error they raise.

The page library depends on nothing above it: it does not read the server's configuration. The server
(`icap_server.service.pages`) builds these settings from its `Config` and turns a `TemplateError` into its own
configuration error, so the pages can be rendered, previewed and tested with nothing but these values.
"""

from __future__ import annotations

from dataclasses import dataclass

from .negotiate import Language


class TemplateError(Exception):
    """A block-page template or branding file that cannot be used; one line, naming the file (and line)."""


@dataclass(frozen=True, slots=True)
class Branding:
    """Whom the page names and how it looks: plain text and checked values, escaped when the page is rendered."""

    name_en: str
    name_zh: str
    how_to_request_en: str  # the advice for reasons a request can fix
    how_to_request_zh: str
    contact: str
    primary_colour: str  # #rrggbb
    accent_colour: str
    logo: str | None = None  # a file: PNG, JPEG or SVG, inlined into every page
    contact_email: str | None = None
    contact_phone: str | None = None
    contact_url: str | None = None
    policy_url: str | None = None


@dataclass(frozen=True, slots=True)
class PageSettings:
    """Everything a Renderer is made from."""

    branding: Branding
    timezone: str  # IANA name: the zone of the sample facts the start-up check renders
    default_language: Language = "en"  # when the browser's Accept-Language names neither language
    template_dir: str | None = None  # the admins' own templates, looked up before the built-in ones
