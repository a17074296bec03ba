"""The server's block pages: the page library's settings taken from `Config`, its errors made config errors.

`blockpages` knows nothing of the server's configuration (it depends on nothing above it); this is the one
place that maps `organisation:` and `blockpages:` onto its `PageSettings`, and that turns the library's
`TemplateError` into a `ConfigError`, which `clearance serve` and `clearance blockpages check` print as one
line before exiting 2.
"""

from __future__ import annotations

import dataclasses

from blockpages.prebuilt import PrebuiltRenderer
from blockpages.render import Renderer
from blockpages.settings import Branding, PageSettings, TemplateError
from icap_server.config import Config, ConfigError


class BlockPageError(ConfigError):
    """A block-page template or branding file that cannot be used; one line, naming the file (and line)."""


def page_settings(config: Config) -> PageSettings:
    """What the block pages need from the configuration, and nothing else.

    Branding's fields are named as their keys in `organisation:` and `blockpages:`, so each is copied by name.
    """
    organisation, pages = config.organisation, config.blockpages
    names = [field.name for field in dataclasses.fields(Branding)]
    values = {name: getattr(organisation if hasattr(organisation, name) else pages, name) for name in names}
    branding = Branding(**values)
    return PageSettings(
        branding=branding,
        timezone=config.policy.timezone,
        default_language=pages.default_language,
        template_dir=pages.template_dir,
    )


def block_pages(config: Config, prebuilt: bool = True) -> Renderer:
    """The Renderer for this configuration, its templates already compiled and test-rendered.

    `prebuilt`: each page built once and filled per request (`blockpages.prebuilt`); False renders every page
    through Jinja, the reference the pre-built pages are tested against.
    """
    try:
        settings = page_settings(config)
        return PrebuiltRenderer(settings) if prebuilt else Renderer(settings)
    except TemplateError as error:
        raise BlockPageError(str(error)) from None


def check_templates(config: Config) -> None:
    """What `clearance serve` runs before it starts: a broken template or logo is a BlockPageError naming it."""
    block_pages(config)
