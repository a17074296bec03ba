"""Find external programs the tests need; skip without them locally, fail without them in CI."""

from __future__ import annotations

import os
import shutil
from typing import NoReturn

import pytest


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def require_program(name: str, *extra_dirs: str) -> str:
    """Path of program `name`; with CI=true a missing program fails the test instead of skipping it."""
    search = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin", *extra_dirs])
    path = shutil.which(name, path=search)
    if path:
        return path
    unavailable(f"{name} is not installed (make test installs it with apt-get when run as root)")


def unavailable(message: str) -> NoReturn:
    """What a test does without a part it needs: fail with CI=true (a skip is no pass), skip only locally."""
    if in_ci():
        pytest.fail(message)
    pytest.skip(message)
