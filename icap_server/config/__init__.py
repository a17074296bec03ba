"""Settings: `config.yaml` read into frozen, typed msgspec Structs — the one place defaults live.

A leaf: nothing here imports anything of ours, so every room may read settings and settings depend on none.
`types` holds the constrained value types, `settings` the Structs, their checks and `load_config`, `lists` the
`import` section; `secrets` reads the secrets a config names in
files of their own (`redis.url_file`, `smtp.password_file`) rather than holding them.
"""

from icap_server.config.lists import ImportConfig
from icap_server.config.secrets import ConfigError
from icap_server.config.settings import (
    ApprovalsConfig,
    BlockPagesConfig,
    Config,
    ExemptionConfig,
    IdentityConfig,
    LoggingConfig,
    OrganisationConfig,
    PolicyConfig,
    PortalConfig,
    RedisConfig,
    ServerConfig,
    SmtpConfig,
    load_config,
    parse_listen,
)
from icap_server.config.tenants import TenantRestrictionsConfig
from icap_server.config.types import (
    AtLeastOne,
    Category,
    Colour,
    Email,
    HttpUrl,
    PageUrl,
    Phone,
    Port,
    Positive,
    RedisUrl,
    Seconds,
    Sender,
    Workers,
)

__all__ = [
    "ApprovalsConfig",
    "AtLeastOne",
    "BlockPagesConfig",
    "Category",
    "Colour",
    "Config",
    "ConfigError",
    "Email",
    "ExemptionConfig",
    "HttpUrl",
    "IdentityConfig",
    "ImportConfig",
    "LoggingConfig",
    "OrganisationConfig",
    "PageUrl",
    "Phone",
    "PolicyConfig",
    "Port",
    "PortalConfig",
    "Positive",
    "RedisConfig",
    "RedisUrl",
    "Seconds",
    "Sender",
    "ServerConfig",
    "SmtpConfig",
    "TenantRestrictionsConfig",
    "Workers",
    "load_config",
    "parse_listen",
]
