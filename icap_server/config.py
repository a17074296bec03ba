"""Configuration: a YAML file read into frozen dataclasses, checked key by key.

A mistake names the key and what is wrong with it (`server.listen: expected HOST:PORT, got 'abc'`), and
unknown keys are errors, because a misspelt key silently ignored is a policy silently not applied.
"""

from __future__ import annotations

import dataclasses
import os
import re
import types
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml

from policy.categories import validate_category
from policy.identity import IdentityRules
from policy.state import Exemption

DEFAULT_CONFIG_NAME = "config.yaml"


class ConfigError(ValueError):
    """A configuration problem, naming the file and key."""


@dataclass(frozen=True, slots=True)
class OrganisationConfig:
    name_en: str = "Your Department"
    name_zh: str = "貴部門"
    how_to_request_en: str = (
        "Ask the head of your department to approve access for a genuine business need; "
        "the IT helpdesk records the approval."
    )
    how_to_request_zh: str = "如因工作確實需要，請向部門主管申請批准；資訊科技服務台會記錄有關批准。"
    contact: str = "IT helpdesk"


@dataclass(frozen=True, slots=True)
class BlockPagesConfig:
    """How block pages look and whom they name; `organisation` holds the names and the how-to-request text."""

    default_language: Literal["en", "zh-HK"] = "en"  # when the browser's Accept-Language names neither
    template_dir: str | None = None  # the admins' own templates, used before the built-in ones
    logo: str | None = None  # PNG, JPEG or SVG, inlined into the page as a data: URI
    primary_colour: str = "#b91c1c"
    accent_colour: str = "#1d4ed8"
    contact_email: str | None = None
    contact_phone: str | None = None
    contact_url: str | None = None  # e.g. the helpdesk's intranet page
    policy_url: str | None = None  # the policy staff are asked to follow


@dataclass(frozen=True, slots=True)
class ServerConfig:
    listen: str = "127.0.0.1:1344"
    workers: int = 0
    max_header_bytes: int = 65536
    idle_timeout: float = 300.0
    request_timeout: float = 30.0
    max_connections: int = 1000
    options_ttl: int = 300
    startup_timeout: float = 60.0


@dataclass(frozen=True, slots=True)
class RedisConfig:
    url: str | None = None
    embedded_dir: str = "var"
    key_prefix: str = "clearance:"


@dataclass(frozen=True, slots=True)
class PolicyConfig:
    restricted_categories: tuple[str, ...] = ("webmail", "cloud-storage", "web-im")
    load_default_lists: bool = True
    timezone: str = "Asia/Hong_Kong"
    forbidden_categories: tuple[str, ...] = ()  # blocked for everyone: no approval or exemption opens them


@dataclass(frozen=True, slots=True)
class ApprovalsConfig:
    max_validity_days: int = 180
    review_interval_days: int = 90
    require_department_head: bool = True
    on_review_overdue: Literal["suspend", "warn"] = "suspend"
    min_justification_chars: int = 20
    usage_flush_interval: float = 5.0


@dataclass(frozen=True, slots=True)
class ExemptionConfig:
    network: str
    categories: tuple[str, ...] = ()
    note: str = ""


@dataclass(frozen=True, slots=True)
class PortalConfig:
    """The self-service access-request portal (an HTTP listener in the same program)."""

    listen: str | None = None  # HOST:PORT; unset: no portal, block pages carry no request form
    public_url: str | None = None  # how browsers reach it (default: http://LISTEN)
    token_ttl_minutes: int = 30
    secret: str | None = None  # signs request tokens; unset: generated once and kept in Redis
    trusted_proxies: tuple[str, ...] = ("127.0.0.1/32", "::1/128")


@dataclass(frozen=True, slots=True)
class SmtpConfig:
    """Where the portal sends access requests to department heads by e-mail; no host, no e-mail."""

    host: str | None = None
    port: int = 25
    sender: str = "clearance@localhost"
    starttls: bool = False  # upgrade with STARTTLS (and verify the relay's certificate) before sending
    username: str | None = None  # log in (only after STARTTLS, unless the relay is on this host)
    password: str | None = None
    timeout: float = 30.0


@dataclass(frozen=True, slots=True)
class LoggingConfig:
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["auto", "json", "console"] = "auto"


DEFAULT_CATEGORY_MAP: Mapping[str, str] = types.MappingProxyType(
    {"webmail": "webmail", "filehosting": "cloud-storage", "chat": "web-im"}
)


@dataclass(frozen=True, slots=True)
class ImportConfig:
    """`clearance categories import`: which categories of a third-party list (UT1, CSV) go where."""

    category_map: Mapping[str, str] = field(default_factory=lambda: DEFAULT_CATEGORY_MAP)
    only_mapped: bool = True


