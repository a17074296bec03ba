"""Settings: a YAML file converted by msgspec into frozen, typed Structs — the one place defaults live.

A mistake names the key, the value and what is wrong (`server.listen: expected HOST:PORT, got 'abc'`), and
unknown keys are errors, because a misspelt key silently ignored is a policy silently not applied. Checks are
declared on the types (a `Meta` constraint carries the sentence a reader sees) or, where a value must be parsed
(listen addresses, networks, time zones) or two keys go together, made in a Struct's `__post_init__`. This
module is a leaf: it imports nothing of ours, so everything may depend on it and it on nothing.
"""

from __future__ import annotations

import ipaddress
import os
import re
import types
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Final, Literal, NamedTuple, Union, get_args, get_origin, get_type_hints
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import msgspec
import yaml
from msgspec import Meta

from icap_server.config.lists import ImportConfig
from icap_server.config.modes import ModesConfig
from icap_server.config.reminders import RemindersConfig
from icap_server.config.secrets import ConfigError as ConfigError  # re-exported: defined there for both
from icap_server.config.secrets import with_secrets
from icap_server.config.tenants import TenantRestrictionsConfig
from icap_server.config.types import (
    AtLeastOne,
    Category,
    Colour,
    Email,
    HostName,
    HttpUrl,
    Invalid,
    PageUrl,
    Phone,
    Port,
    Positive,
    RedisUrl,
    Seconds,
    Section,
    Sender,
    UsernameEncoding,
    Workers,
    wrong,
)

DEFAULT_CONFIG_NAME = "config.yaml"
SYSTEM_CONFIG = Path("/etc/clearance/config.yaml")  # where a packaged install keeps its config


class OrganisationConfig(Section, frozen=True):
    name_en: str = "Your Department"
    name_zh: str = "貴部門"
    how_to_request_en: str = (
        "Ask the head of your department to approve access for a genuine business need; "
        "the IT helpdesk records the approval."
    )
    how_to_request_zh: str = "如因工作確實需要，請向部門主管申請批准；資訊科技服務台會記錄有關批准。"
    contact: str = "IT helpdesk"


class BlockPagesConfig(Section, frozen=True):
    """How block pages look and whom they name; `organisation` holds the names and the how-to-request text."""

    default_language: Literal["en", "zh-HK"] = "en"  # when the browser's Accept-Language names neither
    template_dir: str | None = None  # the admins' own templates, used before the built-in ones
    logo: str | None = None  # PNG, JPEG or SVG, inlined into the page as a data: URI
    primary_colour: Colour = "#b91c1c"
    accent_colour: Colour = "#1d4ed8"
    contact_email: Email | None = None
    contact_phone: Phone | None = None
    contact_url: PageUrl | None = None  # e.g. the helpdesk's intranet page
    policy_url: PageUrl | None = None  # the policy staff are asked to follow


class ServerConfig(Section, frozen=True):
    listen: str = "127.0.0.1:1344"
    workers: Workers = 0
    max_header_bytes: Positive = 65536
    max_header_fields: Positive = 100  # per header block: the ICAP head, each HTTP head, the trailers
    max_preview_bytes: Positive = 65536  # largest announced Preview (a preview is held until the answer)
    idle_timeout: Seconds = 300.0
    header_timeout: Seconds = 10.0  # from a message's first byte to the end of its heads
    request_timeout: Seconds = 30.0  # from a message's first byte to its end (see min_body_rate)
    min_body_rate: Positive = 8192  # bytes/s: a body sent at least this fast may take longer than request_timeout
    max_connections: Positive = 1000
    options_ttl: Positive = 300
    startup_timeout: Seconds = 60.0
    # ICAPS (ICAP over TLS): both set, the listener speaks TLS with this certificate chain and key (PEM files,
    # relative to the config file); both empty, plain ICAP (the default, for a Squid on the same machine).
    tls_cert: str = ""
    tls_key: str = ""

    def __post_init__(self) -> None:
        _check_listen(self.listen, "listen")
        if bool(self.tls_cert) != bool(self.tls_key):
            raise Invalid("set both tls_cert and tls_key, or neither", "tls_key" if self.tls_cert else "tls_cert")


