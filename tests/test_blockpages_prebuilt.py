"""Pre-built block pages answer byte for byte what Jinja renders (issue 12, item 1).

The differential: thousands of generated facts, hostile ones (markup, quotes, `{{`, `%(`, the placeholder text
itself, control characters, Chinese, hosts and paths of hundreds of characters, no user, an empty one), every
reason, language, format, form or none, service or none. For each, the kind's page is first built from other
facts of the same kind (so a slot is filled with values it was not built from), then the hostile facts go
through the pre-built renderer and through the Jinja reference (`prebuilt=False`); bodies, content types and
headers must be equal. Then whole ICAP answers through `Application.respond`, both ways.
"""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from blockpages.negotiate import LANGUAGES
from blockpages.prebuilt import MAX_PAGES, PrebuiltRenderer, page_kind
from blockpages.render import REASON_MESSAGES, BlockFacts, Renderer, RequestForm, ServiceName
from icap_server.config import Config, OrganisationConfig
from icap_server.service.pages import block_pages
from tests.support.pages import HOSTILE, answer, application, branded, facts, icap_request

CONFIG = branded(
    contact_email="helpdesk@example.gov",
    contact_phone="+852 2345 6789",
    policy_url="https://intranet.example/policy",
    contact_url="https://intranet.example/help",
)
PREBUILT = block_pages(CONFIG)
REFERENCE = block_pages(CONFIG, prebuilt=False)
ZONES = (UTC, ZoneInfo("Asia/Hong_Kong"))

