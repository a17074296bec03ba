"""`clearance explain URL`: the decision `serve` would make for a URL, and why (approval, exemption or rule)."""

from __future__ import annotations

import argparse
import base64

from icap_server.admin.support import Commands, StoreAction
from icap_server.config import Config
from policy.store import PolicyStore


def register(commands: Commands) -> None:
    explain = commands.add_parser("explain", help="the decision for a URL and why (same path as serve)")
    explain.add_argument("url")
    explain.add_argument("--user")
    explain.add_argument("--client-ip")
    explain.set_defaults(handler=explain_command)


def explain_command(args: argparse.Namespace, config: Config) -> StoreAction:
    """The user name is sent as the proxy would send it (base64 if identity.username_encoding says so)."""
    from icap_server.service.explain import explain_request

    url = args.url if "://" in args.url else f"http://{args.url}/"
    user = args.user
    if user and config.identity.username_encoding == "base64":
        user = base64.b64encode(user.encode()).decode()

    async def action(store: PolicyStore) -> int:
        for line in await explain_request(config, store, url, user, args.client_ip):
            print(line)
        return 0

    return action