class MetricsConfig(Section, frozen=True):
    """The admin HTTP listener: Prometheus `/metrics`, `/healthz` and `/readyz` ("" = off)."""

    listen: str = ""
    ready_max_age_seconds: Seconds = 30.0  # /readyz fails when a worker has not heard from the store for longer

    def __post_init__(self) -> None:
        if self.listen:
            _check_listen(self.listen, "listen")


class RedisConfig(Section, frozen=True):
    url: RedisUrl | None = None
    url_file: str | None = None  # a file holding the URL (and its password), read when no URL is given
    embedded_dir: str = "var"
    key_prefix: str = "clearance:"


class IdentityConfig(Section, frozen=True):
    """How the user is read from the proxy's headers; `policy.identity.IdentityRules` names these four."""

    username_header: str = "X-Client-Username"
    username_encoding: UsernameEncoding = "auto"
    strip_domain: bool = True
    lowercase: bool = True


class PolicyConfig(Section, frozen=True):
    restricted_categories: tuple[Category, ...] = ("webmail", "cloud-storage", "web-im")
    load_default_lists: bool = True
    timezone: str = "Asia/Hong_Kong"
    forbidden_categories: tuple[Category, ...] = ()  # blocked for everyone: no approval or exemption opens them
    protected_hosts: tuple[HostName, ...] = ()  # never blocked by a list, beside policy/data/protected.txt

    def __post_init__(self) -> None:
        try:
            ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise Invalid(f"unknown time zone {self.timezone!r}", "timezone") from None


class ApprovalsConfig(Section, frozen=True):
    max_validity_days: AtLeastOne = 180
    review_interval_days: AtLeastOne = 90
    require_department_head: bool = True
    on_review_overdue: Literal["suspend", "warn"] = "suspend"
    min_justification_chars: int = 20
    usage_flush_interval: Seconds = 5.0
    admins: tuple[str, ...] = ()  # may revoke or suspend any approval (besides its approver, heads, delegates)


class ExemptionConfig(Section, frozen=True):
    network: str
    categories: tuple[str, ...] = ()
    note: str = ""

    def __post_init__(self) -> None:
        _check_network(self.network, "network")


class PortalConfig(Section, frozen=True):
    """The self-service access-request portal (an HTTP listener in the same program)."""

    listen: str | None = None  # HOST:PORT; unset: no portal, block pages carry no request form
    public_url: HttpUrl | None = None  # how browsers reach it (default: http://LISTEN)
    token_ttl_minutes: AtLeastOne = 30
    secret: str | None = None  # signs request tokens; unset: generated once and kept in Redis
    trusted_proxies: tuple[str, ...] = ("127.0.0.1/32", "::1/128")
    max_pending_per_user: AtLeastOne = 3  # a user's pending requests at once
    max_submits_per_minute: AtLeastOne = 10  # form posts per user and per client address (in memory, per portal)
    digest_interval_minutes: Annotated[float, wrong("must be 0 (each mail at once) or more", ge=0)] = 15.0
    identity_header: str = "X-Clearance-User"  # the heads' workspace: the user Squid adds (from trusted_proxies)
    link_ttl_minutes: AtLeastOne = 120  # a single-use link in a head's e-mail works this long
    expiring_within_days: AtLeastOne = 14  # the workspace lists reviews due and approvals ending this soon
    auditors: tuple[str, ...] = ()  # users who may see /report for every department (heads see their own)
    reminders: RemindersConfig = msgspec.field(default_factory=RemindersConfig)  # the heads' digest, notes

    def __post_init__(self) -> None:
        if self.listen is not None:
            _check_listen(self.listen, "listen")
        for index, network in enumerate(self.trusted_proxies):
            _check_network(network, f"trusted_proxies[{index}]")
        if not re.fullmatch(r"[A-Za-z0-9-]{1,64}", self.identity_header):
            raise Invalid("must be an HTTP header name (letters, digits, -)", "identity_header")


