"""Block pages pre-built: each page rendered once through Jinja with placeholders, then filled per request.

Rendering a block page through Jinja (i18n, autoescape, the CSP hash) costs 100–300 µs; a blocked request should
cost little more than a pass. So `PrebuiltRenderer` renders each page once per kind (format, language, reason,
category, form or not, service or not, and the few facts the template branches on: whether the user is signed
in, whether a host, path or user is long enough to get `<wbr>`s or to be shortened) with *placeholders* for the
request's own facts (host, path, user, client address, time, reference, token, service names), cuts the result
into literal chunks and slots, and fills the slots per request.

A placeholder is `\\ue000&<id><nonce>\\ue001` (private-use characters, an `&`, the slot's letters, a per-renderer
number; a long one adds `.xxxxxxxx`). What the template did with it shows in the output, so each slot is filled
with exactly the escaping Jinja would have applied: `&` kept (raw: the text page, JSON), `&amp;` (autoescaped,
also inside a translated message or `_()`'s `%(x)s`), `&amp;<wbr>…<wbr>` (the `breakable` filter). A JSON slot
is JSON-escaped with `<` as `\\u003c`, as `Renderer.json` does. Anything else (a placeholder changed by a filter,
a raw slot in HTML, a slot inside a `<style>`, whose hash the CSP carries) and the page is not pre-built: that
kind goes through Jinja. Each page is checked once, when built, against Jinja for the request that built it;
if they differ, that kind goes through Jinja too. The CSP is computed once per page from its `<style>`
elements, which hold no slot.

Only the built-in templates are pre-built: an admin's template may compute on a value (its length, a
comparison) in a way a placeholder cannot stand for, so those are rendered by Jinja for every request.
`Renderer` itself stays the reference: `icap_server.service.pages.block_pages(config, prebuilt=False)`.
The pages are kept in a bounded LRU (`MAX_PAGES`), made afresh with each Renderer (each config generation).
"""

from __future__ import annotations

import re
import secrets
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from importlib import resources
from json.encoder import encode_basestring
from pathlib import Path
from urllib.parse import quote

from .negotiate import Format, Language
from .render import (
    DISPLAY_CHARS,
    JSON_PATH_CHARS,
    PAGE_TEMPLATES,
    TIME_FORMAT,
    BlockFacts,
    ContinueForm,
    Rendered,
    Renderer,
    RequestForm,
    ServiceName,
    finished,
    page_mode,
    printable,
    shorten,
)
from .settings import PageSettings
from .style import SHORT_VALUE, breakable

MAX_PAGES = 512  # kinds of page kept; a few dozen in practice (reasons × languages × formats × forms)
_START, _END, _PAD = "\ue000", "\ue001", ".xxxxxxxx"

Value = Callable[[BlockFacts, RequestForm | None], str]

# What each slot stands for. The HTML and text pages show the values with control characters replaced; JSON
# carries them as they are (escaped by JSON).
VALUES: dict[str, Value] = {
    "h": lambda facts, _: printable(facts.host),
    "hs": lambda facts, _: shorten(printable(facts.host)),
    "p": lambda facts, _: printable(facts.path),
    "ps": lambda facts, _: shorten(printable(facts.path)),
    "u": lambda facts, _: printable(facts.user or ""),
    "ip": lambda facts, _: facts.client_ip or "",
    "r": lambda facts, _: facts.reference,
    "t": lambda facts, _: facts.time.strftime(TIME_FORMAT),
    "ti": lambda facts, _: facts.time.isoformat(timespec="seconds"),
    "si": lambda facts, _: facts.service.id if facts.service else "",
    "se": lambda facts, _: facts.service.name_en if facts.service else "",
    "sz": lambda facts, _: facts.service.name_zh if facts.service else "",
    "tk": lambda _, form: form.token if form else "",
    "tq": lambda _, form: quote(form.token, safe="") if form else "",
    "jh": lambda facts, _: facts.host,
    "jp": lambda facts, _: shorten(facts.path, JSON_PATH_CHARS),
    "ju": lambda facts, _: facts.user or "",
}


def _html(text: str) -> str:
    """markupsafe's `escape`, as Jinja's autoescape applies it, without making a Markup per value."""
    text = text.replace("&", "&amp;").replace(">", "&gt;").replace("<", "&lt;")
    return text.replace("'", "&#39;").replace('"', "&#34;")


def _wrap(text: str) -> str:
    return str(breakable(text))


def _json(text: str) -> str:
    return encode_basestring(text)[1:-1].replace("<", "\\u003c")  # what json.dumps(ensure_ascii=False) uses


