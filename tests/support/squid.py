"""A real Squid in front of an ICAP REQMOD service, for end-to-end tests.

    with OriginServer() as origin, SquidProxy(icap_port, ["mail.google.com"], tmp_path / "squid") as squid:
        result = squid.curl(f"http://mail.google.com:{origin.port}/hello", user="alice")

Squid runs in the foreground (`squid -N`), memory only, with basic proxy auth that accepts any
password, every request sent to `icap://127.0.0.1:{icap_port}/reqmod` (bypass=off, so an ICAP failure
is an HTTP error rather than a silent pass), and the given hostnames resolved to 127.0.0.1 through a
generated hosts file (there is no DNS here; any other name fails after `dns_timeout`).

With `backup_icap_ports`, each port gets an `icap_service` of its own (clearance_req, clearance_req_2, …, all
bypass=off) and `adaptation_access` names `adaptation_service_set clearance_set` instead: Squid uses the first
service and tries the next one when a transaction with it fails while the request is still intact; when all fail,
the client gets an error (fail closed).

Squid fetches the ICAP OPTIONS lazily, on the first request that needs the service, and when that
OPTIONS fetch fails the service stays "down" for at least 30 s. So the ICAP server must be accepting
connections before the first request: SquidProxy waits for the ICAP port before it starts Squid.
"""

from __future__ import annotations

import itertools
import os
import pwd
import re
import stat
import subprocess
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from .net import free_port, wait_for_port
from .processes import stop_group
from .requirements import require_program

SQUID_USER = "proxy"  # Debian's squid drops to this user when started as root
CURL_TIMEOUT = 20.0

_AUTH_HELPER = """#!/bin/sh
# Test-only basic auth helper: every "user password" line is accepted.
while read -r line; do
    echo OK
done
"""


@dataclass(frozen=True)
class CurlResult:
    """What the real curl binary saw through the proxy.

    status: final HTTP status (%{http_code}); 0 when there was none (e.g. a refused CONNECT).
    connect_status: the proxy's answer to CONNECT (%{http_connect}); 0 when no CONNECT was made.
    headers: the last header block curl saw, names lower-cased (repeats joined with ", ").
    raw_headers: everything curl's -D wrote (CONNECT answer, 100 Continue, final response).
    """

    status: int
    connect_status: int
    headers: dict[str, str]
    raw_headers: str
    body: bytes
    returncode: int
    stderr: str = field(repr=False)

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", errors="replace")


# The `logformat` README.md gives operators: Squid's native fields, then Clearance's decision for the request.
CLEARANCE_LOGFORMAT = (
    "%ts.%03tu %6tr %>a %Ss/%03>Hs %<st %rm %ru %[un %Sh/%<a %mt "
    "%{X-Clearance-Decision}adapt::<last_h %{X-Clearance-Reason}adapt::<last_h "
    "%{X-Clearance-Category}adapt::<last_h %{X-Clearance-Service}adapt::<last_h "
    "%{X-Clearance-Reference}adapt::<last_h"
)


def _parse_last_header_block(raw: str) -> dict[str, str]:
    blocks = [block for block in re.split(r"\r?\n\r?\n", raw) if block.strip()]
    if not blocks:
        return {}
    headers: dict[str, str] = {}
    for line in blocks[-1].splitlines()[1:]:  # skip the status line
        name, sep, value = line.partition(":")
        if not sep:
            continue
        key = name.strip().lower()
        value = value.strip()
        headers[key] = f"{headers[key]}, {value}" if key in headers else value
    return headers


def _tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return f"(no {path.name})"
    return "\n".join(text.splitlines()[-lines:])


def _proxy_ids() -> tuple[int, int] | None:
    """(uid, gid) Squid will run as, or None when we are not root (Squid then keeps our user)."""
    if os.geteuid() != 0:
        return None
    try:
        entry = pwd.getpwnam(SQUID_USER)
    except KeyError:  # pragma: no cover - Debian's squid package creates it
        raise RuntimeError(f"running as root but there is no {SQUID_USER!r} user for Squid") from None
    return entry.pw_uid, entry.pw_gid


