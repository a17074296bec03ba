"""`POST /continue`: a caution page's "continue", turned into a grace for one person and one service.

The token on the caution page (`policy.tokens.ContinueClaim`, under its own key) says who was shown the page,
from which address, for which service or host, and where they were going. The portal believes nothing else:
the token must be genuine and unexpired, the post must come from that computer and not from another site,
and the mode for that person and service must still be `caution` now (an admin who switched to `enforce` since
closes the door at once). Then the grace is stored, audited and announced, and the browser goes back.
"""

from __future__ import annotations

import time
from typing import Protocol

import structlog
from starlette.requests import Request as HTTPRequest
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from icap_server.config import Config
from icap_server.portal.limits import cross_site
from icap_server.portal.security import peer, read_form
from icap_server.service.modes import configured_modes
from policy.modes import Grace, Mode, ModeTable, grace_target
from policy.requests import client_address, same_address
from policy.store import PolicyStore
from policy.tokens import TokenError, verify_continue


class PortalParts(Protocol):
    """What the route uses of `icap_server.portal.app.Portal` (named here, not imported: no cycle)."""

    config: Config
    store: PolicyStore
    secret: str
    origins: frozenset[str]

    def message(self, request: HTTPRequest, kind: str, detail: str = "") -> Response: ...


log = structlog.get_logger("clearance.portal")


class CautionContinue:
    def __init__(self, portal: PortalParts) -> None:
        self.portal = portal
        self.configured = configured_modes(portal.config.modes)

    def routes(self) -> list[Route]:
        return [Route("/continue", self.proceed, methods=["POST"])]

    async def proceed(self, request: HTTPRequest) -> Response:
        portal = self.portal
        form = await read_form(request)
        if isinstance(form, str):
            return portal.message(request, form)
        try:
            claim = verify_continue(form.get("token", ""), portal.secret)
        except TokenError as error:
            kind = "expired" if "expired" in str(error) else "bad-token"
            log.warning("continue_refused", reason=kind, detail=str(error), peer=peer(request))
            return portal.message(request, kind)
        address = client_address(
            peer(request), request.headers.getlist("x-forwarded-for"), portal.config.portal.trusted_proxies
        )
        if claim.client_ip and not same_address(address, claim.client_ip):
            log.warning("continue_refused", reason="other-computer", user=claim.user, client_ip=address)
            return portal.message(request, "other-computer")
        if cross_site(request.headers, portal.origins, claim.host) is not None:
            log.warning("continue_refused", reason="cross-site", user=claim.user)
            return portal.message(request, "cross-site")
        person = (await portal.store.load_directory()).person(claim.user)
        department = person.department if person is not None else None
        stored = ModeTable.build(Mode.ENFORCE, await portal.store.list_modes())
        choice = stored.choose(department, claim.service or None, claim.category, self.configured)
        if choice.mode is not Mode.CAUTION:
            log.warning("continue_refused", reason="enforced", user=claim.user, mode=str(choice.mode))
            return portal.message(request, "continue-refused")
        minutes = portal.config.modes.caution_grace_minutes
        grace = Grace(
            claim.user,
            claim.client_ip,
            grace_target(claim.service or None, claim.host),
            int(time.time() + minutes * 60),
        )
        await portal.store.grant_grace(grace, department)
        log.info("caution_continued", user=claim.user, target=grace.target, minutes=minutes)
        return RedirectResponse(claim.url, status_code=303)