def _raw(text: str) -> str:
    return text


@dataclass(frozen=True, slots=True)
class Page:
    """One pre-built page: literal chunks (UTF-8) around slots, each slot a value and how it is escaped."""

    first: bytes
    steps: tuple[tuple[Value, Callable[[str], str], bytes], ...]  # a slot's value, its escaping, the next chunk
    shape: Rendered  # content type, language and headers (the body is left empty)

    def fill(self, facts: BlockFacts, form: RequestForm | None) -> Rendered:
        parts = [self.first]
        for value, escaping, chunk in self.steps:
            parts.append(escaping(value(facts, form)).encode("utf-8"))
            parts.append(chunk)
        shape = self.shape
        return Rendered(b"".join(parts), shape.content_type, shape.language, shape.headers)


def _size(text: str | None) -> int:
    """-2: None; -1: empty; 0: short enough to get no `<wbr>`; 1: gets them; 2: also shortened on the page."""
    if not text:
        return -2 if text is None else -1
    return 0 if len(text) <= SHORT_VALUE else 1 if len(text) <= DISPLAY_CHARS else 2


def page_kind(facts: BlockFacts, fmt: Format, language: Language, form: RequestForm | None) -> Hashable:
    """Everything a page's shape depends on (what the template branches on); never the values it only shows."""
    service = facts.service
    named = None if service is None else (service.name_en == service.name_zh, not service.name_en, not service.name_zh)
    offer = None if form is None else (form.action, form.max_days, form.min_chars)
    common = (fmt, language, facts.reason, facts.category, named, offer, min(_size(facts.client_ip), 0))
    if fmt == "json":
        return (*common, min(_size(facts.user), 0))
    return (*common, _size(facts.user), _size(facts.host), _size(facts.path))


class _SlotTime:
    """Stands in for the time: the template sees only these two renderings of it."""

    def __init__(self, text: str, iso: str) -> None:
        self.text, self.iso = text, iso

    def strftime(self, pattern: str) -> str:
        if pattern != TIME_FORMAT:
            raise ValueError(f"time shown as {pattern!r}")  # no page of this kind is pre-built
        return self.text

    def isoformat(self, timespec: str = "auto") -> str:
        if timespec != "seconds":
            raise ValueError(f"time with timespec {timespec!r}")
        return self.iso


@dataclass(frozen=True, slots=True)
class _SlotForm(RequestForm):
    """The request form with a placeholder token; its link carries the token's own (URL-quoted) slot."""

    quoted: str = ""

    @property
    def link(self) -> str:
        return f"{self.action}?token={self.quoted}"


