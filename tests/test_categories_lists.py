import pytest

from policy.categories import ListError, parse_host_list
from policy.services import default_list, shipped_catalogue

SHIPPED_LISTS = ("webmail", "cloud-storage", "web-im")  # policy/data/services/*.yaml


def test_parse_host_list_comments_blank_lines_and_wildcards() -> None:
    text = "# a list\n\nmail.google.com\n  Outlook.Live.com.  # inline comment\n*.dropbox.com\n.box.com\n10.0.0.7\n"
    assert parse_host_list(text.splitlines()) == [
        "mail.google.com",
        "outlook.live.com",
        "dropbox.com",
        "box.com",
        "10.0.0.7",
    ]


@pytest.mark.parametrize("bad", ["http://mail.google.com/", "mail google com", "host:8080", "a/b", "*"])
def test_bad_line_names_its_number(bad: str) -> None:
    with pytest.raises(ListError) as caught:
        parse_host_list(["ok.example", "# comment", bad])
    assert caught.value.line_number == 3
    assert "line 3" in str(caught.value)


@pytest.mark.parametrize("category", SHIPPED_LISTS)
def test_default_lists_have_thirty_services_and_valid_hosts(category: str) -> None:
    hosts = default_list(category)
    assert len(hosts) == len(set(hosts))
    services = [service for service in shipped_catalogue() if service.category == category]
    assert len(services) >= 30, f"{category} lists {len(services)} services"


def test_default_lists_cover_the_named_services() -> None:
    webmail = set(default_list("webmail"))
    storage = set(default_list("cloud-storage"))
    im = set(default_list("web-im"))
    for host in ("mail.google.com", "outlook.live.com", "mail.yahoo.com", "mail.qq.com", "mail.163.com"):
        assert host in webmail
    for host in ("drive.google.com", "dropbox.com", "onedrive.live.com", "icloud.com", "pan.baidu.com",
                 "mega.nz", "wetransfer.com"):
        assert host in storage
    for host in ("web.whatsapp.com", "web.telegram.org", "line.me", "messenger.com"):
        assert host in im or any(host.endswith("." + entry) for entry in im)
    assert any(host in im for host in ("wx.qq.com", "web.wechat.com"))
    # Portals and corporate Microsoft 365 / Google hosts must stay open.
    for host in ("google.com", "qq.com", "facebook.com", "outlook.office365.com", "sharepoint.com"):
        assert host not in webmail | storage | im
