"""The self-service access-request portal: a small Starlette app, served by uvicorn inside `clearance serve`.

A block page carries a signed token (policy.tokens) that names who was blocked, from which address, for which
category and host. The portal believes nothing else about identity: it takes the user, address, category and
host from a token it has verified, checks that the browser is on the address the token names, and records a
pending request for the head (or a delegate) of the user's department, who decides it with `clearance
requests approve|deny`. The requester follows it on a status page whose address carries a per-request key.

Endpoints (all pages in English and Traditional Chinese, no scripts, a strict Content-Security-Policy):

- `GET /`                        what the portal is for
- `GET /request?token=T`         the request form for a token (block pages may link here instead of posting)
- `POST /request`                form fields `token`, `justification`, `days`: records the request, 303 to its page
- `GET /requests/{id}?key=K`     the request's status: pending, approved (until when) or denied (with the note)
- `GET /portal.css`              the only style sheet

It runs once per `clearance serve`: on the worker's own event loop with one worker, in a child process of the
supervisor with several. Every ICAP worker signs block-page tokens with the same secret (config
`portal.secret`, else one generated once and kept in Redis).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import re
import secrets
import signal
import socket
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit
from zoneinfo import ZoneInfo

import jinja2
import structlog
import uvicorn
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.datastructures import MutableHeaders
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from icap_server.config import Config, parse_listen
from icap_server.portal.mail import send_request_mail
from icap_server.service.application import Application, PortalLink
from policy.directory import Directory
from policy.requests import (
    AccessRequest,
    RequestStatus,
    client_address,
    open_key,
    parse_days,
    same_address,
    submission_problem,
)
from policy.store import PolicyStore, StoreError, StoreUnavailable
from policy.tokens import RequestClaim, TokenError, new_secret, verify

log = structlog.get_logger("clearance.portal")

MAX_FORM_BYTES = 16 * 1024
REQUEST_ID_RE = re.compile(r"^Q[0-9]{1,12}$")
STYLE = (Path(__file__).parent / "templates" / "portal.css").read_text(encoding="utf-8")
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",  # the status page's address carries its key
    "Cache-Control": "no-store",
}

# The restricted categories' names on the portal's pages and in e-mail (others are shown as they are named).
CATEGORY_LABELS: dict[str, tuple[str, str]] = {
    "webmail": ("Personal webmail", "個人網上電郵"),
    "cloud-storage": ("Public cloud storage", "公共雲端儲存"),
    "web-im": ("Web instant messaging", "網頁版即時通訊"),
}

# kind -> (HTTP status, title en, title zh, text en, text zh); {ttl} and {contact} are filled in.
MESSAGES: dict[str, tuple[int, str, str, str, str]] = {
    "index": (
        200,
        "Request access from a block page",
        "請在封鎖頁面提出申請",
        "When a site is blocked because it needs your department head's approval, its block page offers to "
        "request access. Use it there: the block page knows who you are and which site you need.",
        "如網站因須經部門主管批准而被封鎖，請在該封鎖頁面提出申請：封鎖頁面載有你的身分及所需網站的資料。",
    ),
    "bad-token": (
        400,
        "This request link is not valid",
        "此申請連結無效",
        "The request did not come from a genuine block page of this filter (it was altered, damaged or signed "
        "by another server), so it cannot say who you are. Nothing was recorded. Open the blocked site again "
        "and request access from the new block page.",
        "此申請並非來自本過濾系統的真正封鎖頁面（已被更改、損壞或由其他伺服器簽發），未能確認你的身分，"
        "因此沒有記錄任何申請。請再次開啟被封鎖的網站，並在新的封鎖頁面上提出申請。",
    ),
    "expired": (
        400,
        "This request link has expired",
        "此申請連結已過期",
        "A block page's request works for {ttl} minutes. Nothing was recorded. Open the blocked site again "
        "and request access from the new block page.",
        "封鎖頁面上的申請只在 {ttl} 分鐘內有效，因此沒有記錄任何申請。請再次開啟被封鎖的網站，"
        "並在新的封鎖頁面上提出申請。",
    ),
    "other-computer": (
        403,
        "This link belongs to another computer",
        "此連結屬於另一部電腦",
        "Access can only be requested from the computer that was blocked. Nothing was recorded. Open the "
        "blocked site on this computer and request access from its block page.",
        "只可在被封鎖的電腦上提出申請，因此沒有記錄任何申請。請在這部電腦開啟被封鎖的網站，並在其封鎖頁面上提出申請。",
    ),
    "not-restricted": (
        400,
        "Nothing to request",
        "無須申請",
        "This kind of site needs no approval.",
        "此類網站無須批准。",
    ),
    "no-approver": (
        409,
        "Nobody can approve this yet",
        "暫時無人可以批准",
        "The directory does not say who approves for you (you, or a head of your department, are missing from "
        "it), so the request was not recorded. Please ask {contact} to update the directory.",
        "目錄未有記錄誰可為你批准（你或你部門的主管不在目錄內），因此沒有記錄申請。請聯絡{contact}更新目錄。",
    ),
    "not-found": (
        404,
        "Not found",
        "找不到",
        "Check the address: a request's page is the full link you were given when you sent it.",
        "請檢查網址：申請頁面的網址是提交申請時所得的完整連結。",
    ),
    "bad-form": (
        400,
        "The form could not be read",
        "未能讀取表格",
        "Send the form from a block page again.",
        "請從封鎖頁面再次提交表格。",
    ),
    "too-large": (
        413,
        "Too much text",
        "內容過長",
        "The form is too large. Shorten the justification and send it again.",
        "表格內容過長，請縮短理由後再提交。",
    ),
    "method": (
        405,
        "Not allowed",
        "不允許",
        "Use the form on a block page.",
        "請使用封鎖頁面上的表格。",
    ),
    "unavailable": (
        503,
        "Try again in a moment",
        "請稍後再試",
        "The portal cannot reach its database just now; nothing was recorded.",
        "系統暫時未能連接資料庫，因此沒有記錄任何申請。",
    ),
}


def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.PackageLoader("icap_server.portal", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


class SecurityHeaders:
    """Add the security headers to every response, the framework's own error answers included."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in SECURITY_HEADERS.items():
                    headers.setdefault(name, value)
            await send(message)

        await self.app(scope, receive, send_with_headers)


