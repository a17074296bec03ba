"""The embedded store is anchored to the configuration, and no admin command makes a second one silently."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from icap_server.admin.support import embedded_directory
from icap_server.config import load_config
from policy.store.embedded import stop_embedded_redis
from tests.support.cli_zygote import run_clearance

PROJECT_ROOT = Path(__file__).resolve().parent.parent
CONFIG = "policy:\n  load_default_lists: true\nlogging:\n  format: json\n"

pytestmark = pytest.mark.usefixtures("cli_zygote")  # `clearance()` runs in a fork of it


def clearance(cwd: Path, config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`clearance --config CONFIG ARGS…` run from `cwd`, with no Redis URL in the environment."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("CLEARANCE_")}
    env["PYTHONPATH"] = str(PROJECT_ROOT)
    return run_clearance(["--config", str(config), *args], env, cwd=cwd)  # a fork of the session's CLI zygote


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Path]:
    """A config file in a directory of its own; any embedded server started there is stopped afterwards."""
    home = tmp_path / "etc-clearance"
    home.mkdir()
    config = home / "clearance.yaml"
    config.write_text(CONFIG, encoding="utf-8")
    try:
        yield config
    finally:
        stop_embedded_redis(home / "var")


def test_the_data_directory_is_beside_the_config_file_not_in_the_working_directory(tmp_path: Path) -> None:
    config = tmp_path / "conf" / "clearance.yaml"
    config.parent.mkdir()
    config.write_text("redis:\n  embedded_dir: data\n", encoding="utf-8")
    assert embedded_directory(load_config(config)) == config.parent.resolve() / "data"
    config.write_text(f"redis:\n  embedded_dir: {tmp_path / 'abs'}\n", encoding="utf-8")
    assert embedded_directory(load_config(config)) == tmp_path / "abs"


def test_without_a_config_file_the_data_lives_in_the_named_place(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # no ./config.yaml here
    monkeypatch.delenv("CLEARANCE_CONFIG", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert embedded_directory(load_config()) == tmp_path / "xdg" / "clearance" / "var"
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    assert embedded_directory(load_config()) == Path("/var/lib/clearance/var")


def test_admin_commands_share_one_store_from_any_directory_and_never_make_a_second(
    site: Path, tmp_path: Path
) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    refused = clearance(elsewhere, site, "categories", "stats")
    assert refused.returncode == 2 and len(refused.stderr.splitlines()) == 1, refused.stderr
    assert "no embedded store in" in refused.stderr and str(site.parent / "var") in refused.stderr
    assert not (site.parent / "var").exists() and not (elsewhere / "var").exists()

    initialised = clearance(elsewhere, site, "store", "init")
    assert initialised.returncode == 0, initialised.stderr
    assert "initialised: epoch" in initialised.stdout and "webmail" in initialised.stdout
    assert (site.parent / "var" / "redis.sock").exists() and not (elsewhere / "var").exists()

    another = tmp_path / "another"
    another.mkdir()
    assert clearance(another, site, "categories", "add", "webmail", "mail.example").returncode == 0
    status = clearance(site.parent, site, "store", "status")
    assert status.returncode == 0 and "initialised" in status.stdout and str(site.parent / "var") in status.stdout
    assert "already initialised" in clearance(another, site, "store", "init").stdout

    stopped = clearance(another, site, "store", "stop")
    assert stopped.returncode == 0 and "stopped the embedded redis-server" in stopped.stdout
    # Stopped, the store is still there on disk: a command starts its server again, with the same data.
    lookup = clearance(another, site, "categories", "lookup", "mail.example")
    assert lookup.returncode == 0 and "webmail" in lookup.stdout, lookup.stderr
