"""Approving a service opens all of it, and only it (issue 10, acceptance 1), through a real server.

The shipped catalogue, a real `clearance serve`, real `clearance approvals grant --service`: one person per
service, two services of each restricted category. Every web, media and desktop host of the service (and a
subdomain of each), an address in each of its ranges (as a desktop client's `CONNECT`) and each of its path
entries must pass for that person and be blocked for everyone else; nothing of the other services passes.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from policy.hosts import is_ip_literal
from policy.services import Service, shipped_catalogue
from tests.conftest import CLI, ServerHandle, StartServer, cli_config_text
from tests.support.icap_client import exchange, reqmod, wait_until_synced
from tests.support.icap_grammar import parse_one

# Two services of each category: the guidelines' named ones first.
SERVICES = ("whatsapp", "wechat", "gmail", "outlook-com", "google-drive", "dropbox")
CATALOGUE = {service.id: service for service in shipped_catalogue()}


def probes(service: Service) -> list[tuple[str, str]]:
    """One REQMOD per thing the service's clients reach (the user is filled in per person)."""
    urls: list[tuple[str, str]] = []
    for host in (*service.web, *service.media, *service.desktop):
        if is_ip_literal(host):
            urls.append((f"https://{host}:443", "CONNECT"))
            continue
        urls += [(f"https://{host}/", "GET"), (f"https://client-7.{host}/sync", "GET")]
    for entry in service.ranges:
        network = ipaddress.ip_network(entry)
        address = network.network_address + min(7, network.num_addresses - 1)
        literal = f"[{address}]" if address.version == 6 else str(address)
        urls.append((f"https://{literal}:443", "CONNECT"))
    urls += [(f"https://{path.host}{path.path}x", "GET") for path in service.paths]
    return urls


def answers(server: ServerHandle, service: Service, user: str) -> dict[str, int]:
    """The HTTP status each probe ends in: 204/200 pass (0), a 403 block page (403)."""
    targets = probes(service)
    replies = exchange(server.port, *(reqmod(url, user, method=method) for url, method in targets))
    results = {}
    for (url, method), raw in zip(targets, replies, strict=True):
        response = parse_one(raw)
        blocked = response.status == 200 and (response.res_hdr or b"").startswith(b"HTTP/1.1 403")
        results[f"{method} {url}"] = 403 if blocked else 0
    return results


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    """The CLI's config: the shipped catalogue on, as the server's."""
    path = tmp_path / "clearance.yaml"
    path.write_text(cli_config_text(load_default_lists=True), encoding="utf-8")
    return path


def test_the_catalogue_entries_of_the_named_services_are_complete() -> None:
    for name in SERVICES:
        service = CATALOGUE[name]
        assert service.web and (service.media or service.desktop or service.ranges), name


def test_a_service_approval_opens_that_service_and_nothing_else(
    start_icap_server: StartServer, cli: CLI, redis_url: str
) -> None:
    server = start_icap_server("policy:\n  load_default_lists: true\nlogging:\n  format: json\n")
    wait_until_synced(server.port, redis_url)
    for name in SERVICES:  # nobody is approved yet: everything of every service is blocked
        unblocked = [probe for probe, status in answers(server, CATALOGUE[name], f"user-{name}").items() if not status]
        assert not unblocked, f"{name} not blocked: {unblocked}"
    for name in SERVICES:
        cli(
            "approvals", "grant", "--user", f"user-{name}", "--service", name, "--days", "30",
            "--approver", "head", "--justification", f"Liaison with partners who only use {name}",
        )
    wait_until_synced(server.port, redis_url)
    for name in SERVICES:
        for other in SERVICES:
            results = answers(server, CATALOGUE[other], f"user-{name}")
            if other == name:
                wrong = [probe for probe, status in results.items() if status]
                assert not wrong, f"user-{name} approved for {name} is still blocked: {wrong}"
            else:
                wrong = [probe for probe, status in results.items() if not status]
                assert not wrong, f"user-{name} approved for {name} reaches {other}: {wrong}"
    lines = [line for line in server.events("icap") if line.get("reason") == "approved"]
    assert lines and all(line["approval_id"] for line in lines)
