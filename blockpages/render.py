"""Block pages: what staff see when a request is stopped, in English or Traditional Chinese, as HTML, JSON or text.

Rendering is separate from the ICAP layer so pages can be previewed and tested on their own. Everything
reflected from the request (host, path, user) goes through Jinja2's autoescaping (HTML) or JSON encoding, and
the page needs nothing from outside itself: the logo is inlined as a data: URI, the stylesheet it shares with
the portal (`style.py`) is inlined, and there is no script, so the Content-Security-Policy sent with it can
forbid everything else. Long hosts and paths wrap after their dots and slashes (the `breakable` filter).

Templates: `block.html` and `block.txt`, looked up first in `blockpages.template_dir` (the admins' own), then
among the built-in ones. `Renderer` compiles every template and renders each page template with sample facts
for every reason and language when it is made, so a broken template stops `clearance serve` at start-up with
the template's name and line, instead of breaking pages at request time.

`Renderer` renders every page through Jinja: it is the reference. The server uses `prebuilt.PrebuiltRenderer`,
which renders each kind of page once and fills in the request's facts, with the same bytes.

Messages come from the one bilingual catalog (`catalog.py`, `locale/zh_HK/LC_MESSAGES/messages.po`); the English
text is the message id. What the pages need from outside is a `PageSettings`: the library reads no server config.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import traceback
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import jinja2

from .catalog import category_label, load_translations, translator
from .facts import BlockFacts, ContinueForm, Rendered, RequestForm, ServiceName, offered, page_mode
from .negotiate import LANGUAGES, Format, Language
from .settings import PageSettings, TemplateError
from .style import breakable, page_style
from .texts import (
    ADVICE,
    ADVICE_WITH_FORM,
    CAUTION_HEADING,
    CAUTION_MESSAGE,
    HEADING,
    MODE_LABELS,
    REASON_MESSAGES,
    REQUESTABLE,
    SERVICE_IN_SENTENCE,
    SUSPENDED_WITH_FORM,
    UNCATEGORISED,
    UNKNOWN_REASON,
)

# The page's values and words live in `facts.py` and `texts.py`; callers import them from here, as before.
__all__ = [
    "REASON_MESSAGES",
    "REQUESTABLE",
    "UNCATEGORISED",
    "BlockFacts",
    "ContinueForm",
    "Rendered",
    "Renderer",
    "RequestForm",
    "ServiceName",
    "content_security_policy",
    "finished",
    "logo_data_uri",
    "offered",
    "page_mode",
    "printable",
    "sample_facts",
    "shorten",
]

LOGO_MAX_BYTES = 128 * 1024
DISPLAY_CHARS = 80  # host and path longer than this are shortened on the page (in full in JSON)
JSON_PATH_CHARS = 2000
PAGE_TEMPLATES = {"html": "block.html", "text": "block.txt"}
TEMPLATE_SUFFIXES = (".html", ".htm", ".txt")
TIME_FORMAT = "%Y-%m-%d %H:%M:%S %Z"  # the time as the page shows it (`page.time`)


# ---- branding -----------------------------------------------------------------------------------------------


def logo_data_uri(path: str) -> str:
    """The logo file as a data: URI; PNG, JPEG or SVG by content, at most LOGO_MAX_BYTES."""
    try:
        data = Path(path).read_bytes()
    except OSError as error:
        raise TemplateError(f"blockpages.logo: {path}: cannot read it: {error.strerror or error}") from None
    if len(data) > LOGO_MAX_BYTES:
        raise TemplateError(
            f"blockpages.logo: {path} is {len(data)} bytes; a logo may be at most {LOGO_MAX_BYTES} bytes "
            "(it is sent inside every block page)"
        )
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        media = "image/png"
    elif data.startswith(b"\xff\xd8\xff"):
        media = "image/jpeg"
    elif b"<svg" in data[:4096]:
        media = "image/svg+xml"  # in an <img>, an SVG's own scripts never run
    else:
        raise TemplateError(f"blockpages.logo: {path} is not a PNG, JPEG or SVG image")
    return f"data:{media};base64,{base64.b64encode(data).decode('ascii')}"


# ---- rendering ----------------------------------------------------------------------------------------------


def shorten(text: str, limit: int = DISPLAY_CHARS) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def printable(text: str) -> str:
    """No control characters from the request in a page (they would garble text/plain and logs)."""
    return _CONTROL.sub("\ufffd", text)


_STYLE = re.compile(r"<style[^>]*>(.*?)</style>", re.DOTALL | re.IGNORECASE)
_ORIGIN = re.compile(r"https?://[A-Za-z0-9.\-\[\]:]+")


def content_security_policy(html: str, form: RequestForm | None, proceed: ContinueForm | None = None) -> str:
    """Nothing but this page's own inline styles (by hash), data: images, and forms posting to the portal."""
    hashes = " ".join(
        "'sha256-" + base64.b64encode(hashlib.sha256(style.encode()).digest()).decode() + "'"
        for style in dict.fromkeys(_STYLE.findall(html))
    )
    origins = dict.fromkeys(
        offer.origin for offer in (form, proceed) if offer is not None and _ORIGIN.fullmatch(offer.origin)
    )
    form_action = " ".join(origins) or "'none'"
    styles = hashes or "'none'"
    return (
        f"default-src 'none'; img-src data:; style-src {styles}; form-action {form_action}; "
        "base-uri 'none'; frame-ancestors 'none'"
    )