@dataclass(frozen=True, slots=True)
class Config:
    organisation: OrganisationConfig = field(default_factory=OrganisationConfig)
    blockpages: BlockPagesConfig = field(default_factory=BlockPagesConfig)
    server: ServerConfig = field(default_factory=ServerConfig)
    redis: RedisConfig = field(default_factory=RedisConfig)
    identity: IdentityRules = field(default_factory=IdentityRules)
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    approvals: ApprovalsConfig = field(default_factory=ApprovalsConfig)
    exemptions: tuple[ExemptionConfig, ...] = ()
    portal: PortalConfig = field(default_factory=PortalConfig)
    smtp: SmtpConfig = field(default_factory=SmtpConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    # `import` is a Python keyword: the YAML key is `import`, the attribute `import_`.
    import_: ImportConfig = field(default_factory=ImportConfig, metadata={"key": "import"})
    source: str = "built-in defaults"


def parse_listen(value: str) -> tuple[str, int]:
    """`HOST:PORT` (or `[v6]:PORT`) into its parts; ValueError with a readable message otherwise."""
    host, sep, port = value.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"expected HOST:PORT, got {value!r}")
    return host, int(port)


def load_config(path: str | os.PathLike[str] | None = None, redis_url: str | None = None) -> Config:
    """The config from `path`, else $CLEARANCE_CONFIG, else ./config.yaml if present, else defaults."""
    chosen = path or os.environ.get("CLEARANCE_CONFIG")
    if chosen is None and Path(DEFAULT_CONFIG_NAME).is_file():
        chosen = DEFAULT_CONFIG_NAME
    data: dict[str, Any] = {}
    source = "built-in defaults"
    if chosen is not None:
        source = str(chosen)
        try:
            text = Path(chosen).read_text(encoding="utf-8")
        except OSError as error:
            raise ConfigError(f"{source}: cannot read: {error.strerror or error}") from error
        try:
            loaded = yaml.safe_load(text)
        except yaml.YAMLError as error:
            raise ConfigError(f"{source}: not valid YAML: {error}") from error
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{source}: the top level must be a mapping of sections")
        data = loaded
    try:
        config: Config = _build(Config, {**data, "source": source}, "")
        _check(config)
    except ConfigError as error:
        raise ConfigError(f"{source}: {error}") from None
    if chosen is not None:
        config = _relative_to(config, Path(chosen).parent)
    url = redis_url or os.environ.get("CLEARANCE_REDIS_URL")
    if url:
        config = dataclasses.replace(config, redis=dataclasses.replace(config.redis, url=url))
    return config


def _relative_to(config: Config, directory: Path) -> Config:
    """Block-page files named relative to the config file are found there, whatever the working directory."""
    pages = config.blockpages
    template_dir, logo = (
        value if value is None or Path(value).is_absolute() else str(directory / value)
        for value in (pages.template_dir, pages.logo)
    )
    if (template_dir, logo) == (pages.template_dir, pages.logo):
        return config
    return dataclasses.replace(config, blockpages=dataclasses.replace(pages, template_dir=template_dir, logo=logo))


def static_exemptions(config: Config) -> tuple[Exemption, ...]:
    """The exemptions written in the config file (ids C1, C2, …; those in Redis are E1, E2, …)."""
    return tuple(
        Exemption(f"C{index}", item.network, frozenset(item.categories), item.note)
        for index, item in enumerate(config.exemptions, start=1)
    )


