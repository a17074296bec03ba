import os
import subprocess
import sys
from pathlib import Path

import msgspec
import pytest

from icap_server.config import Category, Config, ConfigError, load_config
from policy.categories import validate_category

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "c.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def error_of(path: Path) -> str:
    """The message of the ConfigError that loading this file raises."""
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    return str(caught.value)


def test_shipped_config_yaml_equals_the_built_in_defaults() -> None:
    loaded = load_config(PROJECT_ROOT / "config.yaml")
    defaults = Config()
    sections = ("organisation", "server", "redis", "identity", "policy", "approvals", "exemptions", "logging")
    sections += ("import_", "portal", "smtp", "blockpages")
    for section in sections:
        assert getattr(loaded, section) == getattr(defaults, section), section


def test_values_are_read(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, "server:\n  listen: 0.0.0.0:11344\n  idle_timeout: 5\n"))
    assert config.server.listen == "0.0.0.0:11344"
    assert config.server.idle_timeout == 5.0
    assert config.policy.restricted_categories == ("webmail", "cloud-storage", "web-im")


def test_import_section(tmp_path: Path) -> None:
    default = {"webmail": "webmail", "filehosting": "cloud-storage", "chat": "web-im"}
    assert dict(Config().import_.category_map) == default
    config = load_config(write(tmp_path, "import:\n  category_map:\n    mail: webmail\n  only_mapped: false\n"))
    assert dict(config.import_.category_map) == {"mail": "webmail"}  # replaces the default map whole
    assert config.import_.only_mapped is False


def test_redis_url_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, "redis:\n  url: redis://file:1/0\n")
    monkeypatch.delenv("CLEARANCE_REDIS_URL", raising=False)
    assert load_config(path).redis.url == "redis://file:1/0"
    monkeypatch.setenv("CLEARANCE_REDIS_URL", "redis://env:2/0")
    assert load_config(path).redis.url == "redis://env:2/0"
    assert load_config(path, redis_url="unix:///tmp/x.sock").redis.url == "unix:///tmp/x.sock"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("server:\n  lisen: x\n", "server.lisen: unknown key"),
        ("sever: {}\n", "sever: unknown key"),
        ("server:\n  listen: nowhere\n", "server.listen: expected HOST:PORT"),
        ("server:\n  max_header_bytes: lots\n", "server.max_header_bytes: expected a whole number"),
        ("server:\n  idle_timeout: 0\n", "server.idle_timeout: must be greater than 0"),
        ("identity:\n  lowercase: maybe\n", "identity.lowercase: expected true or false"),
        ("identity:\n  username_encoding: rot13\n", "identity.username_encoding: expected one of auto, plain, base64"),
        ("policy:\n  restricted_categories: webmail\n", "policy.restricted_categories: expected a list"),
        ("policy:\n  restricted_categories: [webmail, 'Bad Name']\n", "policy.restricted_categories[1]: invalid"),
        ("policy:\n  timezone: Mars/Olympus\n", "policy.timezone: unknown time zone"),
        ("redis:\n  url: http://x\n", "redis.url: expected a redis://"),
        ("logging:\n  format: xml\n", "logging.format: expected one of"),
        ("import:\n  category_map: [chat]\n", "import.category_map: expected a mapping"),
        ("import:\n  category_map:\n    chat: Web IM\n", "import.category_map.chat: invalid category name"),
        ("import:\n  category_map:\n    chat: 7\n", "import.category_map.chat: expected text"),
        ("import:\n  only_mapped: 1\n", "import.only_mapped: expected true or false"),
        ("import:\n  replace: true\n", "import.replace: unknown key"),
        ("- a\n- b\n", "top level must be a mapping"),
        ("server: [\n", "not valid YAML"),
    ],
)
def test_errors_name_the_key(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, text)
    error = error_of(path)
    assert message in error
    assert str(path) in error


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "absent.yaml")


