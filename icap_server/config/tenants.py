"""The `tenant_restrictions` section: the organisation's own tenants, per vendor, for the vendors' headers.

Every value here ends up inside an HTTP request header, so each is held to its vendor's shape (a domain name,
a GUID, a Slack id) and nothing else gets through: no CR, LF, comma or other control character can reach a
header line. A section left out means that vendor's requests are not touched.
"""

from __future__ import annotations

from typing import Annotated, Literal

from msgspec import Meta

from icap_server.config.types import Invalid, Section, wrong

# A DNS name of at least two labels (`example.com`, `fabrikam.onmicrosoft.com`), letters, digits and hyphens.
_DOMAIN = r"(?=.{1,253}\Z)(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}"
_GUID = r"[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}"

Domain = Annotated[str, wrong("expected a domain name such as example.com", pattern=rf"\A{_DOMAIN}\Z")]
Guid = Annotated[str, wrong("expected a GUID such as 72f988bf-86f1-41af-91ab-2d7cd011db47", pattern=rf"\A{_GUID}\Z")]
MicrosoftTenant = Annotated[
    str, wrong("expected a tenant domain or a tenant id (GUID)", pattern=rf"\A(?:{_DOMAIN}|{_GUID})\Z")
]
DropboxTeam = Annotated[
    str, wrong("expected a Dropbox team id such as dbtid:AAC1234", pattern=r"\A[A-Za-z0-9:_-]{1,128}\Z")
]
SlackId = Annotated[str, wrong("expected a Slack workspace or org id such as T0123ABCD", pattern=r"\A[A-Z0-9]{2,32}\Z")]
ZoomValue = Annotated[str, wrong("expected letters, digits, '.', '_' or '-'", pattern=r"\A[A-Za-z0-9._-]{1,256}\Z")]


class GoogleTenants(Section, frozen=True):
    """`X-GoogApps-Allowed-Domains`: the Workspace domains (primary and secondary) whose accounts may sign in."""

    domains: Annotated[tuple[Domain, ...], Meta(min_length=1, extra={"wrong": "give at least one domain"})]


class MicrosoftTenants(Section, frozen=True):
    """Entra tenant restrictions: v1 (`tenants` + `directory_id`), v2 (`policy_id`), personal accounts (MSA)."""

    tenants: tuple[MicrosoftTenant, ...] = ()  # v1 Restrict-Access-To-Tenants
    directory_id: Guid | None = None  # v1 Restrict-Access-Context; the tenant id in the v2 value
    policy_id: Guid | None = None  # v2: the tenant-restrictions policy id (cross-tenant access settings)
    restrict_msa: bool = False  # sec-Restrict-Tenant-Access-Policy: restrict-msa on login.live.com

    def __post_init__(self) -> None:
        if (self.tenants or self.policy_id) and self.directory_id is None:
            raise Invalid("required with tenants or policy_id", "directory_id")
        if self.directory_id and not (self.tenants or self.policy_id):
            raise Invalid("give tenants (v1) or policy_id (v2) with directory_id", "tenants", "policy_id")
        if not (self.tenants or self.policy_id or self.restrict_msa):
            raise Invalid("nothing to restrict: give tenants, policy_id or restrict_msa: true", "tenants")


class DropboxTenants(Section, frozen=True):
    team_ids: Annotated[tuple[DropboxTeam, ...], Meta(min_length=1, extra={"wrong": "give at least one team id"})]


class SlackTenants(Section, frozen=True):
    requester: SlackId  # X-Slack-Allowed-Workspaces-Requester: the organisation's own workspace or org id
    workspaces: Annotated[tuple[SlackId, ...], Meta(min_length=1, extra={"wrong": "give at least one id"})]


class ZoomTenants(Section, frozen=True):
    policy: ZoomValue  # X-ZoomApps-Policy (see policy/tenants.py: not confirmed from Zoom's own documentation)


class WebexTenants(Section, frozen=True):
    domains: Annotated[tuple[Domain, ...], Meta(min_length=1, extra={"wrong": "give at least one domain"})]


class YouTubeRestriction(Section, frozen=True):
    mode: Literal["strict", "moderate"] = "strict"


class TenantRestrictionsConfig(Section, frozen=True):
    """One optional entry per vendor; see README "Tenant restrictions" for the Squid ssl-bump it needs."""

    google: GoogleTenants | None = None
    microsoft: MicrosoftTenants | None = None
    dropbox: DropboxTenants | None = None
    slack: SlackTenants | None = None
    zoom: ZoomTenants | None = None
    webex: WebexTenants | None = None
    youtube: YouTubeRestriction | None = None

    @property
    def configured(self) -> bool:
        return any(getattr(self, name) is not None for name in self.__struct_fields__)
