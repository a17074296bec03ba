"""Secrets the settings name rather than hold: a file with the Redis URL or the SMTP password, and the URL's check.

A password given on the command line is shown by `ps` to every user of the machine, and one written in
config.yaml is read by everyone who may read the settings. So `redis.url_file` and `smtp.password_file` name a
file of its own (mode 0600, say) that holds the secret; `$CLEARANCE_REDIS_URL` is the other way. `settings.load_config`
calls `with_secrets`; `ConfigError` is defined here so that both raise it (the package re-exports it). Like
the rest of the package, this module imports nothing of ours.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qs, urlsplit

import msgspec

Settings = TypeVar("Settings")


class ConfigError(ValueError):
    """A configuration problem, naming the file and key (icap_server.config's error, defined here for this module)."""


def with_secrets(config: Settings, redis_url: str | None, directory: Path) -> Settings:
    """The Config with the Redis URL from --redis, $CLEARANCE_REDIS_URL or redis.url_file (in that order) and
    the SMTP password from smtp.password_file; ConfigError (one line) for a bad URL or an unreadable file.

    `config` is an icap_server.config.Config (untyped here: that module imports this one).
    """
    settings: Any = config
    redis, smtp = settings.redis, settings.smtp
    given = ((redis_url, "--redis"), (os.environ.get("CLEARANCE_REDIS_URL"), "$CLEARANCE_REDIS_URL"))
    url, where = next(((value, name) for value, name in given if value), (None, "redis.url"))
    if url is None and redis.url_file:
        url, where = read_secret(redis.url_file, directory, "redis.url_file"), "redis.url_file"
    if url is not None:
        redis = msgspec.structs.replace(redis, url=url, url_file=None)
    if redis.url:
        check_redis_url(redis.url, where)
    if smtp.password_file is not None:
        if smtp.password is not None:
            raise ConfigError("smtp.password and smtp.password_file: give one or the other")
        password = read_secret(smtp.password_file, directory, "smtp.password_file")
        smtp = msgspec.structs.replace(smtp, password=password, password_file=None)
    fresh: Settings = msgspec.structs.replace(settings, redis=redis, smtp=smtp)
    return fresh


def read_secret(name: str, directory: Path, key: str) -> str:
    """The secret a file holds (surrounding white space removed); a relative name is beside the config file."""
    path = Path(name) if Path(name).is_absolute() else directory / name
    try:
        text = path.read_text(encoding="utf-8").strip()
    except OSError as error:
        raise ConfigError(f"{key}: cannot read {str(path)!r}: {error.strerror or error}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{key}: {str(path)!r} is not UTF-8 text") from None
    if not text:
        raise ConfigError(f"{key}: {str(path)!r} is empty")
    return text


SENTINEL_SCHEMES = ("redis+sentinel", "rediss+sentinel")


def check_redis_url(url: str, where: str) -> None:
    """ValueError naming where the URL came from, unless redis-py can use it; its password is never shown."""
    scheme = url.partition("://")[0].lower()
    if scheme in SENTINEL_SCHEMES:
        return check_sentinel_url(url, where)
    if scheme in ("redis+cluster", "rediss+cluster"):
        raise ConfigError(
            f"{where}: Redis Cluster is not supported (the store's scripts and transactions span many keys); "
            "use one Redis or Valkey, or Sentinel (redis+sentinel://)"
        )
    try:
        parts = urlsplit(url)
        password = parts.password
        parts.port  # noqa: B018 -- raises ValueError for a port that is not a number in range
    except ValueError as error:
        raise ConfigError(f"{where}: not a valid URL ({error})") from None
    shown = url if password is None else url.replace(f":{password}@", ":***@", 1)
    if parts.scheme not in ("redis", "rediss", "unix"):
        raise ConfigError(f"{where}: expected a redis://, rediss:// or unix:// URL, got {shown!r}")
    if parts.scheme == "unix" and not parts.path:
        raise ConfigError(f"{where}: a unix:// URL names the socket's path, got {shown!r}")


def check_sentinel_url(url: str, where: str) -> None:
    """`redis+sentinel://[[user]:password@]host:port,…/MASTER[/DB][?ssl=true&sentinel_password=…]`: the shape
    `policy.store.sentinel.parse_sentinel_url` reads (repeated here: this package imports nothing of ours)."""
    parts = urlsplit(url)
    hosts = parts.netloc.rpartition("@")[2]
    path = parts.path.strip("/").split("/") if parts.path.strip("/") else []
    shown = f"{parts.scheme}://{'***@' if '@' in parts.netloc else ''}{hosts}{parts.path}"
    for entry in hosts.split(","):
        host, colon, port = entry.rpartition(":")
        if not colon or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigError(f"{where}: expected each sentinel as host:port, got {entry!r} in {shown!r}")
    if not path or not path[0] or len(path) > 2 or (len(path) == 2 and not path[1].isdigit()):
        raise ConfigError(f"{where}: a sentinel URL ends with /MASTER_NAME or /MASTER_NAME/DB, got {shown!r}")
    unknown = sorted(set(parse_qs(parts.query, keep_blank_values=True)) - {"ssl", "sentinel_password"})
    if unknown:
        raise ConfigError(f"{where}: unknown sentinel URL option {unknown[0]!r} (known: sentinel_password, ssl)")
