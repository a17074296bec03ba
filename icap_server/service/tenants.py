"""The tenant-restriction policy the filter applies, built once from the config (None when nothing is set)."""

from __future__ import annotations

from icap_server.config.tenants import TenantRestrictionsConfig
from policy.tenants import TenantPolicy, TenantSettings


def tenant_policy(section: TenantRestrictionsConfig) -> TenantPolicy | None:
    """The configured vendors only; None when no vendor is configured, so the request path checks one attribute."""
    if not section.configured:
        return None
    google, microsoft, dropbox, slack = section.google, section.microsoft, section.dropbox, section.slack
    settings = TenantSettings(
        google_domains=google.domains if google else (),
        microsoft_tenants=microsoft.tenants if microsoft else (),
        microsoft_directory_id=microsoft.directory_id if microsoft else None,
        microsoft_policy_id=microsoft.policy_id if microsoft else None,
        microsoft_restrict_msa=microsoft.restrict_msa if microsoft else False,
        dropbox_team_ids=dropbox.team_ids if dropbox else (),
        slack_requester=slack.requester if slack else None,
        slack_workspaces=slack.workspaces if slack else (),
        zoom_policy=section.zoom.policy if section.zoom else None,
        webex_domains=section.webex.domains if section.webex else (),
        youtube_mode=section.youtube.mode if section.youtube else None,
    )
    policy = TenantPolicy(settings)
    return policy if policy else None
