"""What Clearance does with each ICAP request: route it, judge it, and choose the answer.

The asyncio server feeds requests in and writes answers out; this module holds no sockets, so `explain`
runs the very same code on a request it builds itself.
"""

from __future__ import annotations

import math
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol
from zoneinfo import ZoneInfo

from blockpages.negotiate import choose_format, choose_language
from blockpages.render import REQUESTABLE, BlockFacts, ContinueForm, RequestForm, ServiceName
from icap_server.config import Config
from icap_server.protocol import ICAPRequest, QuickRequest, Response, token_list
from icap_server.service import responses
from icap_server.service.discovery import DiscoveryRecorder
from icap_server.service.memo import DecisionMemo
from icap_server.service.modes import configured_modes
from icap_server.service.pages import block_pages
from icap_server.service.sync import PolicyUnavailable
from icap_server.service.tenants import tenant_policy
from icap_server.service.usage import UsageRecorder
from policy.decision import BAD_REQUEST, Action, Decision, DecisionSettings, Reason, RequestFacts, judge
from policy.hosts import request_host, request_path
from policy.identity import Identity, identify, identify_values
from policy.rollout import apply_mode
from policy.services import Service
from policy.state import PolicyState
from policy.tenants import Injection, restrict
from policy.tokens import ContinueClaim, RequestClaim, sign, sign_continue

SERVICES: dict[str, frozenset[str]] = {
    "/reqmod": frozenset({"REQMOD"}),
    "/respmod": frozenset({"RESPMOD"}),
}


@dataclass(frozen=True, slots=True)
class Verdict:
    """The outcome for one request, before it becomes bytes; also what gets logged."""

    status: int  # the ICAP status when routing fails (404, 405), else 0
    identity: Identity
    host: str | None = None
    decision: Decision | None = None
    version: int = 0
    reference: str | None = None
    service: Service | None = None  # the blocked host's catalogue service, resolved for the block page

    @property
    def blocked(self) -> bool:
        return self.decision is not None and self.decision.blocked

    def log_fields(self) -> dict[str, object]:
        decision = self.decision
        return {
            "decision": str(decision.action) if decision else None,
            "reason": str(decision.reason) if decision else None,
            "user": self.identity.user,
            "client_ip": self.identity.client_ip,
            "host": self.host,
            "category": decision.category if decision else None,
            "catalogue_service": decision.service if decision else None,  # "service" is the ICAP service
            "matched_entry": decision.matched_entry if decision else None,
            "approval_id": decision.approval_id if decision else None,
            "exemption_id": decision.exemption_id if decision else None,
            "rule_id": decision.rule_id if decision else None,
            "review_overdue": decision.review_overdue if decision else False,
            "tenant": decision.tenant if decision else None,
            "mode": decision.mode if decision else None,
            "reference": self.reference,
        }


@dataclass(frozen=True, slots=True)
class Asked:
    """What an answer reads of the HTTP request, from either parser: the page's path, format and language."""

    method: str
    target: str
    accept: str | None
    accept_language: str | None


NO_IDENTITY = Identity(user=None, client_ip=None)
PASS_THROUGH = Decision(Action.PASS, Reason.NOT_RESTRICTED)
# Fail closed: with no policy loaded nothing can be judged, so everything is blocked, with a page that says why.
UNAVAILABLE = Decision(Action.BLOCK, Reason.POLICY_UNAVAILABLE)


class PolicySource(Protocol):
    """Where the current in-memory policy comes from (the sync task in serve, a one-off load in explain)."""

    @property
    def state(self) -> PolicyState: ...

    @property
    def version(self) -> int: ...


@dataclass(frozen=True, slots=True)
class FixedPolicy:
    state: PolicyState

    @property
    def version(self) -> int:
        return self.state.version


@dataclass(frozen=True, slots=True)
class PortalLink:
    """Where block pages send access requests, and the secret that signs their tokens (set by serve)."""

    base_url: str
    secret: str
    token_ttl_s: int
    max_days: int


