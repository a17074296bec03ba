"""Parsing third-party category lists: formats, detection, mapping, junk and line numbers (no Redis)."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from policy.categories import parse_list_entry
from policy.sources import lines as importers
from policy.sources.formats import detect_format, open_source
from policy.sources.lines import NOT_A_HOST, PATH_ENTRY, SourceError, normalise_entry, parse_line
from policy.sources.lists import CategoryMap, ScanReport, scan

DEFAULT_MAP = CategoryMap({"webmail": "webmail", "filehosting": "cloud-storage", "chat": "web-im"})


def write(path: Path, text: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def hosts_of(report: ScanReport, target: str, size: int = 3) -> list[str]:
    return [host for batch in report.batches(target, size) for host in batch]


# ---- entries ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "mail.example.com", "Mail.Example.COM", "mail.example.com.", "*.box.com", ".box.com", "a", "1e5",
        "10.0.0.7", "1.2.3", "1.2.3.4.5", "0x7f.0.0.1", "::1", "[2001:db8::1]", "2001:DB8::1", "xn--bcher-kva.de",
        "bücher.de", "a_b.example", "-a.example", "a-.example", "a..b", "a.-b", "host:8080", "a/b", "a b", "*",
        "x" * 63 + ".example", "x" * 64 + ".example", ".".join(["abcdefghi"] * 26), ".".join(["abcdefghi"] * 25),
        "example.123", "123", "a.b-c.d_e", "", "10.0.0.0/8", "10.1.2.3/8", "2001:db8::/32", "10.0.0.0/33",
    ],
)
def test_normalise_entry_is_parse_list_entry(text: str) -> None:
    assert normalise_entry(text) == parse_list_entry(text)


def test_normalise_entry_agrees_on_random_text() -> None:
    rng = random.Random(7)
    alphabet = "abcz019-_.:*/ AZé"
    for _ in range(20000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 12)))
        assert normalise_entry(text) == parse_list_entry(text), text
    for _ in range(5000):  # host-like: label and name lengths around their limits
        labels = ["".join(rng.choice("ab1-_") for _ in range(rng.choice([1, 2, 62, 63, 64]))) for _ in range(4)]
        text = ".".join(labels[: rng.randint(1, 4)]) * rng.choice([1, 1, 2, 3])
        assert normalise_entry(text) == parse_list_entry(text), text


def test_parse_line() -> None:
    assert parse_line("  Mail.Example.com.  # webmail\n") == ("mail.example.com", None)
    assert parse_line("# only a comment") == (None, None)
    assert parse_line("   ") == (None, None)
    assert parse_line("not a host") == (None, NOT_A_HOST)
    assert parse_line("files.example/", urls=True) == ("files.example", None)
    assert parse_line("files.example", urls=True) == ("files.example", None)
    assert parse_line("files.example/share/x", urls=True) == (None, PATH_ENTRY)
    assert parse_line("bad host/", urls=True) == (None, NOT_A_HOST)


# ---- detection and sources --------------------------------------------------------------------------


def test_detect_format(tmp_path: Path) -> None:
    (tmp_path / "tree").mkdir()
    assert detect_format(tmp_path / "tree") == "ut1"
    assert detect_format(write(tmp_path / "x.CSV", "a.example\n")) == "csv"
    assert detect_format(write(tmp_path / "rows.txt", "\n\na.example,webmail\n")) == "csv"
    assert detect_format(write(tmp_path / "list.txt", "# webmail, cloud\na.example\nb.example\n")) == "list"
    assert detect_format(write(tmp_path / "empty.txt", "")) == "list"


def test_open_source_errors(tmp_path: Path) -> None:
    listing = write(tmp_path / "list.txt", "a.example\n")
    with pytest.raises(SourceError, match="no such file"):
        open_source(tmp_path / "missing")
    with pytest.raises(SourceError, match="needs --category"):
        open_source(listing)
    with pytest.raises(ValueError, match="invalid category name"):
        open_source(listing, category="Web Mail")
    (tmp_path / "tree").mkdir()
    with pytest.raises(SourceError, match="--category applies to plain host lists only"):
        open_source(tmp_path / "tree", category="webmail")
    with pytest.raises(SourceError, match="no category folders"):
        open_source(tmp_path / "tree")
    with pytest.raises(SourceError, match="unknown format"):
        open_source(listing, "xml")
    with pytest.raises(SourceError, match="is a directory of category folders"):
        open_source(listing, "ut1")
    with pytest.raises(SourceError, match="not a file"):
        open_source(tmp_path / "tree", "csv")


# ---- plain lists ---------------------------------------------------------------------------------------


def test_plain_list(tmp_path: Path) -> None:
    path = write(
        tmp_path / "list.txt",
        b"\xef\xbb\xbf# a list\r\n\r\nmail.example.com\r\n  Outlook.Example.COM.  # inline\r\n*.box.example\r\n"
        b".drop.example\r\n10.0.0.7\r\n2001:DB8::1\r\nb\xc3\xbccher.example\r\nlast.example",
    )
    report = scan(open_source(path, category="webmail"), DEFAULT_MAP)
    assert report.targets == ["webmail"]
    assert hosts_of(report, "webmail") == [
        "mail.example.com", "outlook.example.com", "box.example", "drop.example", "10.0.0.7", "2001:db8::1",
        "xn--bcher-kva.example", "last.example",
    ]
    assert report.tally.lines == 10
    assert not report.tally.skipped


def test_plain_list_category_is_the_target_itself(tmp_path: Path) -> None:
    path = write(tmp_path / "list.txt", "a.example\n")
    report = scan(open_source(path, category="news"), DEFAULT_MAP)  # not mapped, imported all the same
    assert report.targets == ["news"] and hosts_of(report, "news") == ["a.example"]


@pytest.mark.parametrize("bad", ["http://mail.example/", "mail example com", "host:8080", "a/b", "*", "a..b"])
def test_plain_list_bad_row_is_fatal_with_file_and_line(tmp_path: Path, bad: str) -> None:
    path = write(tmp_path / "list.txt", f"ok.example\n# comment\n\n{bad}\nfine.example\n")
    with pytest.raises(SourceError) as caught:
        scan(open_source(path, category="webmail"), DEFAULT_MAP)
    assert str(caught.value).startswith(f"{path}:4: ")
    assert NOT_A_HOST in str(caught.value)


def test_plain_list_not_utf8_names_the_line(tmp_path: Path) -> None:
    path = write(tmp_path / "list.txt", b"a.example\nb.example\n\xff\xfe.example\n")
    with pytest.raises(SourceError, match=r"list.txt:3: not UTF-8 text"):
        scan(open_source(path, category="webmail"), DEFAULT_MAP)


def test_line_numbers_across_read_blocks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(importers, "BLOCK_BYTES", 50)  # many blocks, lines cut at every boundary
    lines = [f"host{index}.example" for index in range(200)]
    lines[137] = "bad host"
    path = write(tmp_path / "list.txt", "\n".join(lines) + "\n")
    with pytest.raises(SourceError, match=r"list.txt:138: 'bad host'"):
        scan(open_source(path, category="webmail"), DEFAULT_MAP)
    lines[137] = "host137.example"
    write(path, "\n".join(lines))  # and no newline at the end
    report = scan(open_source(path, category="webmail"), DEFAULT_MAP)
    assert hosts_of(report, "webmail", 7) == lines
    assert report.tally.lines == 200


# ---- UT1 / squidGuard ------------------------------------------------------------------------------


def ut1_tree(root: Path) -> Path:
    tree = root / "blacklists"
    write(tree / "webmail" / "domains", "# UT1 webmail\nmail.example\nWebmail.Example.ORG\nbad host\n10.1.2.3\n")
    write(tree / "webmail" / "urls", "mail2.example/\nmail.example/inbox\nmail3.example\nsite.example/a/b\n")
    write(tree / "filehosting" / "domains", b"files.example\n\xff\xfe.example\n.drop.example\n")
    write(tree / "chat" / "domains", "chat.example\n")
    write(tree / "adult" / "domains", "adult.example\nmore.adult.example\n")
    write(tree / "adult" / "usage", "black\n")  # other files in a category folder are not lists
    write(tree / "README", "not a category\n")
    (tree / "courrier").symlink_to("webmail")  # an alias, as UT1 keeps for renamed categories
    (tree / "gone").symlink_to("nowhere")  # dangling: ignored
    (tree / "empty").mkdir()  # no domains or urls: not a category
    return tree


def test_ut1_tree_with_mapping(tmp_path: Path) -> None:
    source = open_source(ut1_tree(tmp_path))
    assert source.format == "ut1"
    assert source.aliases == {"webmail": ("courrier",)}
    report = scan(source, DEFAULT_MAP)
    assert report.targets == ["cloud-storage", "web-im", "webmail"]
    assert hosts_of(report, "webmail") == ["mail.example", "webmail.example.org", "10.1.2.3", "mail2.example",
                                           "mail3.example"]  # the alias is not read a second time
    assert hosts_of(report, "cloud-storage") == ["files.example", "drop.example"]
    assert hosts_of(report, "web-im") == ["chat.example"]
    tally = report.tally
    assert tally.sources == {"webmail": ["webmail"], "cloud-storage": ["filehosting"], "web-im": ["chat"]}
    assert tally.not_imported == {"adult": 2}
    assert tally.skipped == {NOT_A_HOST: 2, PATH_ENTRY: 2}
    where = [(Path(problem.file).relative_to(tmp_path).as_posix(), problem.line) for problem in tally.examples]
    assert where == [
        ("blacklists/filehosting/domains", 2),  # undecodable bytes: junk too
        ("blacklists/webmail/domains", 4),
        ("blacklists/webmail/urls", 2),
        ("blacklists/webmail/urls", 4),
    ]
    assert tally.examples[1].text == "bad host"
    assert "blacklists/webmail/domains:4: 'bad host'" in str(tally.examples[1])


def test_ut1_only_the_first_examples_are_kept(tmp_path: Path) -> None:
    write(tmp_path / "t" / "webmail" / "domains", "".join(f"bad {index}\n" for index in range(50)) + "ok.example\n")
    report = scan(open_source(tmp_path / "t"), DEFAULT_MAP)
    assert report.tally.skipped == {NOT_A_HOST: 50}
    assert [problem.line for problem in report.tally.examples] == [1, 2, 3, 4, 5]
    assert hosts_of(report, "webmail") == ["ok.example"]


def test_ut1_mapping_through_an_alias(tmp_path: Path) -> None:
    report = scan(open_source(ut1_tree(tmp_path)), CategoryMap({"courrier": "webmail"}))
    assert report.targets == ["webmail"]
    assert report.tally.hosts == {"webmail": 5}


def test_ut1_unmapped_categories_under_their_own_names(tmp_path: Path) -> None:
    report = scan(open_source(ut1_tree(tmp_path)), CategoryMap(DEFAULT_MAP.mapping, only_mapped=False))
    assert report.targets == ["adult", "cloud-storage", "web-im", "webmail"]
    assert hosts_of(report, "adult") == ["adult.example", "more.adult.example"]
    assert not report.tally.not_imported


def test_ut1_invalid_folder_name_needs_a_mapping(tmp_path: Path) -> None:
    write(tmp_path / "t" / "Hot Stuff" / "domains", "a.example\n")
    source = open_source(tmp_path / "t")
    assert not scan(source, DEFAULT_MAP).targets  # not mapped: not imported, name irrelevant
    with pytest.raises(SourceError, match=r"source category 'hot stuff': invalid category name.*--map"):
        scan(source, CategoryMap({}, only_mapped=False))
    assert scan(source, CategoryMap({"hot stuff": "adult"}, only_mapped=False)).targets == ["adult"]


def test_ut1_single_category_folder(tmp_path: Path) -> None:
    tree = ut1_tree(tmp_path)
    report = scan(open_source(tree / "filehosting"), DEFAULT_MAP)
    assert report.targets == ["cloud-storage"]
    assert report.tally.hosts == {"cloud-storage": 2}


def test_ut1_empty_category_still_feeds_its_target(tmp_path: Path) -> None:
    write(tmp_path / "t" / "webmail" / "domains", "# nothing yet\n")
    report = scan(open_source(tmp_path / "t"), DEFAULT_MAP)
    assert report.targets == ["webmail"]  # so --replace empties it, as the source says
    assert hosts_of(report, "webmail") == []


# ---- CSV ------------------------------------------------------------------------------------------------


def test_csv_with_header_extra_columns_and_mapping(tmp_path: Path) -> None:
    path = write(
        tmp_path / "hosts.csv",
        'host,category,note\nmail.example,webmail,x\n\n# comment\n"Files.Example",FileHosting,"a, b"\n'
        "adult.example,adult\n10.0.0.1 , chat \n",
    )
    report = scan(open_source(path), DEFAULT_MAP)
    assert report.targets == ["cloud-storage", "web-im", "webmail"]
    assert hosts_of(report, "webmail") == ["mail.example"]
    assert hosts_of(report, "cloud-storage") == ["files.example"]
    assert hosts_of(report, "web-im") == ["10.0.0.1"]
    assert report.tally.not_imported == {"adult": 1}
    assert report.tally.lines == 7


def test_csv_without_header(tmp_path: Path) -> None:
    path = write(tmp_path / "rows.txt", "mail.example,webmail\n")
    report = scan(open_source(path), DEFAULT_MAP)
    assert hosts_of(report, "webmail") == ["mail.example"]


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ("bad host,webmail", f"'bad host' is {NOT_A_HOST}"),
        ("only.example", "expected HOST,CATEGORY"),
        ("only.example,", "expected HOST,CATEGORY"),
        ("http://x.example/,webmail", NOT_A_HOST),
    ],
)
def test_csv_bad_row_is_fatal_with_file_and_line(tmp_path: Path, row: str, message: str) -> None:
    path = write(tmp_path / "hosts.csv", f"host,category\na.example,webmail\n{row}\nb.example,webmail\n")
    with pytest.raises(SourceError) as caught:
        scan(open_source(path), DEFAULT_MAP)
    assert str(caught.value).startswith(f"{path}:3: ")
    assert message in str(caught.value)


def test_csv_invalid_category_name_when_importing_unmapped(tmp_path: Path) -> None:
    path = write(tmp_path / "hosts.csv", "a.example,webmail\nb.example,Bad Name\n")
    assert scan(open_source(path), DEFAULT_MAP).tally.not_imported == {"bad name": 1}
    with pytest.raises(SourceError, match="source category 'bad name': invalid category name"):
        scan(open_source(path), CategoryMap({}, only_mapped=False))


# ---- mapping -----------------------------------------------------------------------------------------


def test_category_map() -> None:
    cmap = CategoryMap({" WebMail ": "webmail"}).with_overrides({"chat": "web-im", "webmail": "mail"})
    assert cmap.mapping == {"webmail": "mail", "chat": "web-im"}
    assert cmap.target("WEBMAIL") == "mail"
    assert cmap.target("adult") is None
    assert cmap.target("agressif", aliases=["chat"]) == "web-im"
    assert CategoryMap({}, only_mapped=False).target("adult") == "adult"
    with pytest.raises(ValueError, match="invalid category name"):
        CategoryMap({"chat": "Web IM"})
    with pytest.raises(ValueError, match="must not be empty"):
        CategoryMap({" ": "webmail"})


# ---- the second pass ------------------------------------------------------------------------------------


def test_batches_from_memory_and_from_a_second_read_agree(tmp_path: Path) -> None:
    tree = ut1_tree(tmp_path)
    kept = scan(open_source(tree), DEFAULT_MAP)
    reread = scan(open_source(tree), DEFAULT_MAP, keep=0)
    assert kept.kept is not None and reread.kept is None
    for target in kept.targets:
        assert list(kept.batches(target, 2)) == list(reread.batches(target, 2))
    assert [len(batch) for batch in kept.batches("webmail", 2)] == [2, 2, 1]


def test_source_over_the_keep_limit_is_read_again(tmp_path: Path) -> None:
    path = write(tmp_path / "list.txt", "".join(f"h{index}.example\n" for index in range(10)))
    report = scan(open_source(path, category="webmail"), DEFAULT_MAP, keep=5)
    assert report.kept is None
    assert hosts_of(report, "webmail", 4) == [f"h{index}.example" for index in range(10)]


def test_a_source_changed_between_the_passes_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path / "list.txt", "a.example\nb.example\n")
    report = scan(open_source(path, category="webmail"), DEFAULT_MAP, keep=0)
    write(path, "a.example\n")
    with pytest.raises(SourceError, match="changed during the import"):
        list(report.batches("webmail", 10))
    write(path, "a.example\nbad host\n")
    with pytest.raises(SourceError, match=r"list\.txt:2: 'bad host'"):
        list(report.batches("webmail", 10))