def finished(
    body: bytes,
    text: str,
    fmt: Format,
    language: Language,
    form: RequestForm | None,
    proceed: ContinueForm | None = None,
) -> Rendered:
    """The page with its type and headers; an HTML page's CSP hashes the `<style>` elements of `text`."""
    vary = ("Vary", "Accept, Accept-Language")
    inert = ("Content-Security-Policy", "default-src 'none'; frame-ancestors 'none'")
    if fmt == "json":
        return Rendered(body, "application/json; charset=utf-8", language, (inert, vary))
    if fmt == "html":
        policy = ("Content-Security-Policy", content_security_policy(text, form, proceed))
        return Rendered(body, "text/html; charset=utf-8", language, (policy, ("Content-Language", language), vary))
    return Rendered(body, "text/plain; charset=utf-8", language, (inert, ("Content-Language", language), vary))


class Renderer:
    """Block pages for one set of settings; made once per process (Application), checked when made."""

    def __init__(self, settings: PageSettings) -> None:
        self.settings = settings
        brand = settings.branding
        self.zone = ZoneInfo(settings.timezone)
        self.logo = logo_data_uri(brand.logo) if brand.logo else None
        self.style = page_style(brand.primary_colour, brand.accent_colour)
        self.translations = load_translations()
        self.translate = {language: translator(language) for language in LANGUAGES}
        loaders: list[jinja2.BaseLoader] = []
        if settings.template_dir is not None:
            if not Path(settings.template_dir).is_dir():
                raise TemplateError(f"blockpages.template_dir: {settings.template_dir} is not a directory")
            loaders.append(jinja2.FileSystemLoader(settings.template_dir))
        loaders.append(jinja2.PackageLoader("blockpages", "templates"))
        loader = jinja2.ChoiceLoader(loaders)
        self.environments = {language: self._environment(loader, language) for language in LANGUAGES}
        self.check()

    def _environment(self, loader: jinja2.BaseLoader, language: Language) -> jinja2.Environment:
        environment = jinja2.Environment(
            loader=loader,
            autoescape=jinja2.select_autoescape(("html", "htm", "xml"), default_for_string=True, default=False),
            undefined=jinja2.StrictUndefined,
            auto_reload=False,  # templates do not change under a running server; no stat() per block
            trim_blocks=True,
            lstrip_blocks=True,
            extensions=["jinja2.ext.i18n"],
        )
        environment.install_gettext_translations(self.translations[language], newstyle=True)  # type: ignore[attr-defined]
        other = next(code for code in LANGUAGES if code != language)
        environment.globals["alt"] = self.translate[other]  # the same message in the other language
        environment.filters["breakable"] = breakable  # a long host or path wraps after its dots and slashes
        return environment

    # ---- the three formats ------------------------------------------------------------------------------------

    def render(
        self,
        facts: BlockFacts,
        fmt: Format,
        language: Language,
        form: RequestForm | None,
        proceed: ContinueForm | None = None,
    ) -> Rendered:
        """The page through Jinja, every time: the reference the pre-built pages (`prebuilt.py`) must equal."""
        proceed = offered(facts, proceed)
        if fmt == "json":
            return finished(self.json(facts, form, proceed), "", fmt, language, form, proceed)
        context = self.context(facts, language, form, proceed)
        text = self.environments[language].get_template(PAGE_TEMPLATES[fmt]).render(context)
        return finished(text.encode("utf-8"), text, fmt, language, form, proceed)

    def message(self, facts: BlockFacts, language: Language) -> str:
        caution = page_mode(facts) == "caution"
        template = CAUTION_MESSAGE if caution else REASON_MESSAGES.get(facts.reason, UNKNOWN_REASON)
        translate = self.translate[language]
        label = category_label(facts.category, language)
        if facts.service is not None and facts.reason not in UNCATEGORISED:
            label = translate(SERVICE_IN_SENTENCE, service=facts.service.name(language), category=label)
        return translate(template, category=label)

    def advice(self, reason: str, with_form: bool, language: Language) -> str:
        """What to do: with a request form on the page, use it; else the reason's advice or how to request."""
        if with_form:
            return self.translate[language](SUSPENDED_WITH_FORM if reason == "approval-suspended" else ADVICE_WITH_FORM)
        advice = ADVICE.get(reason)
        if advice:
            return self.translate[language](advice)
        brand = self.settings.branding
        return brand.how_to_request_zh if language == "zh-HK" else brand.how_to_request_en

    def mode_label(self, facts: BlockFacts, language: Language) -> str:
        """The Mode fact: a word, since the message says the rest (a long label would wrap mid-word)."""
        return self.translate[language](MODE_LABELS[page_mode(facts)])

    def json(self, facts: BlockFacts, form: RequestForm | None, proceed: ContinueForm | None = None) -> bytes:
        mode = page_mode(facts)
        proceed = offered(facts, proceed)
        document = {
            "blocked": True,  # a caution page stops the request too, until its continue
            "caution": mode == "caution",
            "mode": mode,
            "reason": facts.reason,
            "message": {language: self.message(facts, language) for language in LANGUAGES},
            "host": facts.host,
            "path": shorten(facts.path, JSON_PATH_CHARS),
            "category": facts.category,
            "service": _service_record(facts.service),
            "user": facts.user,
            "client_ip": facts.client_ip,
            "reference": facts.reference,
            "time": facts.time.isoformat(timespec="seconds"),
            "request_url": form.link if form is not None else None,
            "continue": _continue_record(proceed),
        }
        # `<` escaped too, so the body is inert even if something ignored its Content-Type.
        return json.dumps(document, ensure_ascii=False).replace("<", "\\u003c").encode("utf-8")

    def context(
        self, facts: BlockFacts, language: Language, form: RequestForm | None, proceed: ContinueForm | None = None
    ) -> dict[str, Any]:
        other: Language = "zh-HK" if language == "en" else "en"
        translate, other_translate = self.translate[language], self.translate[other]
        host, path, user = printable(facts.host), printable(facts.path), facts.user and printable(facts.user)
        mode = page_mode(facts)
        heading = CAUTION_HEADING if mode == "caution" else HEADING
        return {
            "lang": language,
            "other_lang": other,
            "heading": translate(heading),
            "heading_other": other_translate(heading),
            "caution": mode == "caution",
            "mode_label": self.mode_label(facts, language),
            "mode_label_other": self.mode_label(facts, other),
            "message": self.message(facts, language),
            "message_other": self.message(facts, other),
            "advice": self.advice(facts.reason, form is not None, language),
            "requestable": facts.reason in REQUESTABLE,
            "page": {
                "host": host,
                "host_short": shorten(host),
                "path": path,
                "path_short": shorten(path),
                "category": facts.category,
                "category_label": category_label(facts.category, language),
                "category_label_other": category_label(facts.category, other),
                "service": facts.service.name(language) if facts.service is not None else None,
                "service_other": facts.service.name(other) if facts.service is not None else None,
                "service_id": facts.service.id if facts.service is not None else None,
                "user": user,
                "client_ip": facts.client_ip,
                "reason": facts.reason,
                "mode": mode,
                "reference": facts.reference,
                "time": facts.time.strftime(TIME_FORMAT),
                "time_iso": facts.time.isoformat(timespec="seconds"),
            },
            **self.branding(language, other),
            "form": form,
            "proceed": offered(facts, proceed),
        }

    def branding(self, language: Language, other: Language) -> dict[str, Any]:
        """The organisation's names and contacts, and the look: the same on every page in one language."""
        brand = self.settings.branding
        names = {"en": brand.name_en, "zh-HK": brand.name_zh}
        how_to = {"en": brand.how_to_request_en, "zh-HK": brand.how_to_request_zh}
        return {
            "org": {
                "name": names[language],
                "name_other": names[other],
                "name_en": brand.name_en,
                "name_zh": brand.name_zh,
                "how_to_request": how_to[language],
                "contact": brand.contact,
            },
            "brand": {
                "logo": self.logo,
                "style": self.style,
                "primary": brand.primary_colour,
                "accent": brand.accent_colour,
                "contact_email": brand.contact_email,
                "contact_phone": brand.contact_phone,
                "contact_url": brand.contact_url,
                "policy_url": brand.policy_url,
            },
        }

    # ---- start-up check ---------------------------------------------------------------------------------------

    def check(self) -> None:
        """Compile every template and render the page templates with sample facts; TemplateError if one fails."""
        for language, environment in self.environments.items():
            names = [name for name in environment.list_templates() if name.endswith(TEMPLATE_SUFFIXES)]
            for name in names:
                try:
                    environment.get_template(name)
                except jinja2.TemplateSyntaxError as error:
                    where = error.filename or error.name or name
                    raise TemplateError(f"block-page template {where}, line {error.lineno}: {error.message}") from None
                except jinja2.TemplateError as error:
                    raise TemplateError(f"block-page template {name}: {error}") from None
            filenames = {environment.get_template(name).filename or name for name in names}
            for fmt, name in PAGE_TEMPLATES.items():
                for facts, form, proceed in sample_facts(self.zone):
                    try:
                        Renderer.render(self, facts, fmt, language, form, proceed)  # type: ignore[arg-type]
                    except Exception as error:
                        where, line = _template_frame(error, filenames, environment, name)
                        raise TemplateError(
                            f"block-page template {where}, line {line}: {type(error).__name__}: {error} "
                            f"(rendered with sample data: reason {facts.reason}, language {language})"
                        ) from None


