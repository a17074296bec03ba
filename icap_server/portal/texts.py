"""What the portal says, in English and Traditional Chinese, taken from the one bilingual catalog.

A portal page is in the language the browser asks for (`blockpages.negotiate.choose_language`, as the block
page's), with the other language beside it, exactly as the block page does; its `<html lang>` is the block
page's code (`en`, `zh-HK`). The English is the message id and the Chinese comes from
`blockpages/locale/zh_HK/LC_MESSAGES/messages.po`, the catalog the block pages and the approvers' e-mail use
too (`make messages` extracts the ids from here and from the templates, where `_()` is the page's language
and `alt()` the other). The look is the block page's too: `stylesheet` is `blockpages.style`'s.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import jinja2

from blockpages.catalog import N_, load_translations, translator
from blockpages.negotiate import LANGUAGES, Language
from blockpages.style import breakable, colour_rules
from blockpages.style import stylesheet as shared_stylesheet
from policy.requests import AccessRequest, RequestStatus

ENGLISH = translator("en")
CHINESE = translator("zh-HK")

# The one problem the portal finds itself (policy.requests words the others; they are shown in English).
DAYS_NOT_A_NUMBER = N_("Give the number of days as a whole number.")

# kind -> (HTTP status, title, text); %(ttl)s and %(contact)s are filled in.
MESSAGES: dict[str, tuple[int, str, str]] = {
    "index": (
        200,
        N_("Request access from a block page"),
        N_(
            "When a site is blocked because it needs your department head's approval, its block page offers to "
            "request access. Use it there: the block page knows who you are and which site you need."
        ),
    ),
    "bad-token": (
        400,
        N_("This request link is not valid"),
        N_(
            "The request did not come from a genuine block page of this filter (it was altered, damaged or "
            "signed by another server), so it cannot say who you are. Nothing was recorded. Open the blocked "
            "site again and request access from the new block page."
        ),
    ),
    "expired": (
        400,
        N_("This request link has expired"),
        N_(
            "A block page's request works for %(ttl)s minutes. Nothing was recorded. Open the blocked site "
            "again and request access from the new block page."
        ),
    ),
    "other-computer": (
        403,
        N_("This link belongs to another computer"),
        N_(
            "Access can only be requested from the computer that was blocked. Nothing was recorded. Open the "
            "blocked site on this computer and request access from its block page."
        ),
    ),
    "not-restricted": (400, N_("Nothing to request"), N_("This kind of site needs no approval.")),
    "no-approver": (
        409,
        N_("Nobody can approve this yet"),
        N_(
            "The directory does not say who approves for you (you, or a head of your department, are missing "
            "from it), so the request was not recorded. Please ask %(contact)s to update the directory."
        ),
    ),
    "not-found": (
        404,
        N_("Not found"),
        N_("Check the address: a request's page is the full link you were given when you sent it."),
    ),
    "bad-form": (400, N_("The form could not be read"), N_("Send the form from a block page again.")),
    "too-large": (
        413,
        N_("Too much text"),
        N_("The form is too large. Shorten the justification and send it again."),
    ),
    "method": (405, N_("Not allowed"), N_("Use the form on a block page.")),
    "continue-refused": (
        403,
        N_("Continuing is no longer possible"),
        N_(
            "This service is now enforced for you, so the caution page's Continue no longer applies. Nothing "
            "was recorded. Ask for approval from the block page."
        ),
    ),
    "cross-site": (
        403,
        N_("Sent from another site"),
        N_(
            "The form was sent from a page that is neither a block page nor this portal, so it was not "
            "accepted. Nothing was recorded. Request access from the block page itself."
        ),
    ),
    "too-many": (
        429,
        N_("Too many requests just now"),
        N_("Several requests came in a short time, so this one was not recorded. Wait a minute and send it again."),
    ),
    "too-many-pending": (
        429,
        N_("You have requests waiting already"),
        N_(
            "You already have as many requests waiting for a decision as one person may, so this one was not "
            "recorded. Once your department head has decided one, you can ask again."
        ),
    ),
    "unavailable": (
        503,
        N_("Try again in a moment"),
        N_("The portal cannot reach its database just now; nothing was recorded."),
    ),
}

# A request's state on its status page: (heading, what it means).
APPROVED = (
    N_("Approved"),
    N_(
        "Approved by %(who)s on %(when)s. You can use the site now (reload it); the approval is valid until "
        "%(until)s and is reviewed regularly."
    ),
)
DECLINED = (N_("Declined"), N_("Declined by %(who)s on %(when)s."))
PENDING = (
    N_("Waiting for a decision"),
    N_("Sent to the head of %(department)s (or a delegate) on %(when)s. This page shows the decision once it is made."),
)
YOUR_DEPARTMENT = N_("your department")


def bilingual(message: str, **values: object) -> tuple[str, str]:
    """(English, Chinese) of one catalog message, with the same values filled into both."""
    return ENGLISH(message, **values), CHINESE(message, **values)


def message_texts(kind: str, ttl_minutes: int, contact: str) -> tuple[int, str, str, str, str]:
    """(HTTP status, title en, title zh, text en, text zh) of a message page."""
    status, title, text = MESSAGES[kind]
    return (status, *bilingual(title), *bilingual(text, ttl=ttl_minutes, contact=contact))


def status_texts(item: AccessRequest, local: Callable[[datetime | None], str]) -> tuple[str, str, str, str]:
    """(status en, status zh, text en, text zh) of a request; `local` shows a moment in the portal's zone."""
    if item.status is RequestStatus.APPROVED:
        (heading, text), values = APPROVED, {"until": local(item.valid_until)}
    elif item.status is RequestStatus.DENIED:
        (heading, text), values = DECLINED, {}
    else:
        when = local(item.created_at)
        english = ENGLISH(PENDING[1], department=item.department or ENGLISH(YOUR_DEPARTMENT), when=when)
        chinese = CHINESE(PENDING[1], department=item.department or CHINESE(YOUR_DEPARTMENT), when=when)
        return (*bilingual(PENDING[0]), english, chinese)
    filled = bilingual(text, who=item.decided_by, when=local(item.decided_at), **values)
    return (*bilingual(heading), *filled)