class SmtpConfig(Section, frozen=True):
    """Where the portal sends access requests to department heads by e-mail; no host, no e-mail."""

    host: str | None = None
    port: Port = 25
    sender: Sender = "clearance@localhost"
    starttls: bool = False  # upgrade with STARTTLS (and verify the relay's certificate) before sending
    username: str | None = None  # log in (only after STARTTLS, unless the relay is on this host)
    password: str | None = None
    password_file: str | None = None  # a file holding the password, instead of `password`
    timeout: Seconds = 30.0

    def __post_init__(self) -> None:
        if (self.username is None) != (self.password is None and self.password_file is None):
            raise Invalid("give both or neither", "username", "password")


class LoggingConfig(Section, frozen=True):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["auto", "json", "console"] = "auto"
    file: str = ""  # serve's lines (access and events) appended here, reopened on SIGUSR1; "": stdout


class Config(Section, frozen=True):
    """The whole configuration: one Struct per section of the file; `source` names the file it came from."""

    organisation: OrganisationConfig = msgspec.field(default_factory=OrganisationConfig)
    blockpages: BlockPagesConfig = msgspec.field(default_factory=BlockPagesConfig)
    server: ServerConfig = msgspec.field(default_factory=ServerConfig)
    redis: RedisConfig = msgspec.field(default_factory=RedisConfig)
    identity: IdentityConfig = msgspec.field(default_factory=IdentityConfig)
    policy: PolicyConfig = msgspec.field(default_factory=PolicyConfig)
    approvals: ApprovalsConfig = msgspec.field(default_factory=ApprovalsConfig)
    exemptions: tuple[ExemptionConfig, ...] = ()
    portal: PortalConfig = msgspec.field(default_factory=PortalConfig)
    smtp: SmtpConfig = msgspec.field(default_factory=SmtpConfig)
    logging: LoggingConfig = msgspec.field(default_factory=LoggingConfig)
    metrics: MetricsConfig = msgspec.field(default_factory=MetricsConfig)
    # `import` is a Python keyword: the YAML key is `import`, the attribute `import_`.
    import_: ImportConfig = msgspec.field(default_factory=ImportConfig, name="import")
    tenant_restrictions: TenantRestrictionsConfig = msgspec.field(default_factory=TenantRestrictionsConfig)
    modes: ModesConfig = msgspec.field(default_factory=ModesConfig)  # roll-out: enforce, monitor or caution
    source: str = "built-in defaults"  # the file read, for messages; not a key of the file


def parse_listen(value: str) -> tuple[str, int]:
    """`HOST:PORT` (or `[v6]:PORT`) into its parts; ValueError with a readable message otherwise."""
    host, sep, port = value.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"expected HOST:PORT, got {value!r}")
    return host, int(port)


def _check_listen(value: str, key: str) -> None:
    try:
        parse_listen(value)
    except ValueError as error:
        raise Invalid(str(error), key) from None


def _check_network(value: str, key: str) -> None:
    try:
        ipaddress.ip_network(value, strict=False)
    except ValueError:
        raise Invalid(f"not a network in CIDR form, got {value!r}", key) from None


def find_config(path: str | os.PathLike[str] | None = None) -> str | os.PathLike[str] | None:
    """Which config file: --config, $CLEARANCE_CONFIG, ./config.yaml, /etc/clearance/config.yaml; None: defaults."""
    chosen = path or os.environ.get("CLEARANCE_CONFIG")
    if chosen is None:
        chosen = next((str(found) for found in (Path(DEFAULT_CONFIG_NAME), SYSTEM_CONFIG) if found.is_file()), None)
    return chosen


