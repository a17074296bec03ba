"""The shape of the code base, checked like behaviour: sizes, layering contracts, and the map in docs/.

Each of these failed once in review before it was a test: files grew past what one reader holds in mind, a
room imported the one above it, and the architecture document named functions that had been renamed.
"""

from __future__ import annotations

import ast
import importlib
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("icap_server", "policy", "blockpages")
MAX_FILE_LINES = 450
MAX_FUNCTION_LINES = 60
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def python_files(*tops: str) -> list[Path]:
    """Our Python files under `tops` (not a virtualenv's, such as the one `make bench` makes for pyicap)."""
    found = (path for top in tops for path in (ROOT / top).rglob("*.py"))
    return sorted(path for path in found if ".venv" not in path.relative_to(ROOT).parts)


def test_no_source_file_is_longer_than_450_lines() -> None:
    long = {
        str(path.relative_to(ROOT)): lines
        for path in python_files(*PACKAGES, "tests", "bench")
        if (lines := len(path.read_text(encoding="utf-8").splitlines())) > MAX_FILE_LINES
    }
    assert not long, f"files over {MAX_FILE_LINES} lines: {long}"


def test_no_function_in_the_packages_is_longer_than_60_lines() -> None:
    long: dict[str, int] = {}
    for path in python_files(*PACKAGES):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                assert node.end_lineno is not None
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    long[f"{path.relative_to(ROOT)}:{node.lineno} {node.name}"] = length
    assert not long, f"functions over {MAX_FUNCTION_LINES} lines: {long}"


def run_lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache", str(root / ".importlinter")],
        cwd=root,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(root)},
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture(scope="module")
def copy_of_the_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("tree")
    for package in PACKAGES:
        shutil.copytree(ROOT / package, root / package, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / ".importlinter", root / ".importlinter")
    return root


def test_the_layering_contracts_hold(copy_of_the_tree: Path) -> None:
    result = run_lint_imports(copy_of_the_tree)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


@pytest.mark.parametrize(
    ("module", "wrong_import", "contract"),
    [
        ("icap_server/protocol/events.py", "import asyncio", "sans-I/O"),
        ("icap_server/service/application.py", "import icap_server.admin.main", "admin on top"),
        ("icap_server/runtime/server.py", "import icap_server.portal.app", "admin on top"),
        ("policy/decision.py", "import icap_server.config", "The server on top"),
        ("blockpages/render.py", "import icap_server.config", "The server on top"),
        ("icap_server/config/settings.py", "import policy.categories", "config imports nothing"),
        ("icap_server/service/sync.py", "import redis", "Only the store talks to Redis"),
        ("policy/state.py", "import policy.store", "The policy domain is pure"),
        ("policy/hosts.py", "import policy.rules", "No import cycles"),
    ],
)
def test_a_wrong_import_breaks_a_contract(
    copy_of_the_tree: Path, module: str, wrong_import: str, contract: str
) -> None:
    path = copy_of_the_tree / module
    original = path.read_text(encoding="utf-8")
    path.write_text(original + f"\n{wrong_import}  # noqa\n", encoding="utf-8")
    try:
        result = run_lint_imports(copy_of_the_tree)
    finally:
        path.write_text(original, encoding="utf-8")
    assert result.returncode != 0, result.stdout
    broken = [line for line in result.stdout.splitlines() if line.rstrip().endswith("BROKEN")]
    assert broken, result.stdout
    report = result.stdout.split("Broken contracts", 1)[-1]
    assert contract in report, result.stdout
    assert Path(module).stem in report, result.stdout  # it names the import we added


# `icap_server.runtime.server.ICAPProtocol.data_received`-style names in the map must exist.
DOTTED = re.compile(r"`((?:icap_server|policy|blockpages)(?:\.[A-Za-z_][A-Za-z0-9_]*)+)`")


def resolve(dotted: str) -> object:
    parts = dotted.split(".")
    for split in range(len(parts), 0, -1):
        try:
            target: object = importlib.import_module(".".join(parts[:split]))
        except ModuleNotFoundError:
            continue
        for attribute in parts[split:]:
            target = getattr(target, attribute)
        return target
    raise ModuleNotFoundError(dotted)


def test_every_name_in_the_architecture_map_exists() -> None:
    text = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    names = sorted(set(DOTTED.findall(text)))
    assert len(names) >= 40, "the map should name the functions on the paths it describes"
    missing = []
    for name in names:
        try:
            resolve(name)
        except (ImportError, AttributeError):
            missing.append(name)
    assert not missing, f"docs/architecture.md names what does not exist: {missing}"


def test_every_module_is_on_the_map() -> None:
    text = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    unmapped = [
        str(path.relative_to(ROOT))
        for path in python_files(*PACKAGES)
        if path.name != "__init__.py"
        and str(path.relative_to(ROOT).with_suffix("")).replace("/", ".") not in text
        and path.relative_to(ROOT).as_posix() not in text
    ]
    assert not unmapped, f"modules docs/architecture.md does not place: {unmapped}"
