"""What a browser test's module-scoped stack holds: Redis, `clearance serve` with its portal, an origin, Squid."""

from __future__ import annotations

from dataclasses import dataclass

from tests.support.cli_zygote import run_clearance
from tests.support.icap_client import wait_until_synced
from tests.support.origin import OriginServer
from tests.support.squid import SquidProxy


@dataclass
class BrowserStack:
    redis_url: str
    env: dict[str, str]
    icap_port: int
    portal_port: int
    origin: OriginServer
    squid: SquidProxy
    portal_host: str = "127.0.0.1"  # the name browsers use for the portal (through Squid)

    def cli(self, *args: str) -> str:
        """`clearance ARGS`, which must succeed; returns once every worker follows the change."""
        result = run_clearance(args, self.env)  # a fork of the session's CLI zygote when there is one
        assert result.returncode == 0, result.stderr
        wait_until_synced(self.icap_port, self.redis_url)
        return result.stdout

    def url(self, host: str, path: str = "/") -> str:
        return f"http://{host}:{self.origin.port}{path}"

    @property
    def portal(self) -> str:
        return f"http://{self.portal_host}:{self.portal_port}"
