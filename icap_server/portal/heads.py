"""The heads' workspace: what waits for a department head, and their decisions, in the browser.

- `GET /heads`              the signed-in head's page (identity from Squid, `heads_auth.proxy_user`): pending
                            requests (`#pending`), reviews due (`#reviews`), approvals expiring (`#expiring`),
                            the other current approvals (`#active`)
- `GET /heads/link?t=LINK`  one item from a single-use e-mail link, with the forms the link allows
- `POST /heads/act`         one decision: `item`, `action` (approve, deny, keep, review-revoke, revoke, suspend),
                            `days`, `note`, `reason`, `csrf`, and `link` when it came from a link

Every decision goes through `icap_server.service.decisions`, the functions `clearance requests approve|deny`
and `clearance approvals review|revoke|suspend` use: the same rules, the same audit entries (the actor is
`portal:<head>`, the decider `<head>`) and the same announcement, so a revoke blocks within a second. A form
post is refused, and nothing changes, unless it carries a CSRF token bound to the head and the page
(`policy.tokens.form_token`, an hour), comes from no other site (`Sec-Fetch-Site`, `Origin`), and is made by a
head or delegate of the item's department; a link's post also needs its link unused, and uses it up.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol
from zoneinfo import ZoneInfo

import structlog
from starlette.requests import Request as HTTPRequest
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from blockpages.catalog import category_title
from blockpages.negotiate import Language, choose_language
from icap_server.config import Config
from icap_server.portal import heads_texts, texts
from icap_server.portal.heads_auth import FORM_TTL_S, WORKSPACE_PAGE, link_page, link_ttl_s, proxy_user
from icap_server.portal.heads_view import HeadsView, build_view, request_department
from icap_server.portal.limits import origin_of
from icap_server.portal.security import peer, read_form
from icap_server.service.decisions import (
    DecisionError,
    approval_rules,
    approve_request,
    deny_request,
    review_approval,
    stop_approval,
    store_approval_rules,
)
from policy.requests import parse_days
from policy.store import PolicyStore, StoreError
from policy.tokens import LinkClaim, TokenError, form_token, form_token_problem, verify_link

log = structlog.get_logger("clearance.portal")

REQUEST_ACTIONS = ("approve", "deny")
APPROVAL_ACTIONS = ("keep", "review-revoke", "revoke", "suspend")


class Refused(Exception):
    """A refusal page to answer with (a key of `heads_texts.REFUSALS`), and the rule's words if any."""

    def __init__(self, kind: str, detail: str = "") -> None:
        super().__init__(kind)
        self.kind, self.detail = kind, detail


class PortalPages(Protocol):
    """What the workspace uses of `icap_server.portal.app.Portal` (named here, not imported: no cycle)."""

    config: Config
    store: PolicyStore
    secret: str
    origins: frozenset[str]
    zone: ZoneInfo

    def _page(self, template: str, status: int, **context: Any) -> HTMLResponse: ...
    def _local(self, moment: datetime | None) -> str: ...


