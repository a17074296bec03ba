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
        # percent-escapes in the host, as a browser decodes them
        ("mail%2egoogle%2ecom", "mail.google.com"),
        ("%6D%61%69%6C.google.com:443", "mail.google.com"),
        ("%EF%BD%8D%EF%BD%81%EF%BD%89%EF%BD%8C.google.com", "mail.google.com"),
        ("b%C3%BCcher.de", "xn--bcher-kva.de"),
        ("%ff.example", None),  # not UTF-8
        ("%zz.example", None),
        ("mail.google.com%2f", None),
        ("mail.google.com%3a80", None),
        ("mail.google.com%00", None),
        # UTS #46: fullwidth forms, ideographic full stops, ignored characters
        ("ｍａｉｌ．ｇｏｏｇｌｅ．ｃｏｍ", "mail.google.com"),
        ("mail。google。com", "mail.google.com"),
        ("mail｡google｡com", "mail.google.com"),
        ("ＭＡＩＬ.google.com", "mail.google.com"),
        ("mail.google.com。", "mail.google.com"),
        ("ma\u00adil.google.com", "mail.google.com"),
        ("a_b.bücher.de", "a_b.xn--bcher-kva.de"),
        ("💩.example", None),  # not a valid IDNA label: never a guess
        # empty labels: no host a resolver would look up as such
        ("mail..google.com", None),
        (".mail.google.com", None),
        ("ｍａｉｌ．．ｇｏｏｇｌｅ．ｃｏｍ", None),
        ("mail.google.com..", "mail.google.com"),  # trailing dots, as today
        # every IPv4 spelling the WHATWG URL host parser accepts
        ("3405803783", "203.0.113.7"),
        ("0xcb.0x0.0x71.0x7", "203.0.113.7"),
        ("0XCB.0.113.7", "203.0.113.7"),
        ("0313.0.0161.07", "203.0.113.7"),
        ("0xcb007107", "203.0.113.7"),
        ("203.0.28935", "203.0.113.7"),
        ("203.28935", "203.0.113.7"),
        ("127.1", "127.0.0.1"),
        ("010.0.0.1", "8.0.0.1"),
        ("0x", "0.0.0.0"),
        ("4294967295", "255.255.255.255"),
        ("２０３．０．１１３．７", "203.0.113.7"),
        ("%32%30%33.0.113.7", "203.0.113.7"),
        ("203.0.113.7.", "203.0.113.7"),
        ("203.0.113.7:8080", "203.0.113.7"),
        # a name that ends in a number is an IPv4 address or nothing
        ("4294967296", None),
        ("203.0.113.256", None),
        ("256.0.0.1", None),
        ("203.0.113.7.8", None),
        ("203.0.113.09", None),
        ("1..2", None),
        ("mail.google.1", None),
        ("example.0x1f", None),
        # IPv6: bracketed, IPv4-mapped and NAT64 forms are the IPv4 they reach
        ("[::ffff:203.0.113.7]", "203.0.113.7"),
        ("[::ffff:203.0.113.7]:443", "203.0.113.7"),
        ("[::FFFF:CB00:7107]", "203.0.113.7"),
        ("[0:0:0:0:0:ffff:203.0.113.7]", "203.0.113.7"),
        ("[64:ff9b::cb00:7107]", "203.0.113.7"),
        ("::ffff:203.0.113.7", "203.0.113.7"),
        ("[2001:0DB8:0:0::1]", "2001:db8::1"),
        ("[::1]x", None),
        ("[::1]:99999", None),
        ("[203.0.113.7]", None),
        # ports
        ("host.example:65535", "host.example"),
        ("host.example:65536", None),
        ("host.example:+80", None),
        ("host.example:８０", None),
        ("a, b", None),
    ],
)
def test_normalise_host_as_a_browser_would(raw: str, expected: str | None) -> None:
    assert normalise_host(raw) == expected


@pytest.mark.parametrize(
    ("method", "target", "host_headers", "expected"),
    [
        ("GET", "http://Mail.Google.com/mail/u/0", ["ignored.example"], "mail.google.com"),  # the URI wins
        ("GET", "http://user:pw@mail.google.com:8080/x", None, "mail.google.com"),
        ("GET", "HTTP://mail.google.com?x", None, "mail.google.com"),
        ("GET", "http://mail.google.com#x", None, "mail.google.com"),
        ("GET", "/mail/u/0", ["mail.google.com:80"], "mail.google.com"),
        ("GET", "/", ["mail.google.com", "MAIL.google.com."], "mail.google.com"),  # the same host twice
        ("OPTIONS", "*", ["mail.google.com"], "mail.google.com"),
        ("CONNECT", "mail.google.com:443", ["mail.google.com:443"], "mail.google.com"),
        ("connect", "[2001:db8::5]:443", None, "2001:db8::5"),
        ("CONNECT", "[::ffff:203.0.113.7]:443", None, "203.0.113.7"),
        ("CONNECT", "3405803783:443", None, "203.0.113.7"),
        ("GET", "http://[2001:db8::5]:8080/", None, "2001:db8::5"),
        ("GET", "http://bücher.de/", None, "xn--bcher-kva.de"),
        ("GET", "http://bÃ¼cher.de/", None, "xn--bcher-kva.de"),  # UTF-8 bytes as the protocol hands them over
        ("GET", "/", ["ï½\x8dail.google.com"], "mail.google.com"),  # a fullwidth m, likewise
        ("GET", "https://drive.google.com./file", None, "drive.google.com"),
        ("GET", "/x://evil.example/", ["mail.google.com"], "mail.google.com"),  # a path, not a scheme
        # the destination cannot be told: None, and the service blocks it as bad-request
        ("GET", "/", None, None),
        ("GET", "/", [""], None),
        ("GET", "/", ["example.org", "mail.google.com"], None),
        ("GET", "http://example.org/", ["example.org", "mail.google.com"], None),
        ("GET", "/", ["example.org, mail.google.com"], None),
        ("GET", "http://example.org/", ["example.org, mail.google.com"], None),
        ("GET", "/", ["mail..google.com"], None),
        ("GET", "http:///mail.google.com/", ["example.org"], None),
        ("GET", "http://example.org\\@mail.google.com/", None, None),
        ("GET", "http://a@example.org@mail.google.com/", None, None),
        ("GET", "http://user@/", None, None),
        ("GET", "mail.google.com/inbox", ["example.org"], None),
        ("GET", "1http://mail.google.com/", ["example.org"], None),
        ("CONNECT", "mail.google.com:443", ["example.org", "mail.google.com"], None),
    ],
)
def test_request_host(method: str, target: str, host_headers: list[str] | None, expected: str | None) -> None:
    assert request_host(method, target, host_headers) == expected


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
