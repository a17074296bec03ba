"""Redis or Valkey behind Sentinel: the `redis+sentinel://` URL, parsed, and the client that follows the master.

`redis+sentinel://[[user]:password@]host1:port1,host2:port2,…/MASTER[/DB][?ssl=true&sentinel_password=…]`
(`rediss+sentinel://` is the same with TLS, to the sentinels and to the master). The password is the
master's (and its replicas'); `sentinel_password` is the sentinels' own, when they ask for one.

The client asks the sentinels where the master is on every new connection, so after a failover a command
fails once (a connection error, or a READONLY one from a demoted master: both `StoreUnavailable`) and the
next connection goes to the promoted replica; a worker's sync resubscribes and reloads as after any outage.

Redis Cluster is not supported: the Lua scripts and the MULTI transactions touch keys of many kinds at once
(a list's generations and the `categories` hash, the version counter and the `changes` channel, the audit
stream), which a cluster allows only when every key shares one hash slot, i.e. one node: no gain.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import parse_qs, unquote, urlsplit

import redis.asyncio as aioredis
from redis.asyncio.sentinel import MasterNotFoundError, Sentinel

SCHEMES: Final = ("redis+sentinel", "rediss+sentinel")
CLUSTER_SCHEMES: Final = ("redis+cluster", "rediss+cluster")
SOCKET_TIMEOUT = 5.0  # seconds: a dead master's connection fails over rather than hanging
OPTIONS: Final = frozenset({"ssl", "sentinel_password"})


@dataclass(frozen=True)
class SentinelUrl:
    """The parts of a `redis+sentinel://` URL."""

    sentinels: tuple[tuple[str, int], ...]
    master: str
    db: int = 0
    username: str | None = None
    password: str | None = None
    sentinel_password: str | None = None
    ssl: bool = False


def is_sentinel_url(url: str) -> bool:
    return url.partition("://")[0].lower() in SCHEMES


def parse_sentinel_url(url: str) -> SentinelUrl:
    """The URL's parts; ValueError (never showing a password) for a malformed one."""
    parts = urlsplit(url)
    if parts.scheme.lower() not in SCHEMES:
        raise ValueError(f"expected a {' or '.join(f'{scheme}://' for scheme in SCHEMES)} URL")
    credentials, _, hosts = parts.netloc.rpartition("@")
    username, _, password = credentials.partition(":") if credentials else ("", "", "")
    path = [unquote(piece) for piece in parts.path.strip("/").split("/")] if parts.path.strip("/") else []
    if not path or not path[0] or len(path) > 2:
        raise ValueError("a sentinel URL names the master after the sentinels: …/MASTER or …/MASTER/DB")
    if len(path) == 2 and not path[1].isdigit():
        raise ValueError(f"the database must be a number, got {path[1]!r}")
    options = parse_qs(parts.query, keep_blank_values=True)
    unknown = sorted(set(options) - OPTIONS)
    if unknown:
        raise ValueError(f"unknown option {unknown[0]!r} (known: {', '.join(sorted(OPTIONS))})")
    ssl = parts.scheme.lower() == "rediss+sentinel" or options.get("ssl", ["false"])[-1].lower() in ("true", "1", "yes")
    return SentinelUrl(
        sentinels=tuple(_host_port(entry) for entry in hosts.split(",")),
        master=path[0],
        db=int(path[1]) if len(path) == 2 else 0,
        username=unquote(username) or None,
        password=unquote(password) or None,
        sentinel_password=options.get("sentinel_password", [""])[-1] or None,
        ssl=ssl,
    )


def _host_port(entry: str) -> tuple[str, int]:
    host, colon, port = entry.strip().rpartition(":")
    if not colon or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"expected each sentinel as host:port, got {entry!r}")
    return host.strip("[]"), int(port)


class _Sentinel(Sentinel):
    """redis-py's, with a one-line "no master" error (its own holds the repr of every sentinel's client)."""

    async def discover_master(self, service_name: str) -> tuple[str, int]:
        try:
            found: tuple[str, int] = await super().discover_master(service_name)
        except MasterNotFoundError as error:
            causes = _causes(error)
            addresses = ", ".join(_address(sentinel) for sentinel in self.sentinels)
            why = f" ({', '.join(sorted(causes))})" if causes else ""
            raise MasterNotFoundError(f"no master {service_name!r} from the sentinels at {addresses}{why}") from None
        return found


def _causes(error: MasterNotFoundError) -> set[str]:
    """The kinds of error redis-py names in its message, one per sentinel ("… - auth:AuthenticationError")."""
    return set(re.findall(r" - (?:\w+:)?(\w+Error)\b", str(error)))


def _address(client: aioredis.Redis) -> str:
    kwargs = client.connection_pool.connection_kwargs
    return f"{kwargs.get('host')}:{kwargs.get('port')}"


def sentinel_client(url: str) -> tuple[aioredis.Redis, tuple[aioredis.Redis, ...]]:
    """The client of the master the sentinels name, and the sentinels' own clients (to close with it)."""
    parts = parse_sentinel_url(url)
    tls: dict[str, Any] = {"ssl": True} if parts.ssl else {}
    timeouts = {"socket_timeout": SOCKET_TIMEOUT, "socket_connect_timeout": SOCKET_TIMEOUT}
    sentinel = _Sentinel(  # type: ignore[no-untyped-call]
        list(parts.sentinels),
        sentinel_kwargs={"password": parts.sentinel_password, **timeouts, **tls},
        **timeouts,
        **tls,
    )
    master = sentinel.master_for(
        parts.master,
        decode_responses=True,
        db=parts.db,
        username=parts.username,
        password=parts.password,
    )
    return master, tuple(sentinel.sentinels)
