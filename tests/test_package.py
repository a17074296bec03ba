"""The Debian package and the container recipe (issue 13): `make deb` on a fresh clone builds a package; installed
on this machine it gives a `clearance` command, a unit that passes `systemd-analyze verify`, a `clearance` user,
and `clearance serve` run as that user from /etc/clearance/config.yaml answers OPTIONS; purged, it leaves the
machine as it found it.

The install test needs root and dpkg (this machine, CI): elsewhere it skips, with CI=true it fails. It takes
about three minutes, most of them `make deb` building the virtualenv. It builds from a fresh clone of HEAD, so
it tests what is committed; PACKAGE_FROM_WORKTREE=1 builds from a copy of the working tree instead (tracked
files and new ones not ignored), to try uncommitted changes.

The Dockerfile cannot be built here (no Docker daemon): its test checks the recipe statically, and that the
files its build stage copies are enough to build the same wheel as the whole tree.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import PROJECT_ROOT
from tests.support.icap_client import OPTIONS, exchange
from tests.support.net import free_port, wait_for_port
from tests.support.processes import snapshot, stop_group
from tests.support.requirements import require_program, unavailable
from tests.support.servers import fail_on_survivors
from tests.support.waiting import wait_until

VERSION = re.search(r'^version = "(.+)"$', (PROJECT_ROOT / "pyproject.toml").read_text(), re.M).group(1)  # type: ignore[union-attr]
CONFIG = "/etc/clearance/config.yaml"
UNIT = Path("/lib/systemd/system/clearance.service")
STORE = Path("/var/lib/clearance/var")
# Everything the package, its maintainer scripts and the service may create on the machine.
PATHS = [
    "/opt/clearance",
    "/etc/clearance",
    "/var/lib/clearance",
    "/var/log/clearance",
    "/usr/bin/clearance",
    str(UNIT),
    "/usr/share/doc/clearance",
]
SYSTEMD_STATE = [
    "/etc/systemd/system",
    "/var/lib/systemd/deb-systemd-helper-enabled",
    "/var/lib/systemd/deb-systemd-helper-masked",
]
# The package's commands run with a plain environment: nothing of this test's ($CLEARANCE_*, the venv) leaks in.
PLAIN_ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}


def machine_state() -> dict[str, object]:
    """What installing, running and purging the package may change: its paths, systemd's enablement state,
    the clearance user and group, and processes of that user."""
    state: dict[str, object] = {path: os.path.lexists(path) for path in PATHS}
    for top in SYSTEMD_STATE:
        state[top] = sorted(str(path) for path in Path(top).rglob("*")) if Path(top).exists() else None
    for database in ("/etc/passwd", "/etc/group", "/etc/shadow", "/etc/gshadow"):
        with contextlib.suppress(OSError):
            state[database] = [line.split(":")[0] for line in Path(database).read_text().splitlines()]
    state["dpkg"] = dpkg_status()
    return state


def dpkg_status() -> str:
    result = subprocess.run(["dpkg-query", "-W", "-f=${db:Status-Abbrev}", "clearance"], capture_output=True, text=True)
    return result.stdout.strip() if result.returncode == 0 else "not known"


def user_processes(name: str) -> list[str]:
    try:
        uid = pwd.getpwnam(name).pw_uid
    except KeyError:
        return []
    found = []
    for info in snapshot().values():
        with contextlib.suppress(OSError):
            if Path(f"/proc/{info.pid}").stat().st_uid == uid:
                found.append(str(info))
    return found


def run(command: list[str], timeout: float = 120, **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=PLAIN_ENV, **kwargs)  # type: ignore[call-overload, no-any-return]


def source_tree(target: Path, worktree: bool = False) -> Path:
    """A fresh clone of HEAD; with `worktree` (or PACKAGE_FROM_WORKTREE=1), a copy of the working tree's files."""
    if not worktree and os.environ.get("PACKAGE_FROM_WORKTREE", "") not in ("1", "true", "yes"):
        subprocess.run(["git", "clone", "-q", str(PROJECT_ROOT), str(target)], check=True, timeout=120)
        return target
    listed = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard"], cwd=PROJECT_ROOT, capture_output=True, text=True, check=True
    ).stdout.splitlines()
    for name in listed:
        source = PROJECT_ROOT / name
        if source.is_file() and not name.endswith(".so"):
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)
    return target


def purge_and_clean() -> list[str]:
    """dpkg --purge, then anything the package's scripts should have removed and did not; what had to be removed."""
    left = []
    if dpkg_status() != "not known":
        result = run(["dpkg", "--purge", "clearance"], timeout=120)
        if result.returncode != 0:
            left.append(f"dpkg --purge failed: {result.stdout}{result.stderr}")
    for line in user_processes("clearance"):
        left.append(f"process: {line}")
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(line.split()[1]), 9)
    with contextlib.suppress(KeyError):
        pwd.getpwnam("clearance")
        left.append("user clearance")
        run(["userdel", "clearance"])
    if run(["getent", "group", "clearance"]).returncode == 0:
        left.append("group clearance")
        run(["groupdel", "clearance"])
    for path in PATHS:
        if os.path.lexists(path):
            left.append(path)
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path)
            else:
                os.unlink(path)
    return left


