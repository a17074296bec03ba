"""Tenant restrictions: the vendor's own header on requests to its hosts keeps personal accounts out.

Personal and organisational accounts share hosts (`mail.google.com` is personal Gmail and the department's
Workspace mail alike), so no host list can tell them apart. Every major vendor solves it the same way: a
proxy that intercepts TLS adds a header naming the organisation's tenants to requests for the vendor's sign-in
hosts, and the vendor refuses any other account. This module holds the registry (which hosts, which headers,
as each vendor documents them), the `TenantPolicy` built from the configured values, and the pure step
`restrict` that runs after `policy.decision.judge`. No I/O.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime
from functools import lru_cache

from .decision import Action, Decision, DecisionSettings, Reason, RequestFacts
from .state import PolicyState

# A host rule: "login.live.com" is that host only; ".google.com" is google.com and every name under it.
HostRule = str


@dataclass(frozen=True, slots=True)
class TenantSettings:
    """The configured values, as plain data (the config section converts to this; empty means not configured)."""

    google_domains: tuple[str, ...] = ()
    microsoft_tenants: tuple[str, ...] = ()
    microsoft_directory_id: str | None = None
    microsoft_policy_id: str | None = None  # tenant restrictions v2: the cross-tenant access policy's id
    microsoft_restrict_msa: bool = False
    dropbox_team_ids: tuple[str, ...] = ()
    slack_requester: str | None = None
    slack_workspaces: tuple[str, ...] = ()
    zoom_policy: str | None = None
    webex_domains: tuple[str, ...] = ()
    youtube_mode: str | None = None  # "strict" or "moderate"


Headers = tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class HostGroup:
    """Some of a vendor's hosts and the headers they get (Microsoft sends one set to Entra, another to MSA)."""

    hosts: tuple[HostRule, ...]
    headers: Callable[[TenantSettings], Headers]


@dataclass(frozen=True, slots=True)
class Vendor:
    id: str
    names: tuple[str, ...]  # every header this vendor reads: all are stripped from the client's request
    groups: tuple[HostGroup, ...]
    configured: Callable[[TenantSettings], bool]
    sources: tuple[str, ...] = ()


def _joined(values: Iterable[str]) -> str:
    return ",".join(values)


def _microsoft_entra(s: TenantSettings) -> Headers:
    headers: list[tuple[str, str]] = []
    if s.microsoft_tenants and s.microsoft_directory_id:  # v1: both or neither
        headers += [
            ("Restrict-Access-To-Tenants", _joined(s.microsoft_tenants)),
            ("Restrict-Access-Context", s.microsoft_directory_id),
        ]
    if s.microsoft_policy_id and s.microsoft_directory_id:  # v2: <tenant id>:<policy id>
        headers.append(("sec-Restrict-Tenant-Access-Policy", f"{s.microsoft_directory_id}:{s.microsoft_policy_id}"))
    return tuple(headers)


def _microsoft_msa(s: TenantSettings) -> Headers:
    """login.live.com (personal Microsoft accounts): `restrict-msa` when asked for, else the v2 policy."""
    if s.microsoft_restrict_msa:
        return (("sec-Restrict-Tenant-Access-Policy", "restrict-msa"),)
    if s.microsoft_policy_id and s.microsoft_directory_id:
        return (("sec-Restrict-Tenant-Access-Policy", f"{s.microsoft_directory_id}:{s.microsoft_policy_id}"),)
    return ()


def _slack(s: TenantSettings) -> Headers:
    assert s.slack_requester is not None
    return (
        ("X-Slack-Allowed-Workspaces-Requester", s.slack_requester),
        ("X-Slack-Allowed-Workspaces", _joined(s.slack_workspaces)),
    )