def both(english: str, chinese: str) -> dict[Language, str]:
    """A text the page shows in its own language and the other: `text[lang]`, `text[other_lang]`."""
    return {"en": english, "zh-HK": chinese}


def granted_days(valid_from: datetime, valid_until: datetime) -> int:
    """How many days an approval gives (what the status page shows once approved; the head may give fewer)."""
    return max(1, round((valid_until - valid_from).total_seconds() / 86400))


def stylesheet(primary: str, accent: str) -> str:
    """The portal's /style.css: the branding's colours, the block page's own stylesheet, the portal's additions."""
    additions = (Path(__file__).parent / "templates" / "portal.css").read_text(encoding="utf-8")
    return colour_rules(primary, accent) + shared_stylesheet() + additions


def other_language(language: Language) -> Language:
    return next(code for code in LANGUAGES if code != language)


def environments() -> dict[Language, jinja2.Environment]:
    """One template environment per page language."""
    return {language: environment(language) for language in LANGUAGES}


def environment(language: Language = "en") -> jinja2.Environment:
    """The portal's templates in one language: `_()` in it, `alt()` in the other, `lang` / `other_lang` set."""
    templates = jinja2.Environment(
        loader=jinja2.PackageLoader("icap_server.portal", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        extensions=["jinja2.ext.i18n"],
    )
    templates.install_gettext_translations(load_translations()[language], newstyle=True)  # type: ignore[attr-defined]
    other = other_language(language)
    templates.globals.update(alt=translator(other), lang=language, other_lang=other)
    templates.filters["breakable"] = breakable  # a long host wraps after its dots, as on the block page
    return templates