@pytest.fixture
def package_machine() -> Iterator[dict[str, object]]:
    """Root on a machine without Clearance installed: the state to come back to, restored afterwards."""
    if os.geteuid() != 0:
        unavailable("installing the package needs root")
    for program in ("dpkg", "dpkg-deb", "systemd-analyze", "runuser", "make", "git", "adduser"):
        require_program(program)
    before = machine_state()
    if before["dpkg"] != "not known" or any(before[path] for path in PATHS):
        unavailable(f"Clearance is installed on this machine already ({before['dpkg']}); the test installs its own")
    if "clearance" in before.get("/etc/passwd", []):  # type: ignore[operator]
        unavailable("a user clearance exists already; the test creates (and removes) its own")
    try:
        yield before
    finally:
        left = purge_and_clean()
        assert not left, f"removed after dpkg --purge: {left}"


def test_make_deb_installs_a_service_that_answers_options(package_machine: dict[str, object], tmp_path: Path) -> None:
    tree = source_tree(tmp_path / "src")
    env = {key: value for key, value in os.environ.items() if not key.startswith("CLEARANCE_")}
    # As from a shell: not a sub-make of `make test` (MAKELEVEL makes make print "Entering directory").
    for key in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME", "MAKEFLAGS", "MAKELEVEL", "MFLAGS"):
        env.pop(key, None)

    # make deb: quiet (the build goes to a log), the last line the package's path.
    built = subprocess.run(["make", "deb"], cwd=tree, env=env, capture_output=True, text=True, timeout=1200)
    assert built.returncode == 0, built.stdout + built.stderr
    lines = built.stdout.strip().splitlines()
    assert len(lines) <= 3 and not built.stderr, built.stdout + built.stderr
    deb = tree / lines[-1]
    assert deb.name == f"clearance_{VERSION}_amd64.deb" and deb.is_file(), lines
    assert "Successfully installed" in (tree / "build" / "deb.log").read_text()
    info = run(["dpkg-deb", "--field", str(deb), "Package", "Version", "Depends"]).stdout
    assert "Package: clearance" in info and f"Version: {VERSION}" in info and "python3" in info, info
    contents = run(["dpkg-deb", "--contents", str(deb)]).stdout
    for member in ("./opt/clearance/bin/clearance", f"./{UNIT.relative_to('/')}", "./etc/clearance/config.yaml"):
        assert f" {member}" in contents, member
    assert " root/root " in contents and " clearance/" not in contents  # --root-owner-group: root's files
    assert run(["dpkg-deb", "--info", str(deb), "conffiles"]).stdout.split() == [CONFIG]

    installed = run(["dpkg", "-i", str(deb)], timeout=300)
    assert installed.returncode == 0, installed.stdout + installed.stderr
    assert dpkg_status() == "ii"

    # The command, on PATH and in the virtualenv, made with Debian's python3 and carrying the C quick scan.
    assert shutil.which("clearance", path=PLAIN_ENV["PATH"]) == "/usr/bin/clearance"
    for command in ("/usr/bin/clearance", "/opt/clearance/bin/clearance"):
        version = run([command, "--version"])
        assert version.returncode == 0 and version.stdout.strip() == f"clearance {VERSION}", version
    assert os.path.realpath("/opt/clearance/bin/python") == os.path.realpath("/usr/bin/python3")
    scan = run(
        ["/opt/clearance/bin/python", "-c", "from icap_server.protocol import quick_scan; print(quick_scan('x').name)"]
    )
    assert scan.stdout.strip() == "c", scan

    # The user, its directories, the configuration (root's, readable by the service only), the unit enabled.
    user = pwd.getpwnam("clearance")
    assert user.pw_uid < 1000 and user.pw_dir == "/var/lib/clearance" and user.pw_shell == "/usr/sbin/nologin"
    for directory in ("/var/lib/clearance", "/var/log/clearance"):
        stat = os.stat(directory)
        assert (stat.st_uid, stat.st_gid, stat.st_mode & 0o777) == (user.pw_uid, user.pw_gid, 0o750), directory
    stat = os.stat(CONFIG)
    assert (stat.st_uid, stat.st_gid, stat.st_mode & 0o777) == (0, user.pw_gid, 0o640)
    assert os.readlink("/etc/systemd/system/multi-user.target.wants/clearance.service") == str(UNIT)

    # The unit, as installed, passes systemd-analyze verify (offline: no systemd runs here).
    verify = run(["systemd-analyze", "verify", str(UNIT)])
    assert verify.returncode == 0 and "clearance" not in verify.stdout + verify.stderr, verify
    unit = UNIT.read_text()
    for setting in (
        "User=clearance",
        "ProtectSystem=strict",
        "NoNewPrivileges=yes",
        "ReadWritePaths=/var/lib/clearance /var/log/clearance",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "KillMode=mixed",
        f"ExecStart=/opt/clearance/bin/clearance --config {CONFIG} serve",
    ):
        assert f"\n{setting}\n" in unit, setting

    # serve as the service user from the packaged config (on a free port), as the unit starts it.
    port = free_port()
    log = (tmp_path / "serve.log").open("w")
    serve_command = ["/opt/clearance/bin/clearance", "--config", CONFIG, "serve", "--listen", f"127.0.0.1:{port}"]
    proc = subprocess.Popen(
        ["runuser", "-u", "clearance", "--", *serve_command],
        cwd="/var/lib/clearance",
        env=PLAIN_ENV,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    survivors: list[str] = []
    try:
        try:
            wait_for_port(port, timeout=120)  # the first start seeds the embedded store with the default lists
        except TimeoutError:
            log.flush()
            raise AssertionError((tmp_path / "serve.log").read_text()[-3000:]) from None
        (answer,) = exchange(port, OPTIONS)
        assert answer.startswith(b"ICAP/1.0 200 OK\r\n") and b"\r\nMethods: REQMOD\r\n" in answer, answer
        # The container's health check says the same.
        healthcheck = run(
            ["/opt/clearance/bin/python", str(tree / "packaging" / "icap-options.py"), f"127.0.0.1:{port}"]
        )
        assert healthcheck.returncode == 0, healthcheck.stderr

        # Everything runs as clearance: serve, its workers, the embedded store it started in /var/lib/clearance/var.
        serving = [line for line in user_processes("clearance") if "clearance" in line]
        assert any(" serve " in line for line in serving), serving
        pid = int((STORE / "redis.pid").read_text())
        assert Path(f"/proc/{pid}").stat().st_uid == user.pw_uid
        assert os.readlink(f"/proc/{pid}/exe").startswith("/opt/clearance/"), os.readlink(f"/proc/{pid}/exe")
        assert all(path.stat().st_uid == user.pw_uid for path in STORE.iterdir())
    finally:
        survivors = stop_group(proc)
        log.close()
        # The unit's ExecStopPost: the embedded store's server stops cleanly.
        stopped = run(
            ["runuser", "-u", "clearance", "--", "/opt/clearance/bin/clearance", "--config", CONFIG, "store", "stop"]
        )
    fail_on_survivors({"runuser clearance serve": survivors})
    assert stopped.returncode == 0 and "stopped the embedded redis-server" in stopped.stdout, stopped
    wait_until(lambda: not user_processes("clearance"), timeout=10, what="the clearance user's processes to exit")

    purged = run(["dpkg", "--purge", "clearance"], timeout=120)
    assert purged.returncode == 0, purged.stdout + purged.stderr
    assert machine_state() == package_machine


DOCKERFILE = PROJECT_ROOT / "packaging" / "Dockerfile"


def test_the_dockerfile_is_complete_and_its_build_stage_copies_enough_to_build_the_wheel(tmp_path: Path) -> None:
    """No Docker daemon here: the recipe is checked as text, and its build stage's COPY set is built as a wheel."""
    text = DOCKERFILE.read_text()
    stages = re.findall(r"^FROM (\S+)", text, re.M)
    assert stages and all(image == "python:3.11-slim-bookworm" for image in stages), stages
    final = text.rsplit("\nFROM ", 1)[1]
    assert re.search(r"^USER clearance$", final, re.M) and re.search(r"^EXPOSE 1344$", final, re.M)
    assert "HEALTHCHECK" in final and "icap-options.py" in final and "/etc/clearance/config.yaml" in final
    assert '"--listen", "0.0.0.0:1344"' in final  # the packaged config listens on loopback: not reachable from outside
    copies = re.findall(r"^COPY (?!--from)(.+) (\S+)$", text, re.M)
    for sources, _destination in copies:
        for source in sources.split():
            assert (PROJECT_ROOT / source).exists(), f"COPY {source}: not in the source tree"

    # The build stage's files alone (what the image builds from) make the same wheel as the working tree.
    build_stage = text.split("\nFROM ", 2)[1]
    context = tmp_path / "context"
    context.mkdir()
    for sources, _destination in re.findall(r"^COPY (?!--from)(.+) (\S+)$", build_stage, re.M):
        for source in sources.split():
            if (PROJECT_ROOT / source).is_dir():  # as packaging/Dockerfile.dockerignore leaves it
                shutil.copytree(
                    PROJECT_ROOT / source, context / source, ignore=shutil.ignore_patterns("__pycache__", "*.so")
                )
            else:
                shutil.copy2(PROJECT_ROOT / source, context / source)
    names = {}
    for label, tree in (("context", context), ("tree", source_tree(tmp_path / "tree", worktree=True))):
        built = subprocess.run(
            [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path / label), str(tree)],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert built.returncode == 0, built.stderr[-3000:]
        (wheel,) = (tmp_path / label).glob("clearance-*.whl")
        names[label] = sorted(zipfile.ZipFile(wheel).namelist())
    assert names["context"] == names["tree"]
    assert "policy/data/protected.txt" in names["context"]