VENDORS: dict[str, Vendor] = {
    vendor.id: vendor
    for vendor in (
        # Google, "Block access to consumer accounts" (https://support.google.com/a/answer/1668854): add
        # X-GoogApps-Allowed-Domains, a comma-separated list of the allowed domains, to all traffic to google.com.
        Vendor(
            "google",
            ("X-GoogApps-Allowed-Domains",),
            (HostGroup((".google.com",), lambda s: (("X-GoogApps-Allowed-Domains", _joined(s.google_domains)),)),),
            lambda s: bool(s.google_domains),
            ("https://support.google.com/a/answer/1668854",),
        ),
        # Microsoft Entra tenant restrictions v1
        # (https://learn.microsoft.com/entra/identity/enterprise-apps/tenant-restrictions): Restrict-Access-To-Tenants
        # (tenant domains or ids, comma-separated) and Restrict-Access-Context (the directory id) on
        # login.microsoftonline.com, login.microsoft.com and login.windows.net; personal Microsoft accounts are
        # refused with sec-Restrict-Tenant-Access-Policy: restrict-msa on login.live.com. Tenant restrictions v2
        # (https://learn.microsoft.com/entra/external-id/tenant-restrictions-v2): sec-Restrict-Tenant-Access-Policy:
        # <tenant id>:<policy id> on the same sign-in hosts.
        Vendor(
            "microsoft",
            ("Restrict-Access-To-Tenants", "Restrict-Access-Context", "sec-Restrict-Tenant-Access-Policy"),
            (
                HostGroup(("login.microsoftonline.com", "login.microsoft.com", "login.windows.net"), _microsoft_entra),
                HostGroup(("login.live.com",), _microsoft_msa),
            ),
            lambda s: bool(_microsoft_entra(s) or _microsoft_msa(s)),
            (
                "https://learn.microsoft.com/entra/identity/enterprise-apps/tenant-restrictions",
                "https://learn.microsoft.com/entra/external-id/tenant-restrictions-v2",
            ),
        ),
        # Dropbox network control (https://help.dropbox.com/security/network-control): the proxy adds
        # X-Dropbox-allowed-Team-Ids (comma-separated team ids) to Dropbox traffic (dropbox.com).
        Vendor(
            "dropbox",
            ("X-Dropbox-allowed-Team-Ids",),
            (HostGroup((".dropbox.com",), lambda s: (("X-Dropbox-allowed-Team-Ids", _joined(s.dropbox_team_ids)),)),),
            lambda s: bool(s.dropbox_team_ids),
            ("https://help.dropbox.com/security/network-control",),
        ),
        # Slack, "Approve Slack workspaces for your network"
        # (https://slack.com/help/articles/360024821873): intercept traffic to slack.com and add
        # X-Slack-Allowed-Workspaces-Requester (one workspace or org id) and X-Slack-Allowed-Workspaces (a list).
        Vendor(
            "slack",
            ("X-Slack-Allowed-Workspaces-Requester", "X-Slack-Allowed-Workspaces"),
            (HostGroup((".slack.com",), _slack),),
            lambda s: bool(s.slack_requester and s.slack_workspaces),
            ("https://slack.com/help/articles/360024821873",),
        ),
        # Zoom: no Zoom page describing a header was found; the header and hosts are those F5's SSL Orchestrator
        # tenant-isolation extension uses (github.com/f5devcentral/sslo-service-extensions,
        # saas-tenant-isolation). Check them with Zoom before relying on them.
        Vendor(
            "zoom",
            ("X-ZoomApps-Policy",),
            (HostGroup((".zoom.com",), lambda s: (("X-ZoomApps-Policy", s.zoom_policy or ""),)),),
            lambda s: bool(s.zoom_policy),
            ("https://github.com/f5devcentral/sslo-service-extensions/tree/main/saas-tenant-isolation",),
        ),
        # Webex, "Configure a list of allowed domains to access Webex while on your corporate network"
        # (https://help.webex.com/article/m0jby2): CiscoSpark-Allowed-Domains (comma-separated e-mail domains) on
        # these identity hosts.
        Vendor(
            "webex",
            ("CiscoSpark-Allowed-Domains",),
            (
                HostGroup(
                    (
                        "identity.webex.com",
                        "identity-eu.webex.com",
                        "identity-ca.webex.com",
                        "idbroker.webex.com",
                        "idbroker-secondary.webex.com",
                        "idbroker-b-us.webex.com",
                        "idbroker-eu.webex.com",
                        "idbroker-ca.webex.com",
                        "atlas-a.wbx2.com",
                    ),
                    lambda s: (("CiscoSpark-Allowed-Domains", _joined(s.webex_domains)),),
                ),
            ),
            lambda s: bool(s.webex_domains),
            ("https://help.webex.com/article/m0jby2",),
        ),
        # YouTube, "Restrict YouTube content on your network" (https://support.google.com/a/answer/6214622):
        # YouTube-Restrict: Strict or Moderate on these hosts.
        Vendor(
            "youtube",
            ("YouTube-Restrict",),
            (
                HostGroup(
                    (
                        "www.youtube.com",
                        "m.youtube.com",
                        "youtubei.googleapis.com",
                        "youtube.googleapis.com",
                        "www.youtube-nocookie.com",
                    ),
                    lambda s: (("YouTube-Restrict", (s.youtube_mode or "strict").capitalize()),),
                ),
            ),
            lambda s: bool(s.youtube_mode),
            ("https://support.google.com/a/answer/6214622",),
        ),
    )
}


@dataclass(frozen=True, slots=True)
class Injection:
    """What one host's requests get: the vendor, the headers to add, and every header name to strip first.

    `lines` is the headers already serialised (`Name: value\\r\\n` each): built once per policy, so a modified
    request costs a copy of the head, not a serialisation.
    """

    vendor: str
    headers: Headers
    strip: frozenset[str]  # lower-case names
    lines: bytes = field(init=False)

    def __post_init__(self) -> None:
        text = "".join(f"{name}: {value}\r\n" for name, value in self.headers)
        object.__setattr__(self, "lines", text.encode("ascii"))