def test_exemptions_and_approval_rules_are_checked(tmp_path: Path) -> None:
    ok = load_config(write(tmp_path, "exemptions:\n  - network: 10.250.0.0/16\n    categories: [web-im]\n"))
    assert ok.exemptions[0].network == "10.250.0.0/16" and ok.exemptions[0].categories == ("web-im",)
    with pytest.raises(ConfigError, match=r"exemptions\[0\].network: not a network"):
        load_config(write(tmp_path, "exemptions:\n  - network: mobile-devices\n"))
    with pytest.raises(ConfigError, match=r"approvals\.on_review_overdue: expected one of suspend, warn"):
        load_config(write(tmp_path, "approvals:\n  on_review_overdue: ignore\n"))
    with pytest.raises(ConfigError, match=r"approvals\.max_validity_days: must be at least 1"):
        load_config(write(tmp_path, "approvals:\n  max_validity_days: 0\n"))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        # unknown keys, at any depth, name the key and the known ones
        ("exemptions:\n  - network: 10.0.0.0/8\n    colour: 1\n",
         "exemptions[0].colour: unknown key (known: categories, network, note)"),
        ("import:\n  category_map:\n    7: webmail\n", "import.category_map key: expected text, got 7"),
        ("exemptions:\n  - categories: [web-im]\n", "exemptions[0].network: missing, and it is required"),
        # wrong types name the value found
        ("server:\n  workers: x\n", "server.workers: expected a whole number, got 'x'"),
        ("server:\n  workers: true\n", "server.workers: expected a whole number, got True"),
        ("server:\n  idle_timeout: 'soon'\n", "server.idle_timeout: expected a number, got 'soon'"),
        ("server: 5\n", "server: expected a mapping, got 5"),
        ("exemptions: {}\n", "exemptions: expected a list, got {}"),
        ("blockpages:\n  logo: 5\n", "blockpages.logo: expected text, got 5"),
        # bad literals list the allowed values
        ("logging:\n  level: loud\n", "logging.level: expected one of debug, info, warning, error, got 'loud'"),
        ("identity:\n  username_encoding: 64\n",
         "identity.username_encoding: expected one of auto, plain, base64, got 64"),
        # constraints say what is wrong, with the value
        ("server:\n  workers: -1\n", "server.workers: must be 0 (one per core) or more, got -1"),
        ("smtp:\n  port: 70000\n", "smtp.port: expected a port number, got 70000"),
        ("smtp:\n  sender: nobody\n", "smtp.sender: expected an e-mail address, got 'nobody'"),
        ("portal:\n  token_ttl_minutes: 0\n", "portal.token_ttl_minutes: must be at least 1, got 0"),
        ("portal:\n  public_url: ftp://x\n", "portal.public_url: expected an http:// or https:// URL, got 'ftp://x'"),
        ("redis:\n  url: http://x\n", "redis.url: expected a redis://, rediss:// or unix:// URL, got 'http://x'"),
        ("blockpages:\n  accent_colour: \"#123456\\n\"\n",
         "blockpages.accent_colour: expected a colour as #rrggbb, got '#123456\\n'"),
        ("import:\n  category_map:\n    chat: Web IM\n",
         "import.category_map.chat: invalid category name: use lower-case letters, digits, '-' or '_' (at most 63), "
         "got 'Web IM'"),
        # checks of parsed values and of keys that go together
        ("portal:\n  trusted_proxies: [10.0.0.0/8, nope]\n",
         "portal.trusted_proxies[1]: not a network in CIDR form, got 'nope'"),
        ("portal:\n  listen: x\n", "portal.listen: expected HOST:PORT, got 'x'"),
        ("smtp:\n  username: mailer\n", "smtp.username and smtp.password: give both or neither"),
        ("smtp:\n  password: secret\n", "smtp.username and smtp.password: give both or neither"),
    ],
)
def test_each_kind_of_error_is_one_line_with_key_and_value(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, text)
    assert error_of(path) == f"{path}: {message}"


def test_yaml_errors_are_one_line(tmp_path: Path) -> None:
    error = error_of(write(tmp_path, "server:\n  listen: [\n"))
    assert "\n" not in error and "line 3" in error


def test_an_empty_section_takes_the_defaults(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, "server:\nsmtp:\nredis:\n  url: ''\n"))
    assert config.server == Config().server and config.smtp == Config().smtp
    with pytest.raises(TypeError):
        config.import_.category_map["chat"] = "webmail"  # type: ignore[index]


CATEGORY_NAMES = ["webmail", "web-im", "cloud_storage", "a", "7", "x" * 63, "x" * 64, "", "Web", "web mail", "-web"]
CATEGORY_NAMES += ["web.mail", "webmail\n", "wébmail", "_x", "a-", "a_b-c9"]


@pytest.mark.parametrize("name", CATEGORY_NAMES)
def test_the_category_rule_agrees_with_the_policys(name: str) -> None:
    """config.py repeats policy.categories' rule (it imports nothing of ours): the two must agree."""
    try:
        validate_category(name)
    except ValueError:
        policy_accepts = False
    else:
        policy_accepts = True
    try:
        msgspec.convert(name, Category)
    except msgspec.ValidationError:
        config_accepts = False
    else:
        config_accepts = True
    assert config_accepts == policy_accepts


def test_the_cli_reports_a_bad_config_in_one_line_and_exits_2(tmp_path: Path) -> None:
    path = write(tmp_path, "server:\n  workers: many\n")
    env = {**os.environ, "CLEARANCE_REDIS_URL": "redis://127.0.0.1:1/0"}  # never reached: the config fails first
    result = subprocess.run(
        [sys.executable, "-m", "icap_server", "--config", str(path), "categories", "stats"],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )
    assert result.returncode == 2
    assert result.stderr == f"clearance: {path}: server.workers: expected a whole number, got 'many'\n"


@pytest.mark.parametrize("name", ["webmail\n", "web-im\n", "x\n"])
def test_a_category_name_with_a_final_newline_is_refused_by_both(name: str) -> None:
    with pytest.raises(ValueError):
        validate_category(name)
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert(name, Category)
