"""Where the config comes from: --config, $CLEARANCE_CONFIG, ./config.yaml, /etc/clearance/config.yaml, in that
order (issue 13); and `clearance --version` / `python -m icap_server --version`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from icap_server import __version__
from icap_server.config import settings
from tests.conftest import PROJECT_ROOT


def named(folder: Path, name: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "config.yaml"
    path.write_text(f"organisation:\n  name_en: {name}\n", encoding="utf-8")
    return path


@pytest.fixture
def places(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    found = {
        "system": named(tmp_path / "etc", "system"),
        "here": named(tmp_path / "cwd", "here"),
        "env": named(tmp_path / "env", "env"),
        "given": named(tmp_path / "given", "given"),
    }
    monkeypatch.setattr(settings, "SYSTEM_CONFIG", found["system"])
    monkeypatch.chdir(tmp_path / "cwd")
    monkeypatch.setenv("CLEARANCE_CONFIG", str(found["env"]))
    return found


def name_of(path: str | None = None) -> str:
    return settings.load_config(path).organisation.name_en


def test_each_place_in_order(places: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    assert name_of(str(places["given"])) == "given"
    assert name_of() == "env"
    monkeypatch.delenv("CLEARANCE_CONFIG")
    assert name_of() == "here"
    places["here"].unlink()
    assert name_of() == "system"
    places["system"].unlink()
    assert name_of() == settings.Config().organisation.name_en  # the built-in defaults
    assert settings.find_config() is None


def test_a_relative_path_in_the_system_config_is_taken_from_etc(
    places: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CLEARANCE_CONFIG")
    places["here"].unlink()
    places["system"].write_text("blockpages:\n  template_dir: pages\n", encoding="utf-8")
    config = settings.load_config()
    assert Path(config.blockpages.template_dir or "") == places["system"].parent / "pages"


@pytest.mark.parametrize("command", [["-m", "icap_server"], ["-c", "from icap_server.admin.main import main; main()"]])
def test_version(command: list[str]) -> None:
    shown = subprocess.run(
        [sys.executable, *command, "--version"], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=60
    )
    assert shown.returncode == 0 and shown.stdout.strip() == f"clearance {__version__}", shown