def _service_record(service: ServiceName | None) -> dict[str, str] | None:
    if service is None:
        return None
    return {"id": service.id, "name_en": service.name_en, "name_zh": service.name_zh}


def _continue_record(proceed: ContinueForm | None) -> dict[str, str | int] | None:
    if proceed is None:
        return None
    return {"action": proceed.action, "token": proceed.token, "minutes": proceed.minutes}


def _template_frame(
    error: BaseException, filenames: set[str], environment: jinja2.Environment, name: str
) -> tuple[str, int | str]:
    """The template file and line a render error came from (Jinja maps its frames to template lines)."""
    for frame in reversed(traceback.extract_tb(error.__traceback__)):
        if frame.filename in filenames:
            return frame.filename, frame.lineno or "?"
    return environment.get_template(name).filename or name, "?"


def sample_facts(zone: ZoneInfo) -> Iterator[tuple[BlockFacts, RequestForm | None, ContinueForm | None]]:
    """Every reason and mode, signed in or not, with and without the forms: what templates must cope with."""
    time = datetime(2026, 1, 1, 9, 0, tzinfo=zone)
    form = RequestForm("https://portal.example/request", "sample.token", 180, 20)
    proceed = ContinueForm("https://portal.example/continue", "sample.continue", 15)
    service = ServiceName("sample-mail", "Sample Mail", "範例郵件")
    for mode in ("enforce", "caution"):
        for reason in REASON_MESSAGES:
            category = None if reason in UNCATEGORISED else "webmail"
            for user, named in (("sample.user", service), ("sample.user", None), (None, None)):
                facts = BlockFacts(
                    "mail.example.com",
                    "/" + "long-path/" * 12,
                    category,
                    user,
                    "10.0.0.1",
                    reason,
                    "0123456789ab",
                    time,
                    named if category else None,
                    mode,
                )
                signed_in = reason in REQUESTABLE and user
                yield facts, form if signed_in else None, proceed if signed_in else None
                yield facts, None, proceed if signed_in and mode == "caution" else None
                yield facts, None, None
