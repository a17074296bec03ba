"""What Clearance does with each ICAP request: route it, judge it, and choose the answer.

The asyncio server feeds requests in and writes answers out; this module holds no sockets, so `explain`
runs the very same code on a request it builds itself.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol
from zoneinfo import ZoneInfo

from blockpages.render import BlockPage, render_block_page
from policy.decision import Action, Decision, Reason, judge
from policy.hosts import request_host, request_path
from policy.identity import Identity, identify
from policy.state import PolicyState

from . import responses
from .config import Config
from .protocol import Request, Response
from .usage import UsageRecorder

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
            "approval_id": decision.approval_id if decision else None,
            "exemption_id": decision.exemption_id if decision else None,
            "rule_id": decision.rule_id if decision else None,
            "review_overdue": decision.review_overdue if decision else False,
            "reference": self.reference,
        }


NO_IDENTITY = Identity(user=None, client_ip=None)
PASS_THROUGH = Decision(Action.PASS, Reason.NOT_RESTRICTED)


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
        self.restricted = frozenset(config.policy.restricted_categories)
        self.timezone = ZoneInfo(config.policy.timezone)
        self.on_review_overdue = config.approvals.on_review_overdue
        self.usage = UsageRecorder()
        self.portal: PortalLink | None = None

    @property
    def istag(self) -> str:
        return responses.istag(self.policy.version)

    def evaluate(self, request: Request, now: datetime) -> Verdict:
        """Route and judge a request from in-memory policy; raises PolicyUnavailable before the first load."""
        methods = SERVICES.get(request.service)
        if methods is None:
            return Verdict(status=404, identity=NO_IDENTITY, version=self.policy.version)
        if request.method == "OPTIONS":
            return Verdict(status=0, identity=NO_IDENTITY, version=self.policy.version)
        if request.method not in methods:
            return Verdict(status=405, identity=NO_IDENTITY, version=self.policy.version)
        identity = identify(request.headers, self.config.identity)
        if request.method == "RESPMOD" or request.http_request is None:
            return Verdict(status=0, identity=identity, decision=PASS_THROUGH, version=self.policy.version)
        state = self.policy.state
        http = request.http_request
        target = http.target
        # Squid sends absolute-form targets; only origin-form needs the Host header.
        host = request_host(http.method, target, None if "://" in target else http.headers.get("Host"))
        path = request_path(http.method, target)
        decision = judge(
            state, host, path, identity.user, identity.client_ip, self.restricted, now, self.on_review_overdue
        )
        if decision.approval_id is not None and not decision.blocked:
            self.usage.note(decision.approval_id, now)
        reference = secrets.token_hex(6) if decision.blocked else None
        return Verdict(0, identity, host, decision, state.version, reference)

    def keeps_body(self, request: Request, verdict: Verdict) -> bool:
        """The body is only kept when it must be echoed back: a pass the client did not allow a 204 for."""
        return not verdict.status and not verdict.blocked and "204" not in request.allow

    def respond(
        self, request: Request, verdict: Verdict, can_send_204: bool, body: bytes | None, now: datetime
    ) -> Response:
        tag = responses.istag(verdict.version)
        if verdict.status:
            return responses.error(tag, verdict.status)
        if request.method == "OPTIONS":
            methods = ", ".join(sorted(SERVICES[request.service]))
            server = self.config.server
            return responses.options(tag, methods, server.max_connections, server.options_ttl)
        if verdict.blocked:
            assert verdict.decision is not None and verdict.reference is not None
            return responses.http_forbidden(
                tag, self.block_page(verdict, now), "text/html; charset=utf-8", verdict.reference
            )
        if can_send_204:
            return responses.no_content(tag)
        return responses.unmodified(tag, request, body if request.has_body else None)

    def block_page(self, verdict: Verdict, now: datetime) -> bytes:
        assert verdict.decision is not None and verdict.reference is not None
        organisation = self.config.organisation
        return render_block_page(
            BlockPage(
                organisation_en=organisation.name_en,
                organisation_zh=organisation.name_zh,
                host=verdict.host or "",
                category=verdict.decision.category or "",
                user=verdict.identity.user,
                reason=str(verdict.decision.reason),
                reference=verdict.reference,
                time=now.astimezone(self.timezone),
                how_to_request_en=organisation.how_to_request_en,
                how_to_request_zh=organisation.how_to_request_zh,
                contact=organisation.contact,
            )
        )