def _check(config: Config) -> None:
    """Checks that span more than one value's type."""
    import ipaddress

    for index, item in enumerate(config.exemptions):
        try:
            ipaddress.ip_network(item.network, strict=False)
        except ValueError:
            raise ConfigError(f"exemptions[{index}].network: not a network in CIDR form: {item.network!r}") from None
    if config.portal.listen is not None:
        try:
            parse_listen(config.portal.listen)
        except ValueError as error:
            raise ConfigError(f"portal.listen: {error}") from None
    if config.portal.token_ttl_minutes < 1:
        raise ConfigError("portal.token_ttl_minutes: must be at least 1")
    for index, network in enumerate(config.portal.trusted_proxies):
        try:
            ipaddress.ip_network(network, strict=False)
        except ValueError:
            raise ConfigError(f"portal.trusted_proxies[{index}]: not a network in CIDR form: {network!r}") from None
    if config.portal.public_url is not None and not config.portal.public_url.startswith(("http://", "https://")):
        raise ConfigError(f"portal.public_url: expected an http:// or https:// URL, got {config.portal.public_url!r}")
    smtp = config.smtp
    if not 0 < smtp.port < 65536:
        raise ConfigError(f"smtp.port: expected a port number, got {smtp.port}")
    if smtp.timeout <= 0:
        raise ConfigError("smtp.timeout: must be greater than 0 seconds")
    if "@" not in smtp.sender:
        raise ConfigError(f"smtp.sender: expected an e-mail address, got {smtp.sender!r}")
    if (smtp.username is None) != (smtp.password is None):
        raise ConfigError("smtp.username and smtp.password: give both or neither")
    approvals = config.approvals
    for name in ("max_validity_days", "review_interval_days"):
        if getattr(approvals, name) < 1:
            raise ConfigError(f"approvals.{name}: must be at least 1")
    if approvals.usage_flush_interval <= 0:
        raise ConfigError("approvals.usage_flush_interval: must be greater than 0 seconds")
    try:
        parse_listen(config.server.listen)
    except ValueError as error:
        raise ConfigError(f"server.listen: {error}") from None
    for key in ("restricted_categories", "forbidden_categories"):
        for index, name in enumerate(getattr(config.policy, key)):
            try:
                validate_category(name)
            except ValueError as error:
                raise ConfigError(f"policy.{key}[{index}]: {error}") from None
    _check_blockpages(config.blockpages)
    try:
        ZoneInfo(config.policy.timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(f"policy.timezone: unknown time zone {config.policy.timezone!r}") from None
    for source, target in config.import_.category_map.items():
        try:
            validate_category(target)
        except ValueError as error:
            raise ConfigError(f"import.category_map.{source}: {error}") from None
    if config.redis.url and not config.redis.url.startswith(("redis://", "rediss://", "unix://")):
        raise ConfigError(f"redis.url: expected a redis://, rediss:// or unix:// URL, got {config.redis.url!r}")
    if config.server.workers < 0:
        raise ConfigError("server.workers: must be 0 (one per core) or more")
    for name in ("max_header_bytes", "max_connections", "options_ttl"):
        if getattr(config.server, name) <= 0:
            raise ConfigError(f"server.{name}: must be greater than 0")
    for name in ("idle_timeout", "request_timeout", "startup_timeout"):
        if getattr(config.server, name) <= 0:
            raise ConfigError(f"server.{name}: must be greater than 0 seconds")


_COLOUR = re.compile(r"#[0-9a-fA-F]{6}")
_EMAIL = re.compile(r"[^@\s<>\"'()\[\],;:]+@[^@\s<>\"'()\[\],;:]+\.[^@\s<>\"'()\[\],;:]+")
_PHONE = re.compile(r"\+?[0-9][0-9 ()\-]{2,30}")


def _check_blockpages(pages: BlockPagesConfig) -> None:
    """Values that end up in the page's CSS and links: only harmless shapes (no javascript: link, no CSS)."""
    for name in ("primary_colour", "accent_colour"):
        value = getattr(pages, name)
        if not _COLOUR.fullmatch(value):
            raise ConfigError(f"blockpages.{name}: expected a colour as #rrggbb, got {value!r}")
    for name in ("contact_url", "policy_url"):
        value = getattr(pages, name)
        if value is not None and not re.fullmatch(r"https?://[^\s\"'<>`]+", value):
            raise ConfigError(f"blockpages.{name}: expected an http:// or https:// URL, got {value!r}")
    if pages.contact_email is not None and not _EMAIL.fullmatch(pages.contact_email):
        raise ConfigError(f"blockpages.contact_email: expected an e-mail address, got {pages.contact_email!r}")
    if pages.contact_phone is not None and not _PHONE.fullmatch(pages.contact_phone):
        raise ConfigError(
            f"blockpages.contact_phone: expected a phone number (digits, spaces, + - ( )), got {pages.contact_phone!r}"
        )


def _build(cls: type[Any], data: Any, path: str) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"{path or 'top level'}: expected a mapping, got {type(data).__name__}")
    hints = get_type_hints(cls)
    names = {item.metadata.get("key", item.name): item.name for item in dataclasses.fields(cls)}  # key -> field
    unknown = sorted(set(data) - set(names))
    if unknown:
        where = f"{path}." if path else ""
        raise ConfigError(f"{where}{unknown[0]}: unknown key (known: {', '.join(sorted(set(names) - {'source'}))})")
    values = {
        names[key]: _convert(hints[names[key]], value, f"{path}.{key}" if path else key) for key, value in data.items()
    }
    return cls(**values)


def _convert(hint: Any, value: Any, path: str) -> Any:
    origin = get_origin(hint)
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return _build(hint, value if value is not None else {}, path)
    if origin in (Union, types.UnionType):
        options = get_args(hint)
        if value is None and type(None) in options:
            return None
        (inner,) = [option for option in options if option is not type(None)]
        return _convert(inner, value, path)
    if origin is Literal:
        allowed = get_args(hint)
        if value not in allowed:
            raise ConfigError(f"{path}: expected one of {', '.join(map(str, allowed))}, got {value!r}")
        return value
    if origin is Mapping:
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: expected a mapping, got {type(value).__name__}")
        key_hint, value_hint = get_args(hint)
        converted = {}
        for key, item in value.items():
            name = _convert(key_hint, key, f"{path} key")
            converted[name] = _convert(value_hint, item, f"{path}.{name}")
        return types.MappingProxyType(converted)
    if origin is tuple:
        if not isinstance(value, list):
            raise ConfigError(f"{path}: expected a list, got {type(value).__name__}")
        (inner, _) = get_args(hint)
        return tuple(_convert(inner, item, f"{path}[{index}]") for index, item in enumerate(value))
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{path}: expected true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{path}: expected a whole number, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{path}: expected a number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{path}: expected text, got {value!r}")
        return value
    raise ConfigError(f"{path}: unsupported setting type {hint!r}")  # pragma: no cover
