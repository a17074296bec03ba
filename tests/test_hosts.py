import pytest

from policy.categories import CategoryMatch
from policy.hosts import host_suffixes, normalise_host, request_host
from policy.state import PolicyState


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Mail.Google.COM", "mail.google.com"),
        ("mail.google.com.", "mail.google.com"),
        ("mail.google.com:443", "mail.google.com"),
        ("mail.google.com.:8080", "mail.google.com"),
        ("bücher.de", "xn--bcher-kva.de"),
        ("BÜCHER.de.", "xn--bcher-kva.de"),
        ("xn--bcher-kva.de", "xn--bcher-kva.de"),
        ("10.0.0.1", "10.0.0.1"),
        ("10.0.0.1:3128", "10.0.0.1"),
        ("[2001:DB8::1]:443", "2001:db8::1"),
        ("[::1]", "::1"),
        ("2001:db8::1", "2001:db8::1"),
        ("", None),
        ("bad host", None),
        ("a..b", None),
        ("-leading.example", None),
        ("host:notaport", None),
        ("[::1", None),
    ],
)
def test_normalise_host(raw: str, expected: str | None) -> None:
    assert normalise_host(raw) == expected


@pytest.mark.parametrize(
    ("method", "target", "host_header", "expected"),
    [
        ("GET", "http://Mail.Google.com/mail/u/0", "ignored.example", "mail.google.com"),
        ("GET", "http://user:pw@mail.google.com:8080/x", None, "mail.google.com"),
        ("GET", "/mail/u/0", "mail.google.com:80", "mail.google.com"),
        ("GET", "/", None, None),
        ("CONNECT", "mail.google.com:443", "mail.google.com:443", "mail.google.com"),
        ("connect", "[2001:db8::5]:443", None, "2001:db8::5"),
        ("GET", "http://[2001:db8::5]:8080/", None, "2001:db8::5"),
        ("GET", "http://bücher.de/", None, "xn--bcher-kva.de"),
        ("GET", "https://drive.google.com./file", None, "drive.google.com"),
    ],
)
def test_request_host(method: str, target: str, host_header: str | None, expected: str | None) -> None:
    assert request_host(method, target, host_header) == expected


def test_suffixes_walk_label_boundaries_most_specific_first() -> None:
    assert host_suffixes("a.mail.google.com") == ["a.mail.google.com", "mail.google.com", "google.com", "com"]
    assert host_suffixes("10.1.2.3") == ["10.1.2.3"]
    assert host_suffixes("2001:db8::1") == ["2001:db8::1"]


def _match(host: str, table: dict[str, str]) -> CategoryMatch:
    index = PolicyState(version=1).categories  # the matcher serve uses (policy.categories.most_specific was dead)
    for entry, names in table.items():
        for name in names.split(","):
            index.add(name, [entry])
    return index.match(host)


def test_most_specific_entry_wins_on_label_boundaries() -> None:
    table = {"mail.google.com": "webmail", "google.com": "search"}
    assert _match("mail.google.com", table) == CategoryMatch("mail.google.com", frozenset({"webmail"}))
    assert _match("a.mail.google.com", table).categories == {"webmail"}
    assert _match("google.com", table).categories == {"search"}
    assert _match("evilmail.google.com", table) == CategoryMatch("google.com", frozenset({"search"}))
    assert _match("mail.google.com.evil.example", table).entry is None
    only_mail = {"mail.google.com": "webmail"}
    assert _match("google.com", only_mail).entry is None
    assert _match("evilmail.google.com", only_mail).entry is None
    assert _match("x.evilmail.google.com", only_mail).entry is None


def test_multiple_categories_on_one_entry() -> None:
    assert _match("x.example", {"x.example": "webmail,web-im"}).categories == {"webmail", "web-im"}