def base_url(config: Config) -> str:
    """How browsers reach the portal: `portal.public_url`, else http://LISTEN."""
    return (config.portal.public_url or f"http://{config.portal.listen}").rstrip("/")


def portal_link(config: Config, secret: str) -> PortalLink:
    return PortalLink(
        base_url=base_url(config),
        secret=secret,
        token_ttl_s=config.portal.token_ttl_minutes * 60,
        max_days=config.approvals.max_validity_days,
    )


async def portal_secret(config: Config, store: PolicyStore) -> str:
    """The token secret: from the config, else the one kept in Redis (made by whichever process came first)."""
    return config.portal.secret or await store.portal_secret(new_secret())


async def wait_for_secret(config: Config, store: PolicyStore) -> str:
    """The secret, retrying while Redis is unavailable (until then block pages carry no request form)."""
    delay = 0.5
    while True:
        try:
            return await portal_secret(config, store)
        except (StoreUnavailable, OSError) as error:
            log.error("portal_secret_unavailable", error=str(error), retry_s=delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 10.0)


async def attach_portal(app: Application, config: Config, store: PolicyStore) -> None:
    """Let this ICAP worker's block pages offer the request form, signed with the shared secret."""
    app.portal = portal_link(config, await wait_for_secret(config, store))


def bind_portal(config: Config) -> socket.socket:
    """The portal's listening socket, bound before any worker starts (OSError if the address is taken)."""
    assert config.portal.listen is not None
    host, port = parse_listen(config.portal.listen)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(128)  # forked portal processes inherit it; a restarted one finds it still bound
    except OSError:
        sock.close()
        raise
    if host in ("0.0.0.0", "::") and config.portal.public_url is None:
        log.warning("portal_public_url_unset", listen=config.portal.listen, hint="set portal.public_url")
    return sock