def load_config(path: str | os.PathLike[str] | None = None, redis_url: str | None = None) -> Config:
    """The config from the file `find_config` chooses, else the defaults."""
    chosen = find_config(path)
    source = "built-in defaults" if chosen is None else str(chosen)
    data = {} if chosen is None else _read(Path(chosen), source)
    try:
        config = _convert(data, source)
    except ConfigError as error:
        raise ConfigError(f"{source}: {error}") from None
    if chosen is not None:
        config = _relative_to(config, Path(chosen).parent)
    # The Redis URL from --redis, $CLEARANCE_REDIS_URL or redis.url_file; the SMTP password from its file.
    return with_secrets(config, redis_url, Path(chosen).parent if chosen is not None else Path("."))


def _read(path: Path, source: str) -> dict[str, Any]:
    """The file's mapping of sections; ConfigError (one line) if it cannot be read or is not that."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise ConfigError(f"{source}: cannot read: {error.strerror or error}") from error
    try:
        loaded = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ConfigError(f"{source}: not valid YAML: {_yaml_problem(error)}") from error
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"{source}: the top level must be a mapping of sections")
    return loaded


def _yaml_problem(error: yaml.YAMLError) -> str:
    """PyYAML's message spans lines (with a snippet); the line and column and the problem fit on one."""
    mark = getattr(error, "problem_mark", None)
    problem = getattr(error, "problem", None)
    if mark is None or problem is None:
        return " ".join(str(error).split())
    return f"line {mark.line + 1}, column {mark.column + 1}: {problem}"


def _convert(data: dict[str, Any], source: str) -> Config:
    """A section given with nothing under it (`server:`) takes its defaults, as an absent one does."""
    sections = {key for key, hint in _keys(Config).items() if _is_struct(hint)}
    present = {key: value for key, value in data.items() if value is not None or key not in sections}
    try:
        return msgspec.convert({**present, "source": source}, Config, strict=True)
    except msgspec.ValidationError as error:
        raise ConfigError(_explain(error, present)) from None


def _relative_to(config: Config, directory: Path) -> Config:
    """Files named relative to the config file (block-page templates and logo, the log file) are found there,
    whatever the working directory."""
    pages = config.blockpages
    template_dir, logo = (
        value if value is None or Path(value).is_absolute() else str(directory / value)
        for value in (pages.template_dir, pages.logo)
    )
    server = config.server
    if server.tls_cert:  # both or neither (ServerConfig); an absolute path stays as it is
        tls = {"tls_cert": str(directory / server.tls_cert), "tls_key": str(directory / server.tls_key)}
        config = msgspec.structs.replace(config, server=msgspec.structs.replace(server, **tls))
    log_file = config.logging.file
    if log_file and not Path(log_file).is_absolute():
        config = msgspec.structs.replace(
            config, logging=msgspec.structs.replace(config.logging, file=str(directory / log_file))
        )
    if (template_dir, logo) == (pages.template_dir, pages.logo):
        return config
    return msgspec.structs.replace(
        config, blockpages=msgspec.structs.replace(pages, template_dir=template_dir, logo=logo)
    )


# Turning msgspec's message (`Expected `int`, got `str` - at `$.server.workers``) into this file's words: the
# key as written in YAML, the value found there, and what the key's type says is expected.

_AT = re.compile(r"(?P<text>.*?)(?: - at `(?P<in_key>key` in `)?\$(?P<path>[^`]*)`)?", re.DOTALL)
_STEP = re.compile(r"\.([^.\[]+)|\[(\d+|\.\.\.)\]")
_WORDS: Final[Mapping[Any, str]] = {bool: "true or false", int: "a whole number", float: "a number", str: "text"}


class _Spot(NamedTuple):
    key: str  # `server.workers`, `exemptions[0]`, `import.category_map.chat`, `import.category_map key`
    value: Any
    hint: Any  # the type declared there, Annotated constraints included


