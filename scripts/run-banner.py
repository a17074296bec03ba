"""`make run`'s banner, printed before `clearance serve` starts: where it listens, the store, the squid.conf lines.

Usage: run-banner.py [HOST:PORT]  (make's LISTEN; empty: the config's server.listen, as serve does).
It reads the config the way serve will ($CLEARANCE_CONFIG, ./config.yaml, built-in defaults) and never shows a
Redis password. A config that does not load prints one line here and leaves the full error to serve.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path


def shown_path(path: Path) -> str:
    """./var for a directory under the working directory, else the absolute path."""
    try:
        return f"./{path.resolve().relative_to(Path.cwd().resolve())}"
    except ValueError:
        return str(path)


def redact(url: str) -> str:
    """The URL with any user:password@ replaced by ***@."""
    scheme, sep, rest = url.partition("://")
    _credentials, at, location = rest.rpartition("@")
    return f"{scheme}{sep}{'***@' if at else ''}{location}" if sep else url


def squid_lines(host: str, port: int, username_header: str, username_encoding: str) -> list[str]:
    """README "Wiring it into Squid", pointed at host:port."""
    if host in ("", "0.0.0.0", "::"):  # listening everywhere: a Squid on this machine reaches it on loopback
        host = "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    return [
        "icap_enable on",
        "icap_send_client_ip on",
        "icap_send_client_username on",
        f"icap_client_username_header {username_header}",
        f"icap_client_username_encode {'on' if username_encoding == 'base64' else 'off'}",
        "icap_persistent_connections on",
        "icap_preview_enable on",
        f"icap_service clearance_req reqmod_precache icap://{host}:{port}/reqmod bypass=off",
        "adaptation_access clearance_req allow all",
    ]


def main(argv: list[str]) -> int:
    from icap_server.admin.support import embedded_directory
    from icap_server.config import ConfigError, load_config, parse_listen

    try:
        config = load_config()
    except ConfigError as error:
        print(f"make run: the config does not load ({error}); serve says more:", file=sys.stderr)
        return 0
    listen = (argv[0] if argv else "") or config.server.listen
    try:
        host, port = parse_listen(listen)
    except ValueError:
        return 0  # serve names the bad address
    source = config.source if not Path(config.source).is_file() else shown_path(Path(config.source))
    if config.redis.url:
        store = f"Redis at {redact(config.redis.url)}"
    else:
        store = f"embedded Redis in {shown_path(embedded_directory(config))}"
    everywhere = " (every address)" if host in ("", "0.0.0.0", "::") else ""
    admin = f"{os.environ.get('BIN', '.venv/bin')}/clearance --help"
    print(f"Clearance ICAP service: icap://{listen}/reqmod{everywhere}")
    print(f"Store: {store} (config: {source}; admin commands: {admin})")
    print('Add to squid.conf (README, "Wiring it into Squid"; Squid must also authenticate users):')
    for line in squid_lines(host, port, config.identity.username_header, config.identity.username_encoding):
        print(f"    {line}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
