import base64

import pytest

from icap_server.config import IdentityConfig
from icap_server.protocol import Headers
from policy.identity import decode_username, identify, parse_authenticated_user


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


DEFAULT = IdentityConfig()


@pytest.mark.parametrize(
    ("fields", "user"),
    [
        ([("X-Client-Username", "alice")], "alice"),
        ([("x-client-username", "Alice")], "alice"),
        ([("X-Client-Username", b64("alice"))], "alice"),
        ([("X-Client-Username", "CORP\\Alice")], "alice"),
        ([("X-Client-Username", "alice@CORP.EXAMPLE")], "alice"),
        ([("X-Client-Username", b64("CORP\\Bob"))], "bob"),
        ([("X-Authenticated-User", b64("WinNT://CORP/carol"))], "carol"),
        ([("X-Authenticated-User", b64("LDAP://dc1/cn=Dave,ou=Staff,dc=corp"))], "dave"),
        ([("X-Authenticated-User", b64("Local://erin"))], "erin"),
        ([("X-Client-Username", "frank"), ("X-Authenticated-User", b64("Local://other"))], "frank"),
        ([], None),
        ([("X-Client-Username", "")], None),
    ],
)
def test_identify_user(fields: list[tuple[str, str]], user: str | None) -> None:
    assert identify(Headers(fields), DEFAULT).user == user


def test_client_ip_is_validated() -> None:
    assert identify(Headers([("X-Client-IP", " 10.1.2.3 ")]), DEFAULT).client_ip == "10.1.2.3"
    assert identify(Headers([("X-Client-IP", "2001:DB8::1")]), DEFAULT).client_ip == "2001:db8::1"
    assert identify(Headers([("X-Client-IP", "not-an-ip")]), DEFAULT).client_ip is None


def test_configured_header_and_no_normalisation() -> None:
    rules = IdentityConfig(username_header="X-User", strip_domain=False, lowercase=False)
    assert identify(Headers([("X-User", "CORP\\Alice")]), rules).user == "CORP\\Alice"
    assert identify(Headers([("X-Client-Username", "alice")]), rules).user is None


def test_encodings() -> None:
    # "user" is valid base64 but decodes to bytes that are not text: auto keeps it plain.
    assert decode_username("user", "auto") == "user"
    assert decode_username(b64("alice"), "auto") == "alice"
    assert decode_username(b64("alice"), "plain") == b64("alice")
    assert decode_username("alice!", "base64") is None
    assert decode_username(b64("陳大文"), "base64") == "陳大文"


def test_authenticated_user_forms() -> None:
    assert parse_authenticated_user(b64("WinNT://CORP/jdoe")) == "CORP\\jdoe"
    assert parse_authenticated_user("Local://plain") == "plain"
    assert parse_authenticated_user(b64("LDAP://host/uid=x")) == "x"


def test_raw_utf8_username_as_squid_sends_it() -> None:
    # Squid sends a non-ASCII name as raw UTF-8; header values are decoded byte-for-byte (latin-1).
    raw = "山田".encode().decode("latin-1")
    assert identify(Headers([("X-Client-Username", raw)]), DEFAULT).user == "山田"
    assert identify(Headers([("X-Client-Username", b64("山田"))]), DEFAULT).user == "山田"
