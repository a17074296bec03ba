"""The self-service access-request portal: the Starlette routes, served by uvicorn inside `clearance serve`.

A block page carries a signed token (policy.tokens) that names who was blocked, from which address, for which
category, host and catalogue service (the request asks for that service; a token without one, for the
category). The portal believes nothing else about identity: it takes the user, address, category, host and
service from a token it has verified (security.py), and records a pending request for the head (or a
delegate) of the user's department, who decides it with `clearance requests approve|deny`. The requester
follows it on a status page whose address carries a per-request key.

Endpoints (every page in the browser's language, negotiated from Accept-Language as the block page's is, with
the other language beside it, from the one catalog; the block page's look; no scripts, a strict
Content-Security-Policy):

- `GET /`                        what the portal is for
- `GET /request?token=T`         the request form for a token (block pages may link here instead of posting)
- `POST /request`                form fields `token`, `justification`, `days`: records the request, 303 to its page
- `GET /requests/{id}?key=K`     the request's status: pending, approved (until when) or denied (with the note)
- `GET /style.css`               the only style sheet: the block page's (blockpages.style); `/portal.css` too
- `GET /heads`, `GET /heads/link`, `POST /heads/act`   the heads' workspace (heads.py)
- `GET /report?department=D`     the printable access report, for D's heads and delegates and `portal.auditors`

links.py gives the ICAP workers the portal's address and token secret; server.py runs it; mail.py tells the
approvers.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import re
import secrets
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, urlsplit
from zoneinfo import ZoneInfo

import structlog
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.exceptions import HTTPException
from starlette.requests import Request as HTTPRequest
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from blockpages.catalog import category_title
from blockpages.negotiate import Language, choose_language
from icap_server.config import Config
from icap_server.portal import texts
from icap_server.portal.digest import Digest
from icap_server.portal.heads import HeadsWorkspace
from icap_server.portal.limits import RateLimit, cross_site, origin_of
from icap_server.portal.links import base_url
from icap_server.portal.proceed import CautionContinue
from icap_server.portal.report_page import report_route
from icap_server.portal.security import SecurityHeaders, check_claim, peer, read_form
from policy.directory import Directory
from policy.requests import AccessRequest, RequestStatus, client_address, open_key, parse_days, submission_problem
from policy.store import PolicyStore, StoreError, StoreUnavailable
from policy.tokens import RequestClaim

log = structlog.get_logger("clearance.portal")

REQUEST_ID_RE = re.compile(r"^Q[0-9]{1,12}$")


class Portal:
    """The portal's ASGI app (`.app`) for one configuration, store and token secret."""

    def __init__(self, config: Config, store: PolicyStore, secret: str) -> None:
        self.config = config
        self.store = store
        self.secret = secret
        self.root = urlsplit(base_url(config)).path.rstrip("/")
        self.zone = ZoneInfo(config.policy.timezone)
        self.restricted = frozenset(config.policy.restricted_categories)
        self.templates = texts.environments()  # one per page language
        pages = config.blockpages
        self.style_sheet = texts.stylesheet(pages.primary_colour, pages.accent_colour)
        portal = config.portal
        self.by_user = RateLimit(portal.max_submits_per_minute)
        self.by_address = RateLimit(portal.max_submits_per_minute)
        listening = {f"http://{portal.listen}"} if portal.listen else set()
        self.origins = frozenset({origin_of(base_url(config))} | listening)
        self.digest = Digest(config.smtp, self.zone, portal.digest_interval_minutes * 60.0)
        routes = [
            Route("/", self.index, methods=["GET"]),
            Route("/request", self.form, methods=["GET"]),
            Route("/request", self.submit, methods=["POST"]),
            Route("/requests/{request_id}", self.status, methods=["GET"]),
            Route("/style.css", self.style, methods=["GET"]),
            Route("/portal.css", self.style, methods=["GET"]),  # its old address
            *HeadsWorkspace(self).routes(),  # the heads' workspace: /heads, /heads/link, /heads/act
            *CautionContinue(self).routes(),  # a caution page's "continue": /continue (proceed.py)
            Route("/report", self.report, methods=["GET"]),  # the printable access report (report_page.py)
        ]
        handlers: dict[Any, Any] = {
            HTTPException: self._http_error,
            StoreUnavailable: self._unavailable,
            OSError: self._unavailable,
        }
        self.app = SecurityHeaders(Starlette(routes=routes, exception_handlers=handlers))

    # ---- pages ----------------------------------------------------------------------------

    def language(self, request: HTTPRequest) -> Language:
        """The page's language: the browser's Accept-Language, as the block page chooses it."""
        return choose_language(request.headers.get("accept-language"), self.config.blockpages.default_language)

    def _page(self, template: str, status: int, lang: Language | None = None, **context: Any) -> HTMLResponse:
        """A page in `lang` (`self.language(request)`; the configured default when not given)."""
        organisation = self.config.organisation
        language = lang or self.config.blockpages.default_language
        page = self.templates[language].get_template(template)
        html = page.render(
            root=self.root,
            org=texts.both(organisation.name_en, organisation.name_zh),
            contact=organisation.contact,
            refresh=context.pop("refresh", None),
            **context,
        )
        return HTMLResponse(html, status_code=status, headers={"Content-Language": language, "Vary": "Accept-Language"})

    def message(self, request: HTTPRequest, kind: str, detail: str = "") -> HTMLResponse:
        status, title_en, title_zh, text_en, text_zh = texts.message_texts(
            kind, self.config.portal.token_ttl_minutes, self.config.organisation.contact
        )
        return self._page(
            "message.html",
            status,
            self.language(request),
            kind="refused" if status >= 400 else "info",
            title=texts.both(title_en, title_zh),
            text=texts.both(text_en, text_zh),
            detail=detail,
        )

    def _form_page(
        self, request: HTTPRequest, claim: RequestClaim, token: str, justification: str, days: str, problem: str | None
    ) -> HTMLResponse:
        return self._page(
            "form.html",
            400 if problem else 200,
            self.language(request),
            claim=claim,
            token=token,
            justification=justification,
            days=days,
            problem=texts.both(*texts.bilingual(problem)) if problem else None,
            max_days=self.config.approvals.max_validity_days,
            category=texts.both(category_title(claim.category, "en"), category_title(claim.category, "zh-HK")),
            service=texts.both(claim.service_en or claim.service, claim.service_zh or claim.service),
        )

    async def _http_error(self, request: HTTPRequest, error: Exception) -> Response:
        status = error.status_code if isinstance(error, HTTPException) else 500
        return self.message(request, "method" if status == 405 else "not-found")

    async def _unavailable(self, request: HTTPRequest, error: Exception) -> Response:
        log.error("portal_store_unavailable", path=request.url.path, error=str(error))
        return self.message(request, "unavailable")

    async def report(self, request: HTTPRequest) -> Response:
        """The access report for a head or delegate of `?department=`, or an auditor (`portal.auditors`)."""
        workspace = HeadsWorkspace(self)  # its refusal pages

        def refusal(kind: str) -> Response:
            return workspace.refusal(request, kind)

        return await report_route(request, self.config, self.store, self.zone, self.language(request), refusal)

    async def index(self, request: HTTPRequest) -> Response:
        return self.message(request, "index")

    async def style(self, request: HTTPRequest) -> Response:
        return Response(self.style_sheet, media_type="text/css", headers={"Cache-Control": "max-age=3600"})

    def _claim(self, request: HTTPRequest, token: str) -> RequestClaim | Response:
        """The verified claim, or the page refusing it (bad or expired token, another computer)."""
        claim = check_claim(request, token, self.secret, self.config.portal.trusted_proxies, self.restricted)
        return self.message(request, claim) if isinstance(claim, str) else claim

    # ---- handlers --------------------------------------------------------------------------

    async def form(self, request: HTTPRequest) -> Response:
        token = request.query_params.get("token", "")
        if not token:
            return self.message(request, "index")
        claim = self._claim(request, token)
        if isinstance(claim, Response):
            return claim
        return self._form_page(request, claim, token, "", str(min(30, self.config.approvals.max_validity_days)), None)

    def _bounded(self, request: HTTPRequest, claim: RequestClaim) -> Response | None:
        """The refusal of a post from another site, or of one more from a user who sent too many just now."""
        other = cross_site(request.headers, self.origins, claim.host)
        if other is not None:
            log.warning("request_refused", reason="cross-site", user=claim.user, origin=other)
            return self.message(request, "cross-site")
        if not self.by_user.allow(claim.user):
            log.warning("request_refused", reason="rate-limited", user=claim.user)
            return self.message(request, "too-many")
        return None

    async def submit(self, request: HTTPRequest) -> Response:
        forwarded = request.headers.getlist("x-forwarded-for")
        address = client_address(peer(request), forwarded, self.config.portal.trusted_proxies)
        if not self.by_address.allow(address or "-"):
            log.warning("request_refused", reason="rate-limited", client_ip=address)
            return self.message(request, "too-many")
        form = await read_form(request)
        if isinstance(form, str):
            return self.message(request, form)
        token = form.get("token", "")
        claim = self._claim(request, token)
        if isinstance(claim, Response):
            return claim
        refused = self._bounded(request, claim)
        if refused is not None:
            return refused
        justification = " ".join(form.get("justification", "").split())
        days_text = form.get("days", "").strip()
        days = parse_days(days_text)
        approvals = self.config.approvals
        problem = (
            texts.DAYS_NOT_A_NUMBER
            if days is None
            else submission_problem(justification, days, approvals.max_validity_days, approvals.min_justification_chars)
        )
        if problem or days is None:
            return self._form_page(request, claim, token, justification, days_text, problem)
        directory = await self.store.load_directory()
        person = directory.person(claim.user)
        department = person.department if person is not None else ""
        heads, delegates = directory.approvers_of(department) if department else (frozenset(), frozenset())
        approvers = tuple(sorted((heads | delegates) - {claim.user}))  # nobody decides their own request
        if not approvers and approvals.require_department_head:
            log.warning("request_refused", reason="no-approver", user=claim.user, department=department or None)
            return self.message(request, "no-approver")
        stored, created = await self._record(claim, token, justification, days, department, approvers)
        if stored is None:
            return self.message(request, "too-many-pending")
        background = None
        if created and self.config.smtp.host is not None:
            background = BackgroundTask(self._notify, stored, directory)
        location = f"{self.root}/requests/{quote(stored.id)}?key={quote(stored.key)}"
        return RedirectResponse(location, status_code=303, background=background)

    async def _record(
        self,
        claim: RequestClaim,
        token: str,
        justification: str,
        days: int,
        department: str,
        approvers: tuple[str, ...],
    ) -> tuple[AccessRequest | None, bool]:
        """Store the request once per token and once while one is open for the same thing; (request, created).

        (None, False) when the user already has portal.max_pending_per_user pending requests.
        """
        now = datetime.now(UTC)

        def build(request_id: str) -> AccessRequest:
            return AccessRequest(
                id=request_id,
                user=claim.user,
                client_ip=claim.client_ip,
                category=claim.category,
                host=claim.host,
                justification=justification,
                days=days,
                created_at=now,
                department=department,
                approvers=approvers,
                key=secrets.token_urlsafe(18),
                service=claim.service,
                service_en=claim.service_en,
                service_zh=claim.service_zh,
            )

        nonce = claim.nonce or hashlib.sha256(token.encode()).hexdigest()
        stored, created = await self.store.create_request(
            build,
            open_key(claim.user, claim.category, claim.host, claim.service),
            nonce,
            int(claim.expires_at - now.timestamp()) + 1,
            self.config.portal.max_pending_per_user,
        )
        if stored is None:
            log.warning("request_refused", reason="too-many-pending", user=claim.user, host=claim.host)
            return None, False
        log.info(
            "request_submitted" if created else "request_already_open",
            request=stored.id,
            user=stored.user,
            category=stored.category,
            service=stored.service or None,
            host=stored.host,
            department=stored.department or None,
            days=stored.days,
        )
        return stored, created

    async def _notify(self, item: AccessRequest, directory: Directory) -> None:
        await self.digest.add(item, directory)

    async def status(self, request: HTTPRequest) -> Response:
        request_id = str(request.path_params["request_id"])
        key = request.query_params.get("key", "")
        item = None
        if REQUEST_ID_RE.match(request_id):
            with contextlib.suppress(StoreError):
                item = await self.store.get_request(request_id)
        # A wrong key looks exactly like an unknown id: the page says nothing about requests one cannot see.
        if item is None or not hmac.compare_digest(item.key.encode(), key.encode()):
            return self.message(request, "not-found")
        status_en, status_zh, text_en, text_zh = texts.status_texts(item, self._local)
        return self._page(
            "status.html",
            200,
            self.language(request),
            request=item,
            state=texts.both(status_en, status_zh),
            text=texts.both(text_en, text_zh),
            granted=await self._granted_days(item) if item.status is RequestStatus.APPROVED else None,
            category=texts.both(category_title(item.category, "en"), category_title(item.category, "zh-HK")),
            service=texts.both(item.service_en or item.service, item.service_zh or item.service),
            submitted=self._local(item.created_at),
            refresh=60 if item.status is RequestStatus.PENDING else None,
        )

    async def _granted_days(self, item: AccessRequest) -> int:
        """The days its approval gives (the head may give fewer than asked); the request's own dates, which
        copy the approval's, if the approval cannot be read."""
        start, until = item.decided_at, item.valid_until
        if item.approval_id:
            with contextlib.suppress(StoreError):
                approval = await self.store.get_approval(item.approval_id)
                start, until = approval.valid_from, approval.valid_until
        return texts.granted_days(start, until) if start and until else item.days

    def _local(self, moment: datetime | None) -> str:
        return moment.astimezone(self.zone).strftime("%Y-%m-%d %H:%M") if moment else "-"
