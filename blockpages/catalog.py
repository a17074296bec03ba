"""The one bilingual catalog: English is the message id, Traditional Chinese comes from `messages.po`.

Block pages, the access-request portal and the e-mail to approvers all take their Chinese text from
`locale/zh_HK/LC_MESSAGES/messages.po` (`make messages` extracts the ids from blockpages and the portal), and
the restricted categories' names from the one table here, so a wording is changed, and translated, once.
The .po is read when first needed, at start-up: there is no compiled .mo to keep in step.
"""

from __future__ import annotations

import functools
import io
from collections.abc import Callable, Mapping
from importlib import resources

from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.support import NullTranslations, Translations

from .negotiate import Language

Translate = Callable[..., str]


def N_(message: str) -> str:
    """Marks a message for extraction (`pybabel extract -k N_`); translated where it is shown."""
    return message


# The restricted categories' names (others are shown as they are named); lower case, as they read in a sentence.
CATEGORY_LABELS: dict[str, str] = {
    "webmail": N_("personal webmail"),
    "cloud-storage": N_("public cloud storage"),
    "web-im": N_("web instant messaging"),
}
UNKNOWN_CATEGORY = N_("this service")


@functools.cache
def load_translations() -> Mapping[Language, NullTranslations]:
    """English is the message ids; Chinese is read from the .po once per process (fuzzy entries left out)."""
    source = resources.files("blockpages") / "locale" / "zh_HK" / "LC_MESSAGES" / "messages.po"
    with source.open("rb") as handle:
        catalog = read_po(handle, locale="zh_HK")
    compiled = io.BytesIO()
    write_mo(compiled, catalog)  # fuzzy entries are left out, as msgfmt does
    compiled.seek(0)
    return {"en": NullTranslations(), "zh-HK": Translations(fp=compiled, domain="messages")}


@functools.cache
def translator(language: Language) -> Translate:
    """`translate(message, **values)`: the message in `language`, %(name)s filled in from `values`."""
    translations = load_translations()[language]

    def translate(message: str, **values: object) -> str:
        text = translations.gettext(message)
        return text % values if values else text

    return translate


def category_label(category: str | None, language: Language) -> str:
    """The category's name in a sentence ("personal webmail"); unlabelled ones by their own name."""
    if category is None:
        return translator(language)(UNKNOWN_CATEGORY)
    label = CATEGORY_LABELS.get(category)
    return translator(language)(label) if label else category


def category_title(category: str, language: Language) -> str:
    """The category's name on its own, as the portal and e-mail show it: "Personal webmail"; others as named."""
    label = category_label(category, language)
    return label[:1].upper() + label[1:] if category in CATEGORY_LABELS else category
