"""The one look shared by the block page and the portal: the stylesheet, and where long values may wrap.

`static/clearance.css` is the only stylesheet. The block page inlines it in its `<style>` (the CSP allows that
element by its hash, so nothing else can style the page); the portal serves the same text as `/style.css`. The
branding's two colours come first, as CSS variables, so both look like the organisation's.

Hosts, paths and user names have no spaces, so a narrow screen would either overflow or break them between
two letters. `breakable` marks the sensible places instead (after a dot, slash, hyphen, …) with `<wbr>`,
escaping every piece: request values never reach the page unescaped.
"""

from __future__ import annotations

import functools
import re
from importlib import resources

from markupsafe import Markup, escape

from .settings import TemplateError

# After these a long value may wrap: the ends of a host's labels, a path's segments, a query's parts.
_BREAK_AFTER = re.compile(r"(?<=[./\-_?&=@~])")
# A value this short fits the narrowest phone's line (about 250 px of facts at 320 px), so it gets no breaks
# and keeps its plain markup (`<dd>mail.google.com</dd>`, which the proxy tests look for).
SHORT_VALUE = 20


@functools.cache
def stylesheet() -> str:
    """The shared stylesheet's text; one that could close the `<style>` it is inlined in is refused."""
    text = (resources.files("blockpages") / "static" / "clearance.css").read_text(encoding="utf-8")
    if "</" in text:
        raise TemplateError("blockpages/static/clearance.css must not contain '</' (it is inlined in a <style>)")
    return text


def colour_rules(primary: str, accent: str) -> str:
    """The branding's colours as the variables the stylesheet uses (both checked `#rrggbb` by the config)."""
    for colour in (primary, accent):
        if not re.fullmatch(r"#[0-9A-Fa-f]{6}", colour):
            raise TemplateError(f"blockpages: the colour {colour!r} is not #rrggbb")
    return f":root {{ --primary: {primary}; --accent: {accent}; }}\n"


def page_style(primary: str, accent: str) -> Markup:
    """What goes in a block page's one `<style>`: the colours, then the shared stylesheet (trusted text)."""
    return Markup(colour_rules(primary, accent) + stylesheet())  # our own file, checked for "</" above


def breakable(text: object) -> Markup:
    """`text` escaped, with `<wbr>` after each dot, slash, hyphen, … so it wraps there and not mid-word."""
    if len(str(text)) <= SHORT_VALUE:
        return escape(text)
    pieces = [piece for piece in _BREAK_AFTER.split(str(text)) if piece]
    return Markup("<wbr>").join(escape(piece) for piece in pieces)
