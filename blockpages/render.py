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
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit
from zoneinfo import ZoneInfo

import jinja2

from .catalog import N_, category_label, load_translations, translator
from .negotiate import LANGUAGES, Format, Language
from .settings import PageSettings, TemplateError
from .style import breakable, page_style

LOGO_MAX_BYTES = 128 * 1024
DISPLAY_CHARS = 80  # host and path longer than this are shortened on the page (in full in JSON)
JSON_PATH_CHARS = 2000
PAGE_TEMPLATES = {"html": "block.html", "text": "block.txt"}
TEMPLATE_SUFFIXES = (".html", ".htm", ".txt")
TIME_FORMAT = "%Y-%m-%d %H:%M:%S %Z"  # the time as the page shows it (`page.time`)
REQUESTABLE = frozenset({"no-approval", "approval-expired", "approval-revoked", "approval-suspended"})


HEADING = N_("Access to this site is blocked")

# What happened, one distinct plain-language message per reason. %(category)s is the category's label.
REASON_MESSAGES: dict[str, str] = {
    "no-approval": N_(
        "You have no approval to use %(category)s. Such services are open only to staff whose head of "
        "department has approved them for a genuine business need."
    ),
    "approval-expired": N_(
        "Your approval to use %(category)s has expired. If you still need it, ask for a new approval."
    ),
    "approval-revoked": N_(
        "Your approval to use %(category)s has been revoked, so access has stopped. Ask the head of your "
        "department if you think this is a mistake."
    ),
    "approval-suspended": N_(
        "Your approval to use %(category)s is on hold because its regular review is overdue. It works again "
        "as soon as the head of your department has reviewed it."
    ),
    "not-permitted": N_(
        "The use of %(category)s is not permitted on this network at all, and no approval can open it."
    ),
    "policy-unavailable": N_(
        "The web filter cannot check approvals at the moment, so it blocks every site until it can. This is "
        "not about you or this site: please try again in a few minutes."
    ),
    "bad-request": N_(
        "The web filter cannot tell which site this request is for: the address names no site, or two "
        "different ones. Such requests are blocked for everyone, whatever approvals they hold."
    ),
}
UNKNOWN_REASON = N_("The web filter blocked this request.")

# What to do about it, for the reasons where the organisation's own how-to-request text does not fit.
ADVICE: dict[str, str] = {
    "approval-suspended": N_("Ask the head of your department to review your approval."),
    "not-permitted": N_(
        "If your work really depends on it, speak to the IT security team and quote the reference on this page."
    ),
    "policy-unavailable": N_("If this lasts more than a few minutes, contact us and quote the reference on this page."),
    "bad-request": N_(
        "Check the address and try again, typed as the site gives it. If a program you need sends such "
        "requests, contact us and quote the reference on this page."
    ),
}
# With the request form on the page, the advice points to it (without one, the organisation's how-to-request text
# or the reason's advice above); approval-suspended keeps its own first sentence.
ADVICE_WITH_FORM = N_("Tell the head of your department why your work needs it, with the form below.")
SUSPENDED_WITH_FORM = N_(
    "Ask the head of your department to review your approval, or ask for a new one with the form below."
)
# Reasons that are about no category (the page shows no category's name in them).
UNCATEGORISED = frozenset({"policy-unavailable", "bad-request"})
# A catalogue service named in a reason's sentence, with its category beside it: "WhatsApp (web instant messaging)".
SERVICE_IN_SENTENCE = N_("%(service)s (%(category)s)")


@dataclass(frozen=True, slots=True)
class ServiceName:
    """The catalogue service a blocked host belongs to, as a page names it (the library knows no catalogue)."""

    id: str
    name_en: str
    name_zh: str

    def name(self, language: Language) -> str:
        return self.name_zh if language == "zh-HK" else self.name_en


@dataclass(frozen=True, slots=True)
class BlockFacts:
    """What is known about the blocked request; plain text, escaped at render time."""

    host: str
    path: str
    category: str | None
    user: str | None
    client_ip: str | None
    reason: str
    reference: str
    time: datetime  # aware, in the time zone the page shows
    service: ServiceName | None = None  # the catalogue service of the host, when it belongs to one


@dataclass(frozen=True, slots=True)
class RequestForm:
    """The "Request access" form: where it posts, the signed token, and the longest validity on offer."""

    action: str  # absolute URL of the portal's POST /request
    token: str
    max_days: int
    min_chars: int = 0

    @property
    def default_days(self) -> int:
        return min(30, self.max_days)

    @property
    def link(self) -> str:
        """The same request as a link (the portal's GET /request shows the form for a token)."""
        return f"{self.action}?token={quote(self.token, safe='')}"

    @property
    def origin(self) -> str:
        parts = urlsplit(self.action)
        return f"{parts.scheme}://{parts.netloc}"


