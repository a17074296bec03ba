"""`clearance explain`: build the ICAP request Squid would send and run it through the server's own path."""

from __future__ import annotations

from datetime import UTC, datetime

from icap_server.config import Config
from icap_server.protocol import ICAPConnection, ICAPRequest
from icap_server.service.application import Application, FixedPolicy
from icap_server.service.catalogue import add_catalogue, shipped_services
from icap_server.service.exemptions import static_exemptions
from icap_server.service.sync import protected
from policy.categories import PROTECTED
from policy.hosts import request_host
from policy.state import PolicyState
from policy.store import PolicyStore


def synthetic_request(url: str, user: str | None, client_ip: str | None, username_header: str) -> bytes:
    """The bytes of a REQMOD for `GET url`, as Squid would send them."""
    host = url.split("://", 1)[-1].split("/", 1)[0].rpartition("@")[2]
    http = f"GET {url} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()
    icap = ["REQMOD icap://127.0.0.1/reqmod ICAP/1.0", "Host: 127.0.0.1", "Allow: 204"]
    if client_ip:
        icap.append(f"X-Client-IP: {client_ip}")
    if user:
        icap.append(f"{username_header}: {user}")
    icap.append(f"Encapsulated: req-hdr=0, null-body={len(http)}")
    return ("\r\n".join(icap) + "\r\n\r\n").encode() + http  # UTF-8, as Squid sends a non-ASCII name


async def served_state(config: Config, store: PolicyStore, host: str | None) -> PolicyState:
    """One host's part of the policy, completed as `PolicySync` completes every load: what serve would judge by.

    Only this host's list entries are read, not the whole index; the config's exemptions, the shipped service
    catalogue and the protected hosts are added as every worker adds them.
    """
    state = await store.state_for(host)
    state.exemptions = static_exemptions(config) + state.exemptions
    add_catalogue(state, shipped_services(config))
    state.categories.add(PROTECTED, protected(config))
    return state


async def explain_request(
    config: Config, store: PolicyStore, url: str, user: str | None, client_ip: str | None
) -> list[str]:
    conn = ICAPConnection()
    conn.receive_data(synthetic_request(url, user, client_ip, config.identity.username_header))
    request = conn.next_event()
    assert isinstance(request, ICAPRequest)
    assert request.http_request is not None
    host = request_host(request.http_request.method, request.http_request.target, None)
    state = await served_state(config, store, host)
    verdict = Application(config, FixedPolicy(state)).evaluate(request, datetime.now(UTC))
    decision = verdict.decision
    assert decision is not None
    entry = f" (list entry {decision.matched_entry})" if decision.matched_entry else ""
    if decision.reason == "protected":
        entry = f"{entry}: a protected host, never blocked by a list"
    approval = decision.approval_id or "-"
    if decision.approval_scope:
        approval = f"{decision.approval_id} ({decision.approval_scope})"
    return [
        f"decision:  {decision.action}",
        f"reason:    {decision.reason}",
        f"host:      {verdict.host or '-'}",
        f"category:  {decision.category or '-'}{entry}",
        f"service:   {_service(state, decision.service)}",
        f"user:      {verdict.identity.user or '-'}",
        f"client ip: {verdict.identity.client_ip or '-'}",
        f"approval:  {approval}",
        f"exemption: {decision.exemption_id or '-'}",
        f"rule:      {f'{decision.rule_id} ({decision.matched_entry})' if decision.rule_id else '-'}",
        f"mode:      {f'{decision.mode} (set by {decision.mode_by})' if decision.mode else '-'}",
    ]


def _service(state: PolicyState, service_id: str | None) -> str:
    service = state.services.get(service_id)
    return f"{service.id} ({service.name_en} / {service.name_zh})" if service is not None else "-"