class HeadsWorkspace:
    """The workspace's routes, on the portal's config, store, secret, origins and page rendering."""

    def __init__(self, portal: PortalPages) -> None:
        self.portal = portal
        self.config = portal.config
        self.store = portal.store
        self.secret = portal.secret

    def routes(self) -> list[Route]:
        return [
            Route("/heads", self.workspace, methods=["GET"]),
            Route("/heads/link", self.link, methods=["GET"]),
            Route("/heads/act", self.act, methods=["POST"]),
        ]

    # ---- pages ----------------------------------------------------------------------------

    def language(self, request: HTTPRequest) -> Language:
        """The browser's language, chosen as the block page chooses it."""
        return choose_language(request.headers.get("accept-language"), self.config.blockpages.default_language)

    def refusal(self, request: HTTPRequest, kind: str, detail: str = "", back: bool = False) -> HTMLResponse:
        status, title, text = heads_texts.REFUSALS[kind]
        return self._message(request, status, "refused", title, text, detail, back)

    def _message(
        self, request: HTTPRequest, status: int, kind: str, title: str, text: str, detail: str, back: bool
    ) -> HTMLResponse:
        title_en, title_zh = texts.bilingual(title)
        text_en, text_zh = texts.bilingual(text, ttl=self.config.portal.link_ttl_minutes)
        return self.portal._page(
            "heads_message.html",
            status,
            lang=self.language(request),
            kind=kind,
            title_en=title_en,
            title_zh=title_zh,
            text_en=text_en,
            text_zh=text_zh,
            detail=detail,
            back=back,
        )

    def _local(self, moment: datetime | None) -> str:
        return self.portal._local(moment)

    def _render(
        self, request: HTTPRequest, view: HeadsView, page: str, link: str, allowed: tuple[str, ...]
    ) -> Response:
        language = self.language(request)
        expires_at = int(time.time()) + FORM_TTL_S
        return self.portal._page(
            "heads.html",
            200,
            lang=language,
            L=heads_texts.labels(language),
            view=view,
            csrf=form_token(self.secret, view.head, page, expires_at),
            link=link,
            allowed=allowed,
            local=self._local,
            last_day=lambda moment: self._local(moment - timedelta(seconds=1)),
            category=lambda name: category_title(name, language),
            service=lambda item: (item.service_zh if language == "zh-HK" else item.service_en) or item.service,
            max_days=self.config.approvals.max_validity_days,
        )

    async def _view(self, head: str) -> HeadsView:
        return build_view(
            head,
            await self.store.load_directory(),
            await self.store.all_requests(),
            await self.store.all_approvals(),
            await self.store.usage(),
            datetime.now(UTC),
            self.config.portal.expiring_within_days,
        )

    # ---- handlers --------------------------------------------------------------------------

    async def workspace(self, request: HTTPRequest) -> Response:
        head = proxy_user(request, self.config)
        if head is None:
            return self.refusal(request, "sign-in")
        view = await self._view(head)
        if not view.departments:
            return self.refusal(request, "not-a-head")
        return self._render(request, view, WORKSPACE_PAGE, "", REQUEST_ACTIONS + APPROVAL_ACTIONS)

    async def link(self, request: HTTPRequest) -> Response:
        token = request.query_params.get("t", "")
        try:
            claim = await self._claim(token)
            await self._department(claim.head, claim.item)
        except Refused as refused:
            return self.refusal(request, refused.kind, refused.detail)
        view = (await self._view(claim.head)).only(claim.item)
        return self._render(request, view, link_page(claim), token, claim.actions)

    async def act(self, request: HTTPRequest) -> Response:
        form = await read_form(request)
        if isinstance(form, str):
            return self.refusal(request, "bad-form")
        try:
            head, claim = await self._who(request, form)
            said = await self._decide(head, claim, form)
        except Refused as refused:
            return self.refusal(request, refused.kind, refused.detail, back=True)
        title, text = heads_texts.DONE
        return self._message(request, 200, "info", title, text, said, back=claim is None)

    # ---- the checks ------------------------------------------------------------------------

    async def _claim(self, token: str) -> LinkClaim:
        """The link's claim, or Refused: link-bad, link-expired, link-used (it was used already)."""
        try:
            claim = verify_link(token, self.secret)
        except TokenError as error:
            kind = "link-expired" if "expired" in str(error) else "link-bad"
            log.warning("heads_refused", reason=kind, detail=str(error))
            raise Refused(kind) from None
        if await self.store.link_used(claim.nonce):
            log.warning("heads_refused", reason="link-used", head=claim.head, item=claim.item)
            raise Refused("link-used")
        return claim

    async def _who(self, request: HTTPRequest, form: dict[str, str]) -> tuple[str, LinkClaim | None]:
        """The head (from the link, else from Squid), after the cross-site and CSRF checks; or Refused."""
        other = cross_site_post(request, self.portal.origins)
        if other is not None:
            log.warning("heads_refused", reason="cross-site", origin=other, peer=peer(request))
            raise Refused("cross-site")
        claim = await self._claim(form["link"]) if form.get("link") else None
        head = claim.head if claim is not None else proxy_user(request, self.config)
        if head is None:
            raise Refused("sign-in")
        page = link_page(claim) if claim is not None else WORKSPACE_PAGE
        problem = form_token_problem(form.get("csrf", ""), self.secret, head, page)
        if problem is not None:
            log.warning("heads_refused", reason="csrf", problem=problem, head=head, peer=peer(request))
            raise Refused("form")
        return head, claim

    async def _department(self, head: str, item: str) -> str:
        """The item's department, if `head` heads or deputises it; else Refused (not-found, not-yours)."""
        try:
            if item.startswith("Q"):
                department = request_department(await self.store.get_request(item), await self.store.load_directory())
            elif item.startswith("A"):
                department = (await self.store.get_approval(item)).department
            else:
                raise Refused("not-found")
        except StoreError:
            raise Refused("not-found") from None
        if not (await self.store.load_directory()).may_approve(head, department):
            log.warning("heads_refused", reason="not-yours", head=head, item=item, department=department)
            raise Refused("not-yours")
        return department

    async def _decide(self, head: str, claim: LinkClaim | None, form: dict[str, str]) -> str:
        item, action = form.get("item", ""), form.get("action", "")
        kinds = REQUEST_ACTIONS if item.startswith("Q") else APPROVAL_ACTIONS
        if action not in kinds:
            raise Refused("bad-form")
        if claim is not None and (claim.item != item or action not in claim.actions):
            raise Refused("not-allowed")
        await self._department(head, item)
        if claim is not None and not await self.store.use_link(claim.nonce, link_ttl_s(self.config) + 60):
            raise Refused("link-used")  # another click won the race
        try:
            said = await self._apply(head, item, action, form)
        except DecisionError as error:
            log.warning("heads_refused", reason="rules", head=head, item=item, action=action, detail=str(error))
            raise Refused("refused", str(error)) from None
        log.info("heads_decision", head=head, item=item, action=action, via="link" if claim else "proxy")
        return said

    async def _apply(self, head: str, item: str, action: str, form: dict[str, str]) -> str:
        """Make the decision through the shared service; what the CLI would print for it."""
        actor, note, reason = f"portal:{head}", form.get("note", "").strip(), form.get("reason", "").strip() or None
        if action == "approve":
            days_text = form.get("days", "").strip()
            days = parse_days(days_text) if days_text else None
            if days_text and not days:
                raise DecisionError(texts.DAYS_NOT_A_NUMBER)
            rules = await store_approval_rules(self.config, self.store)
            done = await approve_request(self.store, rules, item, head, actor, days, note)
            return done.said(self.portal.zone)
        rules = approval_rules(self.config)
        if action == "deny":
            return (await deny_request(self.store, rules, item, head, actor, note)).said(self.portal.zone)
        if action == "keep" or action == "review-revoke":
            decision: Any = action.removeprefix("review-")
            after = await review_approval(self.store, rules, item, head, decision, note or (reason or ""), actor)
        else:
            stop: Any = action
            after = await stop_approval(self.store, rules, item, head, reason, actor, stop)
        return f"{after.id} {after.state(datetime.now(UTC), self.config.approvals.on_review_overdue)}"


def cross_site_post(request: HTTPRequest, own: frozenset[str]) -> str | None:
    """The other site a post came from: `Sec-Fetch-Site: cross-site`, or an `Origin`/`Referer` not the portal's.

    `Origin: null` and none at all pass (a browser sends `null` from a `no-referrer` page, which the portal's
    are); the CSRF token bound to the head is the proof, this only turns away what plainly came from elsewhere.
    """
    if request.headers.get("sec-fetch-site", "").lower() == "cross-site":
        return "sec-fetch-site: cross-site"
    value = request.headers.get("origin") or request.headers.get("referer") or ""
    if not value or value == "null":
        return None
    try:
        origin = origin_of(value)
    except ValueError:
        return value[:200]
    return None if origin in own else origin