class Portal:
    def __init__(self, config: Config, store: PolicyStore, secret: str) -> None:
        self.config = config
        self.store = store
        self.secret = secret
        self.root = urlsplit(base_url(config)).path.rstrip("/")
        self.zone = ZoneInfo(config.policy.timezone)
        self.restricted = frozenset(config.policy.restricted_categories)
        self.templates = _environment()
        routes = [
            Route("/", self.index, methods=["GET"]),
            Route("/request", self.form, methods=["GET"]),
            Route("/request", self.submit, methods=["POST"]),
            Route("/requests/{request_id}", self.status, methods=["GET"]),
            Route("/portal.css", self.style, methods=["GET"]),
        ]
        handlers: dict[Any, Any] = {
            HTTPException: self._http_error,
            StoreUnavailable: self._unavailable,
            OSError: self._unavailable,
        }
        self.app = SecurityHeaders(Starlette(routes=routes, exception_handlers=handlers))

    # ---- pages ----------------------------------------------------------------------------

    def _page(self, template: str, status: int, **context: Any) -> HTMLResponse:
        organisation = self.config.organisation
        html = self.templates.get_template(template).render(
            root=self.root,
            org_en=organisation.name_en,
            org_zh=organisation.name_zh,
            contact=organisation.contact,
            refresh=context.pop("refresh", None),
            **context,
        )
        return HTMLResponse(html, status_code=status)

    def message(self, kind: str, detail: str = "") -> HTMLResponse:
        status, title_en, title_zh, text_en, text_zh = MESSAGES[kind]
        values = {"ttl": self.config.portal.token_ttl_minutes, "contact": self.config.organisation.contact}
        return self._page(
            "message.html",
            status,
            kind="refused" if status >= 400 else "info",
            title_en=title_en,
            title_zh=title_zh,
            text_en=text_en.format(**values),
            text_zh=text_zh.format(**values),
            detail=detail,
        )

    def _form_page(
        self, claim: RequestClaim, token: str, justification: str, days: str, problem: str | None
    ) -> HTMLResponse:
        category_en, category_zh = CATEGORY_LABELS.get(claim.category, (claim.category, claim.category))
        return self._page(
            "form.html",
            400 if problem else 200,
            claim=claim,
            token=token,
            justification=justification,
            days=days,
            problem=problem,
            max_days=self.config.approvals.max_validity_days,
            category_en=category_en,
            category_zh=category_zh,
        )

    async def _http_error(self, request: Request, error: Exception) -> Response:
        status = error.status_code if isinstance(error, HTTPException) else 500
        return self.message("method" if status == 405 else "not-found")

    async def _unavailable(self, request: Request, error: Exception) -> Response:
        log.error("portal_store_unavailable", path=request.url.path, error=str(error))
        return self.message("unavailable")

    async def index(self, request: Request) -> Response:
        return self.message("index")

    async def style(self, request: Request) -> Response:
        return Response(STYLE, media_type="text/css", headers={"Cache-Control": "max-age=3600"})

    # ---- the token and the browser's address ------------------------------------------------

    def _claim(self, request: Request, token: str) -> RequestClaim | Response:
        """The verified claim, or the page refusing it (bad or expired token, another computer)."""
        try:
            claim = verify(token, self.secret)
        except TokenError as error:
            kind = "expired" if "expired" in str(error) else "bad-token"  # TokenError's one distinction
            log.warning("request_refused", reason=kind, detail=str(error), peer=self._peer(request))
            return self.message(kind)
        address = client_address(
            self._peer(request), request.headers.getlist("x-forwarded-for"), self.config.portal.trusted_proxies
        )
        if claim.client_ip and not same_address(address, claim.client_ip):
            log.warning(
                "request_refused",
                reason="other-computer",
                user=claim.user,
                client_ip=address,
                token_client_ip=claim.client_ip,
            )
            return self.message("other-computer")
        if claim.category not in self.restricted:
            return self.message("not-restricted")
        return claim

    @staticmethod
    def _peer(request: Request) -> str | None:
        return request.client.host if request.client else None

    async def _read_form(self, request: Request) -> dict[str, str] | Response:
        if request.headers.get("content-type", "").split(";")[0].strip().lower() != "application/x-www-form-urlencoded":
            return self.message("bad-form")
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_FORM_BYTES:
                return self.message("too-large")
        try:
            fields = parse_qs(body.decode("utf-8"), keep_blank_values=True, strict_parsing=False, max_num_fields=20)
        except (UnicodeDecodeError, ValueError):
            return self.message("bad-form")
        return {name: values[0] for name, values in fields.items()}

    # ---- handlers --------------------------------------------------------------------------

    async def form(self, request: Request) -> Response:
        token = request.query_params.get("token", "")
        if not token:
            return self.message("index")
        claim = self._claim(request, token)
        if isinstance(claim, Response):
            return claim
        return self._form_page(claim, token, "", str(min(30, self.config.approvals.max_validity_days)), None)

    async def submit(self, request: Request) -> Response:
        form = await self._read_form(request)
        if isinstance(form, Response):
            return form
        token = form.get("token", "")
        claim = self._claim(request, token)
        if isinstance(claim, Response):
            return claim
        justification = " ".join(form.get("justification", "").split())
        days_text = form.get("days", "").strip()
        days = parse_days(days_text)
        approvals = self.config.approvals
        problem = (
            "Give the number of days as a whole number."
            if days is None
            else submission_problem(justification, days, approvals.max_validity_days, approvals.min_justification_chars)
        )
        if problem or days is None:
            return self._form_page(claim, token, justification, days_text, problem)
        directory = await self.store.load_directory()
        person = directory.person(claim.user)
        department = person.department if person is not None else ""
        heads, delegates = directory.approvers_of(department) if department else (frozenset(), frozenset())
        approvers = tuple(sorted((heads | delegates) - {claim.user}))  # nobody decides their own request
        if not approvers and approvals.require_department_head:
            log.warning("request_refused", reason="no-approver", user=claim.user, department=department or None)
            return self.message("no-approver")
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
            )

        nonce = claim.nonce or hashlib.sha256(token.encode()).hexdigest()
        stored, created = await self.store.create_request(
            build, open_key(claim.user, claim.category, claim.host), nonce, int(claim.expires_at - now.timestamp()) + 1
        )
        log.info(
            "request_submitted" if created else "request_already_open",
            request=stored.id,
            user=stored.user,
            category=stored.category,
            host=stored.host,
            department=stored.department or None,
            days=stored.days,
        )
        background = None
        if created and self.config.smtp.host is not None:
            background = BackgroundTask(self._notify, stored, directory)
        location = f"{self.root}/requests/{quote(stored.id)}?key={quote(stored.key)}"
        return RedirectResponse(location, status_code=303, background=background)

    async def _notify(self, request: AccessRequest, directory: Directory) -> None:
        label = CATEGORY_LABELS.get(request.category, (request.category, request.category))[0]
        await send_request_mail(self.config.smtp, request, directory, self.zone, label)

    async def status(self, request: Request) -> Response:
        request_id = str(request.path_params["request_id"])
        key = request.query_params.get("key", "")
        item = None
        if REQUEST_ID_RE.match(request_id):
            with contextlib.suppress(StoreError):
                item = await self.store.get_request(request_id)
        # A wrong key looks exactly like an unknown id: the page says nothing about requests one cannot see.
        if item is None or not hmac.compare_digest(item.key.encode(), key.encode()):
            return self.message("not-found")
        category_en, category_zh = CATEGORY_LABELS.get(item.category, (item.category, item.category))
        status_en, status_zh, text_en, text_zh = self._status_text(item)
        return self._page(
            "status.html",
            200,
            request=item,
            status_en=status_en,
            status_zh=status_zh,
            text_en=text_en,
            text_zh=text_zh,
            category_en=category_en,
            category_zh=category_zh,
            submitted=self._local(item.created_at),
            refresh=60 if item.status is RequestStatus.PENDING else None,
        )

    def _local(self, moment: datetime | None) -> str:
        return moment.astimezone(self.zone).strftime("%Y-%m-%d %H:%M") if moment else "-"

    def _status_text(self, item: AccessRequest) -> tuple[str, str, str, str]:
        department = item.department or "your department"
        if item.status is RequestStatus.APPROVED:
            until = self._local(item.valid_until)
            return (
                "Approved",
                "已批准",
                f"Approved by {item.decided_by} on {self._local(item.decided_at)}. You can use the site now "
                f"(reload it); the approval is valid until {until} and is reviewed regularly.",
                f"已由 {item.decided_by} 於 {self._local(item.decided_at)} 批准。你現在可以使用該網站"
                f"（請重新載入）；批准有效至 {until}，並會定期覆核。",
            )
        if item.status is RequestStatus.DENIED:
            return (
                "Declined",
                "不獲批准",
                f"Declined by {item.decided_by} on {self._local(item.decided_at)}.",
                f"已由 {item.decided_by} 於 {self._local(item.decided_at)} 拒絕。",
            )
        return (
            "Waiting for a decision",
            "等待決定",
            f"Sent to the head of {department} (or a delegate) on {self._local(item.created_at)}. "
            "This page shows the decision once it is made.",
            f"已於 {self._local(item.created_at)} 送交{item.department or '你部門'}的主管（或其代理人）。"
            "作出決定後，本頁會顯示結果。",
        )


