"""The admins' own block-page templates: used before the built-in ones, and a broken one stops the start."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from icap_server.config import load_config
from icap_server.service.pages import BlockPageError, block_pages
from tests.conftest import PROJECT_ROOT, clearance_env
from tests.support.pages import (
    branded,
    facts,
    load_config_text,
)


def test_template_dir_overrides_the_built_in_templates(tmp_path: Path) -> None:
    (tmp_path / "block.html").write_text(
        "<!DOCTYPE html><html lang=\"{{ lang }}\"><title>{{ heading }}</title><h1>Custom {{ org.name }}</h1>"
        "<p>{{ message }}</p><p>{{ page.host }} {{ page.reference }}</p>{% if form %}form{% endif %}",
        encoding="utf-8",
    )
    config = load_config_text("blockpages:\n  template_dir: .\n", tmp_path)
    renderer = block_pages(config)
    page = renderer.render(facts(host="<b>x</b>"), "html", "zh-HK", None).body.decode()
    assert page.startswith('<!DOCTYPE html><html lang="zh-HK"><title>此網站已被封鎖</title><h1>Custom 貴部門</h1>')
    assert "&lt;b&gt;x&lt;/b&gt;" in page  # still autoescaped
    # block.txt was not overridden: the built-in one is used.
    assert renderer.render(facts(), "text", "en", None).body.decode().startswith("Access to this site is blocked ·")


@pytest.mark.parametrize(
    ("template", "line", "message"),
    [
        ("<p>fine</p>\n<p>{{ page.host }</p>\n", 2, "unexpected '}'"),
        ("<p>{{ heading }}</p>\n\n<p>{{ page.no_such_fact }}</p>\n", 3, "no_such_fact"),
        ("{% if form %}\n{{ form.action }}\n{% endif %}\n{{ nothing_here }}\n", 4, "'nothing_here' is undefined"),
        ("{% if page.user %}{{ page.user }}{% else %}\n{{ page.user.upper() }}{% endif %}\n", 2, "upper"),
    ],
)
def test_a_broken_template_is_named_with_its_line(tmp_path: Path, template: str, line: int, message: str) -> None:
    (tmp_path / "block.html").write_text(template, encoding="utf-8")
    with pytest.raises(BlockPageError) as caught:
        block_pages(branded(template_dir=str(tmp_path)))
    text = str(caught.value)
    assert f"{tmp_path / 'block.html'}, line {line}:" in text and message in text, text
    assert "\n" not in text


def test_a_broken_partial_template_is_found_too(tmp_path: Path) -> None:
    (tmp_path / "footer.html").write_text("{% for x in %}\n", encoding="utf-8")
    with pytest.raises(BlockPageError, match=r"footer\.html, line 1"):
        block_pages(branded(template_dir=str(tmp_path)))
    with pytest.raises(BlockPageError, match="is not a directory"):
        block_pages(branded(template_dir=str(tmp_path / "nowhere")))


def test_serve_refuses_to_start_with_a_broken_template(tmp_path: Path) -> None:
    templates = tmp_path / "pages"
    templates.mkdir()
    (templates / "block.html").write_text("<h1>{{ heading }}</h1>\n<p>{{ page.hots }}</p>\n", encoding="utf-8")
    config = tmp_path / "clearance.yaml"
    config.write_text("blockpages:\n  template_dir: pages\nlogging:\n  format: json\n", encoding="utf-8")
    env = clearance_env("redis://127.0.0.1:1/0", config)  # never reached: the check comes first
    serve = subprocess.run(
        [sys.executable, "-m", "icap_server", "serve", "--listen", "127.0.0.1:1"],
        env=env, capture_output=True, text=True, timeout=60,
    )
    assert serve.returncode == 2
    lines = serve.stderr.strip().splitlines()
    assert len(lines) == 1, serve.stderr
    assert lines[0].startswith("clearance: block-page template ")
    assert f"{templates / 'block.html'}, line 2:" in lines[0] and "hots" in lines[0]
    check = subprocess.run(
        [sys.executable, "-m", "icap_server", "blockpages", "check"],
        env=env, capture_output=True, text=True, timeout=60,
    )
    assert check.returncode == 2 and check.stderr == serve.stderr
    (templates / "block.html").write_text("<h1>{{ heading }}</h1>\n<p>{{ page.host }}</p>\n", encoding="utf-8")
    check = subprocess.run(
        [sys.executable, "-m", "icap_server", "blockpages", "check"],
        env=env, capture_output=True, text=True, timeout=60,
    )
    assert check.returncode == 0 and "block-page templates OK" in check.stdout


def test_shipped_config_and_built_in_templates_pass_the_check() -> None:
    block_pages(load_config(PROJECT_ROOT / "config.yaml"))