class Application:
    def __init__(self, config: Config, policy: PolicySource) -> None:
        self.config = config
        self.policy = policy
        self.settings = decision_settings(config)
        self.timezone = ZoneInfo(config.policy.timezone)
        self.usage = UsageRecorder()
        self.discovery = DiscoveryRecorder(self.timezone, config.modes.discovery_keep_days)  # monitor, caution
        self.memo = DecisionMemo()  # decisions that depend on the host alone, for the policy in force
        self.tenants = tenant_policy(config.tenant_restrictions)  # None: no vendor configured
        self.modes = configured_modes(config.modes)  # the config file's roll-out modes (the store's go over them)
        self.portal: PortalLink | None = None
        # Compiles the block-page templates and renders each with sample facts: a broken one fails here.
        self.pages = block_pages(config)

    @property
    def istag(self) -> str:
        return responses.istag(self.policy.version)

    def evaluate(self, request: ICAPRequest, now: datetime) -> Verdict:
        """Route and judge a request from in-memory policy; before the first load, block (policy-unavailable)."""
        methods = SERVICES.get(request.service)
        if methods is None:
            return Verdict(status=404, identity=NO_IDENTITY, version=self.policy.version)
        if request.method == "OPTIONS":
            return Verdict(status=0, identity=NO_IDENTITY, version=self.policy.version)
        if request.method not in methods:
            return Verdict(status=405, identity=NO_IDENTITY, version=self.policy.version)
        identity = identify(request.headers, self.config.identity)
        if request.method == "RESPMOD":
            return Verdict(status=0, identity=identity, decision=PASS_THROUGH, version=self.policy.version)
        http = request.http_request
        if http is None:  # a REQMOD with no HTTP request head: nothing to judge, and never a pass
            return Verdict(status=400, identity=identity, version=self.policy.version)
        return self._judge(identity, http.method, http.target, http.headers.get_all("Host"), now)

    def evaluate_quick(self, request: QuickRequest, now: datetime) -> Verdict | None:
        """`evaluate` for a message the quick scan read: a REQMOD to judge, else None (OPTIONS and routing
        errors are left to the reference path, which answers them)."""
        if request.method != "REQMOD" or request.service != "/reqmod":
            return None
        identity = identify_values(request.raw_user, request.authenticated, request.client_ip, self.config.identity)
        assert request.http_method is not None and request.target is not None
        hosts = [request.host] if request.host is not None else []
        return self._judge(identity, request.http_method, request.target, hosts, now)

    def _judge(self, identity: Identity, method: str, target: str, hosts: list[str], now: datetime) -> Verdict:
        """The verdict on an HTTP request by whom it is from, its method, its target and its Host headers."""
        # The CONNECT authority or absolute-form URI (as Squid sends), else Host; every Host header is checked.
        host = request_host(method, target, hosts)
        if host is None:  # the destination cannot be told: no rule, approval or exemption can open it
            return Verdict(0, identity, None, BAD_REQUEST, self.policy.version, secrets.token_hex(6))
        try:
            state = self.policy.state
        except PolicyUnavailable:
            return Verdict(0, identity, host, UNAVAILABLE, self.policy.version, secrets.token_hex(6))
        decision = self.memo.get(state, host)
        if decision is None:
            facts = RequestFacts(host, request_path(method, target), identity.user, identity.client_ip)
            decision = judge(state, facts, self.settings, now)
            tenants = self.tenants
            if tenants is not None:
                decision = restrict(decision, facts, state, tenants, self.settings, now)
            self.memo.keep(state, host, decision, tenants is not None and tenants.match(host) is not None)
            decision = apply_mode(decision, facts, state, self.modes, now)  # after the memo: it keeps no such block
            if decision.mode is not None:
                self.discovery.sight(decision, state.department_of(identity.user), identity.user, host, now)
        if decision.approval_id is not None and decision.reason is Reason.APPROVED:
            self.usage.note(decision.approval_id, now)
        reference = secrets.token_hex(6) if decision.blocked else None
        service = state.services.get(decision.service) if reference is not None else None
        return Verdict(0, identity, host, decision, state.version, reference, service)

    def keeps_body(self, request: ICAPRequest, verdict: Verdict) -> bool:
        """The body is only kept when it must be echoed back: a pass the client did not allow a 204 for, or a
        tenant-restricted pass (the modified request carries it, 204 or not)."""
        if verdict.status or verdict.blocked:
            return False
        return "204" not in request.allow or self.modifies(verdict)

    def modifies(self, verdict: Verdict) -> bool:
        """Whether the answer is the request with the vendor's tenant-restriction headers (`modified_request`)."""
        decision = verdict.decision
        return decision is not None and decision.tenant is not None

    def _injection(self, verdict: Verdict) -> Injection:
        """The headers for a tenant-restricted pass; never a plain pass instead (that would let personal accounts
        in), so a mismatch is an error the server answers with a 500."""
        injection = self.tenants.match(verdict.host) if self.tenants is not None else None
        if injection is None or verdict.decision is None or injection.vendor != verdict.decision.tenant:
            raise RuntimeError(f"no tenant restriction for {verdict.host!r}")
        return injection

    def echo_head(self, request: ICAPRequest, verdict: Verdict) -> Response:
        """The head of a streamed echo: the client's request, or the tenant-restricted one."""
        tag = responses.istag(verdict.version)
        fields = responses.decision_fields(verdict.decision, verdict.reference)
        if self.modifies(verdict):
            assert request.http_request is not None
            return responses.modified_request(tag, request.http_request.raw, self._injection(verdict), None, fields)
        return responses.echo_head(tag, request, fields)

    def respond(
        self, request: ICAPRequest, verdict: Verdict, can_send_204: bool, body: bytes | None, now: datetime
    ) -> Response:
        tag = responses.istag(verdict.version)
        if verdict.status:
            return responses.error(tag, verdict.status)
        if request.method == "OPTIONS":
            methods = ", ".join(sorted(SERVICES[request.service]))
            server = self.config.server
            return responses.options(tag, methods, server.max_connections, server.options_ttl)
        http = request.http_request
        if request.method == "RESPMOD" or http is None:  # passed: RESPMOD is never judged
            fields = responses.decision_fields(verdict.decision, None)
            if can_send_204:
                return responses.no_content(tag, fields)
            return responses.unmodified(tag, request, body, fields)
        asked = Asked(http.method, http.target, http.headers.get("Accept"), http.headers.get("Accept-Language"))
        return self.answer(asked, http.raw, verdict, can_send_204, body if request.has_body else None, now)

    def respond_quick(self, request: QuickRequest, data: bytes, verdict: Verdict, now: datetime) -> Response:
        """`respond` for a message the quick scan read (`data`, the whole message): no body, and the HTTP head
        its last part."""
        assert request.http_method is not None and request.target is not None
        asked = Asked(request.http_method, request.target, request.accept, request.accept_language)
        can_send_204 = "204" in token_list(request.allow)
        return self.answer(asked, data[request.http_start :], verdict, can_send_204, None, now)

    def answer(
        self, asked: Asked, http_head: bytes, verdict: Verdict, can_send_204: bool, body: bytes | None, now: datetime
    ) -> Response:
        """The answer to a judged REQMOD: the block page, the tenant-restricted request, 204, or the echo."""
        if verdict.blocked:
            return self.block_page(asked, verdict, now)
        tag = responses.istag(verdict.version)
        fields = responses.decision_fields(verdict.decision, verdict.reference)
        if self.modifies(verdict):
            return responses.modified_request(tag, http_head, self._injection(verdict), body, fields)
        if can_send_204:
            return responses.no_content(tag, fields)
        return responses.unmodified_request(tag, http_head, body, fields)

    def block_page(self, asked: Asked, verdict: Verdict, now: datetime) -> Response:
        """The HTTP 403 for a block: HTML, JSON or plain text (Accept), English or Chinese (Accept-Language)."""
        decision = verdict.decision
        assert decision is not None and verdict.reference is not None
        facts = BlockFacts(
            host=verdict.host or "",
            path=request_path(asked.method, asked.target),
            category=decision.category,
            user=verdict.identity.user,
            client_ip=verdict.identity.client_ip,
            reason=str(decision.reason),
            reference=verdict.reference,
            time=now.astimezone(self.timezone),
            service=service_name(verdict.service),
            mode=decision.mode or "enforce",
        )
        fmt = choose_format(asked.accept)
        language = choose_language(asked.accept_language, self.config.blockpages.default_language)
        proceed = self.continue_form(verdict, asked, now)
        page = self.pages.render(facts, fmt, language, self.request_form(verdict, now), proceed)
        fields = responses.decision_fields(decision, verdict.reference)
        tag = responses.istag(verdict.version)
        return responses.http_forbidden(tag, page.body, page.content_type, verdict.reference, page.headers, fields)

    def continue_form(self, verdict: Verdict, asked: Asked, now: datetime) -> ContinueForm | None:
        """A caution page's "continue", when a portal is set up and the person is named (a grace needs someone)."""
        portal, decision, user = self.portal, verdict.decision, verdict.identity.user
        if portal is None or decision is None or decision.action is not Action.CAUTION or not user or not verdict.host:
            return None
        claim = ContinueClaim(
            user,
            verdict.identity.client_ip,
            decision.category or "",
            decision.service or "",
            verdict.host,
            return_url(asked, verdict.host),
            int(now.timestamp()) + portal.token_ttl_s,
        )
        action = f"{portal.base_url.rstrip('/')}/continue"
        minutes = math.ceil(self.config.modes.caution_grace_minutes)  # as the page says it: whole minutes
        return ContinueForm(action, sign_continue(claim, portal.secret), minutes)

    def request_form(self, verdict: Verdict, now: datetime) -> RequestForm | None:
        """The "Request access" form, when a portal is set up and a request could lift this block."""
        portal, decision, user = self.portal, verdict.decision, verdict.identity.user
        if portal is None or decision is None or str(decision.reason) not in REQUESTABLE:
            return None
        if not user or not decision.category or not verdict.host:
            return None  # nobody to hold an approval, or nothing to name in one
        service = verdict.service
        claim = RequestClaim(
            user,
            verdict.identity.client_ip,
            decision.category,
            verdict.host,
            int(now.timestamp()) + portal.token_ttl_s,
            service=service.id if service is not None else "",
            service_en=service.name_en if service is not None else "",
            service_zh=service.name_zh if service is not None else "",
        )
        return RequestForm(
            action=f"{portal.base_url.rstrip('/')}/request",
            token=sign(claim, portal.secret),
            max_days=portal.max_days,
            min_chars=self.config.approvals.min_justification_chars,
        )


def decision_settings(config: Config) -> DecisionSettings:
    """What the decision reads of the config: the filter's, and the admin commands that judge as it would."""
    return DecisionSettings(
        restricted=frozenset(config.policy.restricted_categories),
        forbidden=frozenset(config.policy.forbidden_categories),
        on_review_overdue=config.approvals.on_review_overdue,
    )


def return_url(asked: Asked, host: str) -> str:
    """Where "continue" sends the browser back to: the request's absolute URL, or the site for a CONNECT."""
    target = asked.target
    if asked.method != "CONNECT" and target.lower().startswith(("http://", "https://")):
        return target
    return f"https://{host}/"


def service_name(service: Service | None) -> ServiceName | None:
    """The service as a block page names it (blockpages knows no catalogue)."""
    return ServiceName(service.id, service.name_en, service.name_zh) if service is not None else None