class TenantPolicy:
    """The configured vendors' hosts, indexed like the category lists: a label walk, cost independent of size."""

    __slots__ = ("exact", "settings", "suffixes", "vendors")

    def __init__(self, settings: TenantSettings) -> None:
        self.settings = settings
        self.exact: dict[str, Injection] = {}
        self.suffixes: dict[str, Injection] = {}
        self.vendors: frozenset[str] = frozenset(v.id for v in VENDORS.values() if v.configured(settings))
        for vendor_id in sorted(self.vendors):
            vendor = VENDORS[vendor_id]
            strip = frozenset(name.lower() for name in vendor.names)
            for group in vendor.groups:
                headers = group.headers(settings)
                if not headers:
                    continue
                injection = Injection(vendor.id, headers, strip)
                for rule in group.hosts:
                    if rule.startswith("."):
                        self.suffixes[rule[1:]] = injection
                    else:
                        self.exact[rule] = injection

    def __bool__(self) -> bool:
        return bool(self.exact or self.suffixes)

    def match(self, host: str | None) -> Injection | None:
        """The injection for this canonical host: an exact host first, then the longest configured suffix."""
        if not host:
            return None
        found = self.exact.get(host) or self.suffixes.get(host)
        if found is not None:
            return found
        if not self.suffixes:
            return None
        position = host.find(".")
        while position >= 0:
            found = self.suffixes.get(host[position + 1 :])
            if found is not None:
                return found
            position = host.find(".", position + 1)
        return None


# A block for want of a valid approval: for a tenant-restricted service these pass with the header instead.
_LACKING = frozenset({Reason.NO_APPROVAL, Reason.APPROVAL_EXPIRED, Reason.APPROVAL_REVOKED, Reason.APPROVAL_SUSPENDED})


def restrict(
    decision: Decision,
    facts: RequestFacts,
    state: PolicyState,
    policy: TenantPolicy | None,
    settings: DecisionSettings,
    now: datetime,
) -> Decision:
    """Put the vendor's tenant restriction on a request to its hosts, unless this person may use personal accounts.

    A pass to a configured vendor's host gets `tenant`, except when the person is allowed personal accounts
    there: approved for a service of that vendor, exempt, or (on a vendor host that is no service's, such as
    accounts.google.com) holding a valid approval scoped to one of the vendor's services. A block for want of an
    approval, on a host of a service whose vendor is configured, becomes a pass with the header
    (`tenant-restricted`): the organisation's own tenant works, personal accounts are refused by the vendor.
    Forbidden, bad-request and policy-unavailable blocks are never touched.
    """
    if not policy:
        return decision
    if decision.action is Action.PASS:
        return _on_pass(decision, facts, state, policy, settings, now)
    if decision.reason not in _LACKING:
        return decision
    service = state.services.get(decision.service)
    injection = policy.match(facts.host)
    if service is None or injection is None or service.tenant != injection.vendor:
        return decision
    return _tenant_restricted(decision, injection.vendor)


def _on_pass(
    decision: Decision,
    facts: RequestFacts,
    state: PolicyState,
    policy: TenantPolicy,
    settings: DecisionSettings,
    now: datetime,
) -> Decision:
    injection = policy.match(facts.host)
    if injection is None or decision.reason is Reason.EXEMPT:
        return decision
    vendor = injection.vendor
    services = state.services
    if decision.reason is Reason.APPROVED:
        service = services.get(decision.service)
        if service is not None and service.tenant == vendor:
            return decision
    if decision.service is None and _holds_vendor_approval(facts, state, vendor, settings, now):
        return decision
    return _with_tenant(decision, vendor)


def _holds_vendor_approval(
    facts: RequestFacts, state: PolicyState, vendor: str, settings: DecisionSettings, now: datetime
) -> bool:
    """A valid approval scoped to any service whose tenant is this vendor (personal Gmail opens Google sign-in)."""
    services = state.services
    for approval in state.candidates(facts.user, facts.client_ip):
        service = services.get(approval.service) if approval.service else None
        if service is not None and service.tenant == vendor and approval.passes(now, settings.on_review_overdue):
            return True
    return False


# Decisions are immutable and few per host: the converted ones are made once each, not per request.
@lru_cache(maxsize=4096)
def _tenant_restricted(decision: Decision, vendor: str) -> Decision:
    return replace(decision, action=Action.PASS, reason=Reason.TENANT_RESTRICTED, tenant=vendor)


@lru_cache(maxsize=4096)
def _with_tenant(decision: Decision, vendor: str) -> Decision:
    return replace(decision, tenant=vendor)