@dataclass(frozen=True, slots=True)
class Rendered:
    body: bytes
    content_type: str
    language: Language
    headers: tuple[tuple[str, str], ...]  # Content-Security-Policy, Content-Language, Vary


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


def content_security_policy(html: str, form: RequestForm | None) -> str:
    """Nothing but this page's own inline styles (by hash), data: images, and a form posting to the portal."""
    hashes = " ".join(
        "'sha256-" + base64.b64encode(hashlib.sha256(style.encode()).digest()).decode() + "'"
        for style in dict.fromkeys(_STYLE.findall(html))
    )
    form_action = form.origin if form is not None and _ORIGIN.fullmatch(form.origin) else "'none'"
    styles = hashes or "'none'"
    return (
        f"default-src 'none'; img-src data:; style-src {styles}; form-action {form_action}; "
        "base-uri 'none'; frame-ancestors 'none'"
    )


def finished(body: bytes, text: str, fmt: Format, language: Language, form: RequestForm | None) -> Rendered:
    """The page with its type and headers; an HTML page's CSP hashes the `<style>` elements of `text`."""
    vary = ("Vary", "Accept, Accept-Language")
    inert = ("Content-Security-Policy", "default-src 'none'; frame-ancestors 'none'")
    if fmt == "json":
        return Rendered(body, "application/json; charset=utf-8", language, (inert, vary))
    if fmt == "html":
        policy = ("Content-Security-Policy", content_security_policy(text, form))
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

    def render(self, facts: BlockFacts, fmt: Format, language: Language, form: RequestForm | None) -> Rendered:
        """The page through Jinja, every time: the reference the pre-built pages (`prebuilt.py`) must equal."""
        if fmt == "json":
            return finished(self.json(facts, form), "", fmt, language, form)
        text = self.environments[language].get_template(PAGE_TEMPLATES[fmt]).render(self.context(facts, language, form))
        return finished(text.encode("utf-8"), text, fmt, language, form)

    def message(self, facts: BlockFacts, language: Language) -> str:
        template = REASON_MESSAGES.get(facts.reason, UNKNOWN_REASON)
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

    def json(self, facts: BlockFacts, form: RequestForm | None) -> bytes:
        document = {
            "blocked": True,
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
        }
        # `<` escaped too, so the body is inert even if something ignored its Content-Type.
        return json.dumps(document, ensure_ascii=False).replace("<", "\\u003c").encode("utf-8")

    def context(self, facts: BlockFacts, language: Language, form: RequestForm | None) -> dict[str, Any]:
        other: Language = "zh-HK" if language == "en" else "en"
        translate, other_translate = self.translate[language], self.translate[other]
        brand = self.settings.branding
        names = {"en": brand.name_en, "zh-HK": brand.name_zh}
        how_to = {"en": brand.how_to_request_en, "zh-HK": brand.how_to_request_zh}
        host, path, user = printable(facts.host), printable(facts.path), facts.user and printable(facts.user)
        return {
            "lang": language,
            "other_lang": other,
            "heading": translate(HEADING),
            "heading_other": other_translate(HEADING),
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
                "reference": facts.reference,
                "time": facts.time.strftime(TIME_FORMAT),
                "time_iso": facts.time.isoformat(timespec="seconds"),
            },
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
            "form": form,
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
                for facts, form in sample_facts(self.zone):
                    try:
                        Renderer.render(self, facts, fmt, language, form)  # type: ignore[arg-type]
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


def _template_frame(
    error: BaseException, filenames: set[str], environment: jinja2.Environment, name: str
) -> tuple[str, int | str]:
    """The template file and line a render error came from (Jinja maps its frames to template lines)."""
    for frame in reversed(traceback.extract_tb(error.__traceback__)):
        if frame.filename in filenames:
            return frame.filename, frame.lineno or "?"
    return environment.get_template(name).filename or name, "?"


def sample_facts(zone: ZoneInfo) -> Iterator[tuple[BlockFacts, RequestForm | None]]:
    """Every reason, signed in or not, with and without a request form: what templates must cope with."""
    time = datetime(2026, 1, 1, 9, 0, tzinfo=zone)
    form = RequestForm("https://portal.example/request", "sample.token", 180, 20)
    service = ServiceName("sample-mail", "Sample Mail", "範例郵件")
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
            )
            yield facts, form if reason in REQUESTABLE and user else None
            yield facts, None