def _explain(error: msgspec.ValidationError, data: dict[str, Any]) -> str:
    """One line: `key: what is wrong, got VALUE` (the caller puts the file name in front)."""
    match = _AT.fullmatch(str(error))
    assert match is not None  # every string matches: the location part is optional
    text = match["text"]
    spot = _locate(Config, data, _STEP.findall(match["path"] or ""), in_key=bool(match["in_key"]))
    cause = error.__cause__
    if isinstance(cause, Invalid):
        return f"{' and '.join(_join(spot.key, key) for key in cause.keys)}: {cause.message}"
    if unknown := re.match(r"Object contains unknown field `(.*)`", text):
        known = ", ".join(sorted(set(_keys(_bare(spot.hint))) - {"source"}))
        return f"{_join(spot.key, unknown[1])}: unknown key (known: {known})"
    if missing := re.match(r"Object missing required field `(.*)`", text):
        return f"{_join(spot.key, missing[1])}: missing, and it is required"
    if match["in_key"] or ", got `" in text or text.startswith("Invalid enum value"):
        return f"{spot.key}: expected {_expected(spot.hint)}, got {_shown(spot.value)}"
    return f"{spot.key}: {_sentence(spot.hint) or text}, got {_shown(spot.value)}"


def _locate(hint: Any, value: Any, steps: list[tuple[str, str]], in_key: bool) -> _Spot:
    """Follow msgspec's path (`.name`, `[0]`, `[...]` for a mapping's entry) through the types and the data."""
    key = ""
    for name, index in steps:
        bare = _bare(hint)
        if name:
            hint, value, key = _keys(bare)[name], value.get(name), _join(key, name)
        elif index == "...":  # msgspec does not say which entry of a mapping: the first that fails alone
            entry = next(item for item in value if not _converts({item: value[item]}, hint))
            hint, value, key = get_args(bare)[1], value[entry], _join(key, str(entry))
        else:
            hint, value, key = get_args(bare)[0], value[int(index)], f"{key}[{index}]"
    if in_key:  # every mapping of settings is keyed by text
        return _Spot(
            f"{key} key" if key else "top-level key", next(item for item in value if not isinstance(item, str)), str
        )
    return _Spot(key, value, hint)


def _converts(value: Any, hint: Any) -> bool:
    try:
        msgspec.convert(value, hint, strict=True)
    except msgspec.ValidationError:
        return False
    return True


def _keys(struct: type[msgspec.Struct]) -> dict[str, Any]:
    """A Struct's fields as YAML keys (`import`, not `import_`) with their declared types."""
    hints = get_type_hints(struct, include_extras=True)
    return {
        key: hints[name] for name, key in zip(struct.__struct_fields__, struct.__struct_encode_fields__, strict=True)
    }


def _is_struct(hint: Any) -> bool:
    return isinstance(hint, type) and issubclass(hint, msgspec.Struct)


def _optional(hint: Any) -> Any:
    """`X | None` as `X`: None is always allowed there, so what is expected is X."""
    if get_origin(hint) in (Union, types.UnionType):
        (hint,) = [option for option in get_args(hint) if option is not type(None)]
    return hint


def _bare(hint: Any) -> Any:
    hint = _optional(hint)
    return get_args(hint)[0] if get_origin(hint) is Annotated else hint


def _sentence(hint: Any) -> str | None:
    """The sentence a constrained type carries (see `types.wrong`), if it has one."""
    hint = _optional(hint)
    metadata = get_args(hint)[1:] if get_origin(hint) is Annotated else ()
    return next((meta.extra["wrong"] for meta in metadata if isinstance(meta, Meta) and meta.extra), None)


def _expected(hint: Any) -> str:
    bare = _bare(hint)
    if get_origin(bare) is Literal:
        return "one of " + ", ".join(map(str, get_args(bare)))
    if get_origin(bare) is tuple:
        return "a list"
    if get_origin(bare) is Mapping or _is_struct(bare):
        return "a mapping"
    return _WORDS.get(bare, str(bare))


def _join(key: str, name: str) -> str:
    return f"{key}.{name}" if key else name


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else f"{text[:77]}..."