class PrebuiltRenderer(Renderer):
    """`Renderer` with each page built once and filled per request; the same bytes and headers as Jinja's."""

    def __init__(self, settings: PageSettings) -> None:
        super().__init__(settings)
        self.nonce = str(secrets.randbelow(10**8)).zfill(8)
        self.pattern = re.compile(f"{_START}(&amp;<wbr>|&amp;|&)([a-z]+){self.nonce}(\\.<wbr>x{{8}}|\\.x{{8}})?{_END}")
        built_in = Path(str(resources.files("blockpages") / "templates")).resolve()
        self.built_in = {
            fmt: all(
                Path(environment.get_template(name).filename or "").resolve().parent == built_in
                for environment in self.environments.values()
            )
            for fmt, name in PAGE_TEMPLATES.items()
        }
        self.built_in["json"] = True
        self.pages: OrderedDict[Hashable, Page | None] = OrderedDict()  # None: this kind goes through Jinja

    def render(
        self,
        facts: BlockFacts,
        fmt: Format,
        language: Language,
        form: RequestForm | None,
        proceed: ContinueForm | None = None,
    ) -> Rendered:
        if not self.built_in[fmt] or page_mode(facts) == "caution":  # caution pages: Jinja every time
            return super().render(facts, fmt, language, form, proceed)
        kind = page_kind(facts, fmt, language, form)
        try:
            page = self.pages[kind]
        except KeyError:
            return self._build(kind, facts, fmt, language, form)
        self.pages.move_to_end(kind)
        if page is None:
            return super().render(facts, fmt, language, form)
        return page.fill(facts, form)

    def _build(
        self, kind: Hashable, facts: BlockFacts, fmt: Format, language: Language, form: RequestForm | None
    ) -> Rendered:
        """Build this kind's page, check it against Jinja for this request, keep it (or keep None)."""
        reference = super().render(facts, fmt, language, form)
        try:
            page = self._prebuild(facts, fmt, language, form)
        except Exception:  # a template this can't stand in for: Jinja, as before, for every page of the kind
            page = None
        if page is not None and page.fill(facts, form) != reference:
            page = None
        self.pages[kind] = page
        if len(self.pages) > MAX_PAGES:
            self.pages.popitem(last=False)
        return reference

    def _slot(self, slot: str, long: bool = False) -> str:
        return f"{_START}&{slot}{self.nonce}{_PAD if long else ''}{_END}"

    def _stand_in(self, value: str | None, slot: str, sized: bool) -> str | None:
        """None and "" as they are (a template may test them); any other value a placeholder of its size."""
        return self._slot(slot, sized and len(value) > SHORT_VALUE) if value else value

    def _stand_ins(
        self, facts: BlockFacts, fmt: Format, form: RequestForm | None
    ) -> tuple[BlockFacts, RequestForm | None]:
        """Facts and form of the same kind with a placeholder for every value the page only shows."""
        service = facts.service
        stand_in: ServiceName | None = None
        if service is not None:
            name_en = self._slot("se") if service.name_en else ""
            name_zh = name_en if service.name_zh == service.name_en else self._slot("sz") if service.name_zh else ""
            stand_in = ServiceName(self._slot("si"), name_en, name_zh)
        json_page = fmt == "json"
        time = _SlotTime(self._slot("t"), self._slot("ti"))
        facts = BlockFacts(
            host=self._slot("jh") if json_page else self._stand_in(facts.host, "h", True) or "",
            path=self._slot("jp") if json_page else self._stand_in(facts.path, "p", True) or "",
            category=facts.category,
            user=self._stand_in(facts.user, "ju" if json_page else "u", not json_page),
            client_ip=self._stand_in(facts.client_ip, "ip", False),
            reason=facts.reason,
            reference=self._slot("r"),
            time=time,  # type: ignore[arg-type]
            service=stand_in,
        )
        if form is not None:
            form = _SlotForm(form.action, self._slot("tk"), form.max_days, form.min_chars, self._slot("tq"))
        return facts, form

    def _prebuild(self, facts: BlockFacts, fmt: Format, language: Language, form: RequestForm | None) -> Page | None:
        """The page with placeholders, cut into chunks and slots; None when a placeholder was not kept intact."""
        stand_in, stand_in_form = self._stand_ins(facts, fmt, form)
        if fmt == "json":
            text = self.json(stand_in, stand_in_form).decode("utf-8")
        else:
            context = self.context(stand_in, language, stand_in_form)
            page = context["page"]
            if len(facts.host) > DISPLAY_CHARS:  # shortened: the short form is a value of its own
                page["host_short"] = self._slot("hs", True)
            if len(facts.path) > DISPLAY_CHARS:
                page["path_short"] = self._slot("ps", True)
            template = self.environments[language].get_template(PAGE_TEMPLATES[fmt])
            text = template.render(context)
        return self._cut(text, fmt, language, stand_in_form)

    def _cut(self, text: str, fmt: Format, language: Language, form: RequestForm | None) -> Page | None:
        chunks: list[bytes] = []
        slots: list[tuple[str, Callable[[str], str]]] = []
        start = 0
        for found in self.pattern.finditer(text):
            escaping = self._escaping(fmt, found.group(1), found.group(3))
            if escaping is None or found.group(2) not in VALUES:
                return None
            chunks.append(text[start : found.start()].encode("utf-8"))
            slots.append((found.group(2), escaping))
            start = found.end()
        chunks.append(text[start:].encode("utf-8"))
        literal = b"".join(chunks).decode("utf-8")
        if _START in literal or _END in literal:  # a placeholder some filter changed, or one in the config's text
            return None
        shape = finished(b"", self.pattern.sub("", text), fmt, language, form)
        if fmt == "html" and shape != finished(b"", text, fmt, language, form):
            return None  # a slot inside a <style>: the CSP's hash would depend on the request
        steps = tuple(
            (VALUES[slot], escaping, chunk) for (slot, escaping), chunk in zip(slots, chunks[1:], strict=True)
        )
        return Page(chunks[0], steps, shape)

    @staticmethod
    def _escaping(fmt: Format, lead: str, tail: str | None) -> Callable[[str], str] | None:
        """How a slot is filled, from what the template made of its placeholder."""
        wrapped = lead == "&amp;<wbr>"
        if wrapped != (tail == ".<wbr>xxxxxxxx"):
            return None
        if fmt == "json":
            return _json if lead == "&" else None
        if fmt == "text":
            return _raw if lead == "&" else None
        if lead == "&":
            return None  # unescaped in HTML (`|safe`): a value could add markup, or a <style> the CSP hashes
        return _wrap if wrapped else _html