# Pieces hostile values are made of: markup and quotes, template and format syntax, the placeholders' own
# characters and text, where `breakable` cuts, control characters, and Chinese.
PIECES = (
    "<",
    ">",
    "&",
    '"',
    "'",
    "&amp;",
    "<wbr>",
    "{{",
    "}}",
    "{%",
    "%(",
    "%(category)s",
    "%s",
    "\\",
    "\u2028",
    "\ue000",
    "\ue001",
    f"\ue000&h{PREBUILT.nonce}\ue001",
    f"\ue000&amp;<wbr>u{PREBUILT.nonce}.<wbr>xxxxxxxx\ue001",
    ".",
    "/",
    "-",
    "_",
    "?",
    "=",
    "@",
    "~",
    "\x00",
    "\r\n",
    "\x7f",
    "\x9b",
    "部門",
    "電郵",
    "…",
    "x" * 19,
    "y" * 70,
    "mail",
    HOSTILE,
)
hostile = st.lists(st.one_of(st.sampled_from(PIECES), st.text(max_size=8)), max_size=40).map("".join)
optional = st.one_of(st.none(), st.just(""), hostile)
services = st.one_of(
    st.none(),
    st.builds(ServiceName, hostile, hostile, hostile),
    hostile.map(lambda name: ServiceName("same", name, name)),
    st.just(ServiceName("empty", "", "")),
)
block_facts = st.builds(
    BlockFacts,
    host=hostile,
    path=hostile,
    category=st.sampled_from((None, "webmail", "cloud-storage", "web-im", "social")),
    user=optional,
    client_ip=optional,
    reason=st.sampled_from((*REASON_MESSAGES, "unheard-of")),
    reference=hostile,
    time=st.datetimes(min_value=datetime(1990, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.sampled_from(ZONES)),
    service=services,
)
forms = st.one_of(
    st.none(),
    st.builds(
        RequestForm,
        st.sampled_from(("https://portal.example/request", "http://10.0.0.5:8080/request")),
        hostile,
        st.sampled_from((1, 90, 180)),
        st.sampled_from((0, 20)),
    ),
)


def like(value: str | None, seed: str) -> str | None:
    """Another value of the same kind: None and "" kept, otherwise as long as `value` (so as short, or long)."""
    if not value:
        return value
    return (seed * len(value))[: len(value)]


def same_kind(fact: BlockFacts, form: RequestForm | None) -> tuple[BlockFacts, RequestForm | None]:
    """Plain facts of the same kind as `fact`: what the page is built from before the hostile facts fill it."""
    service = fact.service
    if service is not None:
        name_zh = like(service.name_zh, "中文") if service.name_zh != service.name_en else like(service.name_en, "n.")
        service = ServiceName("svc", like(service.name_en, "n.") or "", name_zh or "")
    built = replace(
        fact,
        host=like(fact.host, "ab.") or "",
        path=like(fact.path, "/p") or "",
        user=like(fact.user, "u.s"),
        client_ip=like(fact.client_ip, "1.2"),
        reference="0123456789ab",
        time=datetime(2026, 1, 1, 9, 0, tzinfo=UTC),
        service=service,
    )
    return built, form and replace(form, token="plain.token")


@settings(max_examples=3000, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(fact=block_facts, fmt=st.sampled_from(("html", "json", "text")), language=st.sampled_from(LANGUAGES), form=forms)
def test_a_prebuilt_page_is_byte_for_byte_the_jinja_page(
    fact: BlockFacts, fmt: Any, language: Any, form: RequestForm | None
) -> None:
    plain, plain_form = same_kind(fact, form)
    kind = page_kind(fact, fmt, language, form)
    assert page_kind(plain, fmt, language, plain_form) == kind
    PREBUILT.render(plain, fmt, language, plain_form)  # builds the kind's page, unless an earlier example did
    assert PREBUILT.pages.get(kind) is not None  # the built-in templates are always pre-built
    assert PREBUILT.render(fact, fmt, language, form) == REFERENCE.render(fact, fmt, language, form)


def test_the_reference_path_is_jinja_and_the_default_is_prebuilt() -> None:
    assert isinstance(PREBUILT, PrebuiltRenderer) and type(REFERENCE) is Renderer
    assert isinstance(application().pages, PrebuiltRenderer)


def test_hostile_facts_in_every_reason_language_and_format() -> None:
    """The fixed worst cases, every combination, with a form and without (a readable companion to the above)."""
    form = RequestForm("https://portal.example/request", '"><script>x</script>', 30, 20)
    service = ServiceName("chat", HOSTILE, "<b>中文</b>")
    for reason in (*REASON_MESSAGES, "unheard-of"):
        for user in (None, "", "eve", "a" * 21 + HOSTILE):
            fact = facts(reason=reason, user=user, host="h." * 50 + HOSTILE, path="/" + HOSTILE * 3, service=service)
            for fmt in ("html", "json", "text"):
                for language in LANGUAGES:
                    for offer in (None, form):
                        PREBUILT.render(
                            facts(
                                reason=reason,
                                user=user and "x" * len(user),
                                host="q" * 101,
                                path="/" + "p" * 150,
                                service=service,
                            ),
                            fmt,
                            language,
                            offer,
                        )
                        got = PREBUILT.render(fact, fmt, language, offer)
                        assert got == REFERENCE.render(fact, fmt, language, offer), (reason, user, fmt, language)
                        if fmt == "html":
                            assert "<script" not in got.body.decode()


def test_admins_templates_are_rendered_by_jinja_each_time(tmp_path: Any) -> None:
    (tmp_path / "block.html").write_text(
        "<p>{{ page.host }} {{ page.host|length }}{% if 'x' in page.host %} x{% endif %}</p>", encoding="utf-8"
    )
    config = msgspec.structs.replace(
        CONFIG, blockpages=msgspec.structs.replace(CONFIG.blockpages, template_dir=str(tmp_path))
    )
    renderer = block_pages(config)
    assert isinstance(renderer, PrebuiltRenderer) and not renderer.built_in["html"] and renderer.built_in["text"]
    for host in ("a.example", "x<y>.example"):
        assert renderer.render(facts(host=host), "html", "en", None) == block_pages(config, prebuilt=False).render(
            facts(host=host), "html", "en", None
        )
    assert renderer.pages == {}


def test_a_placeholder_the_page_does_not_keep_intact_means_no_prebuilt_page() -> None:
    """A slot in a `<style>` (its hash is in the CSP), unescaped in HTML, or changed by a filter: Jinja instead."""
    slot = PREBUILT._slot("h")
    assert PREBUILT._cut(f"<p>{slot.replace('&', '&amp;')}</p>", "html", "en", None) is not None
    assert PREBUILT._cut(f"<style>{slot.replace('&', '&amp;')}</style>", "html", "en", None) is None
    assert PREBUILT._cut(f"<p>{slot}</p>", "html", "en", None) is None
    assert PREBUILT._cut(f"<p>{slot.upper()}</p>", "text", "en", None) is None
    assert PREBUILT._cut(f"{slot}", "json", "en", None) is not None


def test_the_pages_kept_are_bounded() -> None:
    renderer = block_pages(Config())
    for number in range(MAX_PAGES + 40):
        renderer.render(facts(category=f"category-{number}"), "text", "en", None)
    assert len(renderer.pages) == MAX_PAGES


def test_a_renderer_is_one_generation_of_pages() -> None:
    """A config change makes a new Renderer (a new Application on reload): no page of the old one survives."""
    before = block_pages(Config(organisation=OrganisationConfig(name_en="Old Bureau")))
    after = block_pages(Config(organisation=OrganisationConfig(name_en="New Bureau")))
    for renderer, name in ((before, "Old Bureau"), (after, "New Bureau")):
        renderer.render(facts(), "html", "en", None)
        page = renderer.render(facts(host="other.example"), "html", "en", None).body.decode()
        assert name in page and "other.example" in page


# ---- whole ICAP answers, through Application.respond ------------------------------------------------------------

TOKEN = re.compile(rb'name="token" value="([^"]+)"|token=([A-Za-z0-9_%.\-]+)|"request_url": "[^"]*token=([^"]+)"')


@pytest.mark.parametrize("portal", [False, True])
@pytest.mark.parametrize("accept", [None, "application/json", "text/plain"])
@pytest.mark.parametrize("accept_language", [None, "zh-HK", "en;q=0.5, zh;q=0.9"])
def test_whole_answers_are_the_same_prebuilt_or_not(
    portal: bool, accept: str | None, accept_language: str | None
) -> None:
    prebuilt, reference = application(CONFIG, portal=portal), application(CONFIG, portal=portal)
    reference.pages = block_pages(CONFIG, prebuilt=False)
    headers = [
        f"{name}: {value}" for name, value in (("Accept", accept), ("Accept-Language", accept_language)) if value
    ]
    urls = [
        "http://mail.google.com/mail/u/0/?q=<x>&y='1'",
        "http://mail.google.com/" + "deep/" * 40,
        "http://mail.google.com/%7B%7Bx%7D%7D%25(category)s",
    ]
    for url in urls:
        for user in ("alice", None, "very.long.user.name@example.gov.hk"):
            request = icap_request(url, user, *headers)
            verdict = prebuilt.evaluate(request, datetime.now(UTC))
            assert verdict.blocked
            got, expected = answer(prebuilt, request, verdict), answer(reference, request, verdict)
            if portal and user:  # the token carries a fresh nonce each time: the same length, another value
                assert TOKEN.search(got.body) and len(got.body) == len(expected.body)
                got.body, expected.body = TOKEN.sub(b"T", got.body), TOKEN.sub(b"T", expected.body)
            assert (got.icap_head, got.http_head, got.body) == (expected.icap_head, expected.http_head, expected.body)