def _make_traversable(path: Path) -> None:
    """Let other users (Squid's `proxy`) walk through every ancestor of path (pytest tmp dirs are 0700)."""
    for ancestor in [path, *path.parents]:
        mode = ancestor.stat().st_mode
        if not mode & stat.S_IXOTH:
            ancestor.chmod(stat.S_IMODE(mode) | stat.S_IXOTH)


class SquidProxy:
    """A Squid 5 forward proxy on 127.0.0.1:<free port> that sends every request to one ICAP REQMOD service.

    Attributes: port, url ("http://127.0.0.1:PORT"), workdir, conf_path, hosts_path, cache_log, access_log.
    """

    def __init__(
        self,
        icap_port: int,
        hostnames: list[str],
        workdir: Path,
        *,
        icap_host: str = "127.0.0.1",
        preview_size: int = 1024,
        extra_config: Sequence[str] = (),
        http_port_options: str = "",
        adaptation_rules: Sequence[str] = ("allow all",),
        start_timeout: float = 20.0,
        backup_icap_ports: Sequence[int] = (),
        icap_tls_cafile: Path | None = None,
    ) -> None:
        self.icap_port = icap_port
        self.backup_icap_ports = list(backup_icap_ports)  # services of the adaptation_service_set after icap_port
        self.icap_host = icap_host
        self.icap_tls_cafile = icap_tls_cafile  # ICAPS: icaps:// services that trust this CA (tls-cafile=)
        self.hostnames = list(hostnames)
        self.workdir = Path(workdir).resolve()
        self.preview_size = preview_size
        self.extra_config = list(extra_config)
        self.http_port_options = http_port_options  # e.g. "ssl-bump tls-cert=…" for TLS interception
        self.adaptation_rules = list(adaptation_rules)
        self.start_timeout = start_timeout
        self.port = 0
        self.conf_path = self.workdir / "squid.conf"
        self.hosts_path = self.workdir / "hosts"
        self.auth_helper_path = self.workdir / "basic_auth_any.sh"
        self.cache_log = self.workdir / "cache.log"
        self.access_log = self.workdir / "access.log"
        self.pid_path = self.workdir / "squid.pid"
        self.stdout_path = self.workdir / "squid.out"
        self._proc: subprocess.Popen[bytes] | None = None
        self._squid = ""
        self._curl_counter = itertools.count(1)
        self._curl_lock = threading.Lock()
        for name in self.hostnames:
            if not name or any(ch.isspace() for ch in name):
                raise ValueError(f"bad hostname for the hosts file: {name!r}")
        if any(ch.isspace() for ch in str(self.workdir)):
            raise ValueError(f"squid.conf cannot quote paths with spaces: {self.workdir}")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # --- configuration ----------------------------------------------------------------------------------

    def config_text(self) -> str:
        w = self.workdir
        lines = [
            "# Generated by tests/support/squid.py",
            f"http_port 127.0.0.1:{self.port} {self.http_port_options}".rstrip(),
            "visible_hostname clearance-test",
            f"pid_filename {self.pid_path}",
            f"cache_log {w / 'cache.log'}",
            # The README's logformat: Squid's usual fields, then what Clearance decided (its ICAP answer's headers).
            f"logformat clearance {CLEARANCE_LOGFORMAT}",
            f"access_log stdio:{w / 'access.log'} clearance",
            "cache_store_log none",
            "logfile_rotate 0",
            f"coredump_dir {w}",
            "shutdown_lifetime 0 seconds",
            # memory only, and nothing is ever served from cache: every request goes through ICAP
            "cache_mem 8 MB",
            "cache deny all",
            "netdb_filename none",
            "pinger_enable off",
            # no network beyond loopback: names come from our hosts file, anything else fails fast
            f"hosts_file {self.hosts_path}",
            "dns_nameservers 127.0.0.1",
            "dns_timeout 3 seconds",
            "dns_retransmit_interval 1 seconds",
            "check_hostnames off",
            # ICAP REQMOD
            "icap_enable on",
            "icap_send_client_ip on",
            "icap_send_client_username on",
            "icap_client_username_header X-Client-Username",
            "icap_client_username_encode off",
            "icap_persistent_connections on",
            "icap_preview_enable on",
            f"icap_preview_size {self.preview_size}",
            "icap_service_failure_limit -1",
            "icap_service_revival_delay 30",
            *self._icap_service_lines(),
            # basic proxy auth: any user, any password; CONNECT allowed to any port
            f"auth_param basic program {self.auth_helper_path}",
            "auth_param basic children 5 startup=1 idle=1",
            "auth_param basic realm clearance-test",
            "auth_param basic casesensitive on",
            "acl authed proxy_auth REQUIRED",
            "http_access allow authed",
            "http_access deny all",
        ]
        if os.geteuid() == 0:
            lines.insert(2, f"cache_effective_user {SQUID_USER}")
        lines.extend(self.extra_config)
        return "\n".join(lines) + "\n"

    @property
    def icap_ports(self) -> list[int]:
        """Every ICAP port Squid uses, in the order it tries them."""
        return [self.icap_port, *self.backup_icap_ports]

    def _icap_service_lines(self) -> list[str]:
        """One essential (bypass=off) REQMOD service per port; several make an adaptation_service_set.

        All essential on purpose: with bypass=on on the first, Squid bypassed a killed instance instead of
        trying the next, and blocked requests passed unfiltered (measured by tests/test_squid_failover.py's author).
        """
        names = ["clearance_req", *(f"clearance_req_{n}" for n in range(2, len(self.icap_ports) + 1))]
        scheme, tls = ("icaps", f" tls-cafile={self.icap_tls_cafile}") if self.icap_tls_cafile else ("icap", "")
        lines = [
            f"icap_service {name} reqmod_precache {scheme}://{self.icap_host}:{port}/reqmod bypass=off{tls}"
            for name, port in zip(names, self.icap_ports, strict=True)
        ]
        target = "clearance_req"
        if self.backup_icap_ports:
            target = "clearance_set"
            lines.append(f"adaptation_service_set {target} {' '.join(names)}")
        lines.extend(f"adaptation_access {target} {rule}" for rule in self.adaptation_rules)
        return lines

    def _write_files(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.hosts_path.write_text(
            "127.0.0.1 localhost\n" + "".join(f"127.0.0.1 {name}\n" for name in self.hostnames),
            encoding="ascii",
        )
        self.auth_helper_path.write_text(_AUTH_HELPER, encoding="ascii")
        self.auth_helper_path.chmod(0o755)
        self.conf_path.write_text(self.config_text(), encoding="utf-8")
        ids = _proxy_ids()
        if ids is not None:
            _make_traversable(self.workdir)
            for path in [self.workdir, *self.workdir.rglob("*")]:
                os.chown(path, *ids)

    def _parse_config(self) -> None:
        proc = subprocess.run(
            [self._squid, "-k", "parse", "-f", str(self.conf_path)],
            capture_output=True, text=True, timeout=30,
        )
        output = (proc.stdout + proc.stderr).strip()
        # `squid -k parse` exits 0 even after some FATAL lines, so look at the text as well
        problems = [
            line for line in output.splitlines()
            if re.search(r"FATAL|ERROR|unrecognized|Bungled", line)
        ]
        if proc.returncode != 0 or problems:
            raise RuntimeError(
                f"squid -k parse rejected {self.conf_path} (exit {proc.returncode}):\n"
                + "\n".join(problems or output.splitlines()[-30:])
            )

    # --- life cycle -------------------------------------------------------------------------------------

    def start(self) -> SquidProxy:
        self._squid = require_program("squid")
        for icap_port in self.icap_ports:
            try:
                wait_for_port(icap_port, host=self.icap_host, timeout=self.start_timeout)
            except TimeoutError:
                raise RuntimeError(
                    f"no ICAP server on {self.icap_host}:{icap_port}: start it before Squid "
                    "(Squid marks a service down for 30 s when its first OPTIONS fails)"
                ) from None
        for attempt in range(3):  # a free port can be taken between free_port() and Squid's bind
            self.port = free_port()
            self._write_files()
            self._parse_config()
            if self._launch(last_attempt=attempt == 2):
                return self
        raise AssertionError("unreachable")  # pragma: no cover

    def _launch(self, last_attempt: bool) -> bool:
        for stale in (self.cache_log, self.pid_path):
            stale.unlink(missing_ok=True)
        with self.stdout_path.open("wb") as out:
            self._proc = subprocess.Popen(
                [self._squid, "-N", "-f", str(self.conf_path)],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                cwd=self.workdir, start_new_session=True,
            )
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                log = _tail(self.cache_log)
                self._proc = None
                if not last_attempt and "Address already in use" in log:
                    return False
                raise RuntimeError(self._failure("squid exited during start-up", log))
            try:
                wait_for_port(self.port, timeout=0.2)
                return True
            except TimeoutError:
                continue
        self.stop()
        raise RuntimeError(self._failure(f"squid did not listen on {self.port} in {self.start_timeout}s"))

    def _failure(self, what: str, log: str | None = None) -> str:
        return (
            f"{what}\n--- cache.log (tail) ---\n{log if log is not None else _tail(self.cache_log)}"
            f"\n--- squid stdout/stderr ---\n{_tail(self.stdout_path, 20)}"
        )

    def stop(self) -> None:
        """SIGTERM Squid's whole group (its helpers too); fail if any of it outlives the deadline."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        survivors = stop_group(proc)
        if survivors:
            raise AssertionError("squid processes outlived SIGTERM (killed since):\n  " + "\n  ".join(survivors))

    def __enter__(self) -> SquidProxy:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def cache_log_text(self) -> str:
        return self.cache_log.read_text(encoding="utf-8", errors="replace") if self.cache_log.exists() else ""

    def access_log_lines(self) -> list[str]:
        """access.log lines, minus the empty-connection entries the start-up port probe leaves."""
        if not self.access_log.exists():
            return []
        lines = self.access_log.read_text(encoding="utf-8", errors="replace").splitlines()
        return [line for line in lines if "error:transaction-end-before-headers" not in line]

    # --- client -----------------------------------------------------------------------------------------

    def curl(
        self,
        url: str,
        user: str | None = "alice",
        method: str = "GET",
        data: bytes | None = None,
        extra: Sequence[str] = (),
        *,
        password: str = "anypass",
        timeout: float = CURL_TIMEOUT,
    ) -> CurlResult:
        """Run the real curl through this proxy (as `user`, any password; user=None sends no credentials).

        https:// URLs are tunnelled with CONNECT; the proxy's answer to it is `connect_status`.
        A non-zero curl exit (e.g. 56 when the CONNECT is refused) is returned, not raised.
        """
        curl = require_program("curl")
        with self._curl_lock:
            n = next(self._curl_counter)
        scratch = self.workdir / "curl"
        scratch.mkdir(exist_ok=True)
        body_path = scratch / f"{n}.body"
        headers_path = scratch / f"{n}.headers"
        args = [
            curl, "-s", "-S",
            "--proxy", self.url, "--noproxy", "",
            "-o", str(body_path), "-D", str(headers_path),
            "-w", "%{http_code} %{http_connect}",
            "--max-time", str(timeout),
        ]
        if user is not None:
            args += ["--proxy-user", f"{user}:{password}"]
        if method == "HEAD":
            args.append("--head")
        elif data is not None:
            data_path = scratch / f"{n}.data"
            data_path.write_bytes(data)
            args += ["--data-binary", f"@{data_path}"]
            if method != "POST":
                args += ["-X", method]
        elif method != "GET":
            args += ["-X", method]
        args += [*extra, url]
        env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
        proc = subprocess.run(args, capture_output=True, env=env, timeout=timeout + 10)
        codes = proc.stdout.decode("ascii", errors="replace").split()
        status = int(codes[0]) if codes and codes[0].isdigit() else 0
        connect_status = int(codes[1]) if len(codes) > 1 and codes[1].isdigit() else 0
        raw_headers = headers_path.read_text(encoding="latin-1") if headers_path.exists() else ""
        # with --head curl writes the headers to -o as well; a HEAD answer has no body
        body = body_path.read_bytes() if body_path.exists() and method != "HEAD" else b""
        return CurlResult(
            status=status,
            connect_status=connect_status,
            headers=_parse_last_header_block(raw_headers),
            raw_headers=raw_headers,
            body=body,
            returncode=proc.returncode,
            stderr=proc.stderr.decode("utf-8", errors="replace"),
        )