class PortalServer(uvicorn.Server):
    """uvicorn, minus its signal handling: the process that hosts the portal decides when it stops."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def portal_server(config: Config, store: PolicyStore, secret: str) -> PortalServer:
    settings = uvicorn.Config(
        Portal(config, store, secret).app,
        lifespan="off",
        ws="none",
        http="h11",
        log_config=None,
        access_log=False,
        proxy_headers=False,  # the portal decides itself whom to believe about addresses (trusted_proxies)
        server_header=False,
        limit_concurrency=200,
        timeout_keep_alive=5,
        timeout_graceful_shutdown=5,
    )
    return PortalServer(settings)


async def run_portal(config: Config, store: PolicyStore, sock: socket.socket, stop: asyncio.Event) -> None:
    """Serve the portal on `sock` until `stop` is set (drains requests in flight and mail being sent)."""
    secret_task = asyncio.create_task(wait_for_secret(config, store))
    stopping = asyncio.create_task(stop.wait())
    await asyncio.wait({secret_task, stopping}, return_when=asyncio.FIRST_COMPLETED)
    if not secret_task.done():  # stopped before Redis ever answered
        secret_task.cancel()
        sock.close()
        return
    server = portal_server(config, store, secret_task.result())
    task = asyncio.create_task(server.serve(sockets=[sock]))
    log.info("portal_listening", address=config.portal.listen, url=base_url(config))
    await asyncio.wait({task, stopping}, return_when=asyncio.FIRST_COMPLETED)
    server.should_exit = True
    stopping.cancel()
    await task


def run_portal_process(config: Config, redis_url: str, sock: socket.socket) -> int:
    """The portal's own process (several workers): stops on SIGTERM from the supervisor."""
    from icap_server.runtime.logs import configure_logging

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the supervisor decides
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    configure_logging(config.logging.level, config.logging.format, fields={"worker": "portal"})

    async def main() -> int:
        store = PolicyStore.from_url(redis_url, config.redis.key_prefix)
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        try:
            await run_portal(config, store, sock, stop)
        finally:
            await store.close()
        return 0

    return asyncio.run(main())
