"""Headless Chromium for tests that look at pages the way a person's browser does."""

from __future__ import annotations

import subprocess
from pathlib import Path

from .requirements import require_program

FLAGS = [
    "--headless",
    "--no-sandbox",  # tests run as root
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",  # no network here; without these Chromium keeps trying
    "--disable-component-update",
    "--disable-sync",
]


def chromium(*args: str, workdir: Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    binary = require_program("chromium")
    profile = workdir / "chromium-profile"
    profile.mkdir(parents=True, exist_ok=True)
    return subprocess.run(
        [binary, *FLAGS, f"--user-data-dir={profile}", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def dump_dom(url: str, workdir: Path) -> str:
    """The DOM after Chromium loaded and laid out the page."""
    result = chromium("--dump-dom", url, workdir=workdir)
    if result.returncode != 0:
        raise AssertionError(f"chromium failed: {result.stderr[-2000:]}")
    return result.stdout


def screenshot(url: str, path: Path, workdir: Path, size: str = "1000,1100") -> Path:
    result = chromium(f"--screenshot={path}", f"--window-size={size}", url, workdir=workdir)
    if result.returncode != 0 or not path.exists():
        raise AssertionError(f"chromium screenshot failed: {result.stderr[-2000:]}")
    return path
