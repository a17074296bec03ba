from pathlib import Path

import pytest

from icap_server.config import Config, ConfigError, load_config

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "c.yaml"
    path.write_text(text, encoding="utf-8")
    return path


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
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert message in str(caught.value)
    assert str(path) in str(caught.value)


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
