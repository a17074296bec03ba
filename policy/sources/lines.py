"""Lines of a list file: reading them (UTF-8, in blocks for speed) and turning one into a host entry.

Entries are normalised exactly as `parse_list_entry` does (`.host` and `*.host` mean the host and below;
IP literals and CIDR ranges are entries too), with a fast path for text that is already canonical.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from policy.categories import NOT_A_HOST as NOT_A_HOST  # re-exported: the importers' reasons live here
from policy.categories import NOT_A_RANGE, entry_problem, parse_list_entry

PATH_ENTRY = "a path entry (use rules for paths)"
# How a count of skipped lines is labelled, per reason.
SKIP_LABELS = {
    NOT_A_HOST: "not host names or IP addresses",
    NOT_A_RANGE: "not CIDR ranges",
    PATH_ENTRY: "path entries (use rules for paths)",
}

# A host that normalise_host would return unchanged: lower-case ASCII labels, and a last label that is not
# all digits (so it cannot be an IPv4 address; no ':' so not IPv6). Such text needs no further work, which
# makes the common case about six times faster than the general path; everything else (CIDR ranges
# included: "/" is not in a label) goes through parse_list_entry. tests/test_importers.py checks the two agree.
_LABEL = r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?"
_HOST = rf"(?:{_LABEL}\.)*(?=[a-z0-9_-]*[a-z_-]){_LABEL}"
PLAIN_HOST = re.compile(_HOST)
BLOCK_BYTES = 1 << 20


class SourceError(ValueError):
    """A source that cannot be imported; for a bad row the message is `FILE:LINE: reason`."""


@dataclass(frozen=True, slots=True)
class SkippedLine:
    """One line that is not imported."""

    file: str
    line: int
    text: str
    reason: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.text!r}: {self.reason}"


# ---- entries ---------------------------------------------------------------------------------


def normalise_entry(text: str) -> str | None:
    """`parse_list_entry`, with a fast path for text that is already canonical."""
    bare = text[2:] if text.startswith("*.") else text[1:] if text.startswith(".") else text
    if len(bare) <= 253 and PLAIN_HOST.fullmatch(bare):
        return bare
    return parse_list_entry(text)


def parse_line(raw: str, urls: bool = False) -> tuple[str | None, str | None]:
    """One line of a list: (host, None); (None, reason) when it is not an entry; (None, None) when blank.

    `#` starts a comment. In a squidGuard `urls` file a line is `host/path`, and only a `host` or `host/`
    line is a host entry: paths are for rules.
    """
    text = raw.split("#", 1)[0].strip()
    if not text:
        return None, None
    if urls:
        host_text = _url_host(text)
        if host_text is None:
            return None, PATH_ENTRY
        text = host_text
    host = normalise_entry(text)
    return (host, None) if host is not None else (None, entry_problem(text))


def _url_host(text: str) -> str | None:
    """The host of a squidGuard `urls` line (`host/path`) when the path is empty or "/"; else None."""
    if "://" in text:
        text = text.split("://", 1)[1]
    slash = text.find("/")
    if slash < 0:
        return text
    if text[slash:] in ("/", "//"):  # "host/" and "host//" (an empty path written with its slash)
        return text[:slash]
    return None


def read_lines(path: Path, strict: bool) -> Iterator[tuple[int, str]]:
    """(line number, text) of a UTF-8 file. Strict: undecodable bytes are an error naming the line;
    otherwise they become U+FFFD (and the line is then not a host)."""
    errors = "strict" if strict else "replace"
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            try:
                text = raw.decode("utf-8", errors)
            except UnicodeDecodeError:
                raise SourceError(f"{path}:{number}: not UTF-8 text") from None
            if number == 1 and text.startswith("\ufeff"):
                text = text[1:]
            yield number, text


def read_blocks(path: Path, strict: bool) -> Iterator[tuple[int, str]]:
    """The file in blocks of whole lines: (number of the block's first line, text ending in a newline).

    Decoding as `read_lines`; CRLF becomes LF.
    """
    errors = "strict" if strict else "replace"
    number = 1
    rest = b""
    with path.open("rb") as handle:
        while True:
            chunk = handle.read(BLOCK_BYTES)
            if chunk:
                data = rest + chunk
                cut = data.rfind(b"\n") + 1
                data, rest = data[:cut], data[cut:]
                if not data:
                    continue
            elif rest:
                data, rest = rest + b"\n", b""
            else:
                return
            try:
                text = data.decode("utf-8", errors)
            except UnicodeDecodeError as error:
                line = number + data.count(b"\n", 0, error.start)
                raise SourceError(f"{path}:{line}: not UTF-8 text") from None
            if number == 1 and text.startswith("\ufeff"):
                text = text[1:]
            if "\r" in text:
                text = text.replace("\r\n", "\n")
            yield number, text
            number += text.count("\n")
