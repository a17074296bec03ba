"""The benchmark workload: a 2,000-host webmail list and 10,000 URLs, generated deterministically.

The list holds the real hosts of policy/data/webmail.txt plus synthetic webmail-style hosts. 10% of the URLs
go to listed hosts (the host itself or a subdomain, which must match) and 90% to hosts that must not match,
including the traps of label-boundary matching: parents of listed hosts, look-alikes that only share a
string suffix (`xmail.example.com` against `mail.example.com`), siblings (`docs.example.com`) and listed
names used as a prefix (`mail.example.com.cdn.net`). Every URL's expected decision comes from a reference
suffix walk.
"""

from __future__ import annotations

import random
import sys
from dataclasses import dataclass
from pathlib import Path

SEED = 20261128
LIST_SIZE = 2000
URL_COUNT = 10_000
BLOCKED_SHARE = 0.10

REPO = Path(__file__).resolve().parent.parent

_WORD_TEXT = (
    "amber anchor apex arrow aster atlas aurora azure badger banyan basil beacon birch bison blaze bloom bolt "
    "bramble breeze brook cactus canyon cedar cinder cipher citrus clover cobalt comet copper coral cosmos "
    "crane crest crystal cypress dahlia delta dune eagle echo ember falcon fern fjord flint forge fox frost "
    "galaxy garnet glacier granite harbor hazel heron horizon indigo iris ivory jade jasper juniper kestrel "
    "lagoon lark laurel lemon lotus lumen lynx magnet maple marble meadow mesa meteor mint mosaic nebula "
    "nectar nimbus noble nova oak oasis obsidian ocean olive onyx opal orbit orchid otter panda pebble pepper "
    "phoenix pine pixel plume polar poppy prism pulse quartz quill raven reef ridge river robin ruby saffron "
    "sage salmon sapphire shadow sierra silver spark spruce summit swift tango tide topaz tundra velvet "
    "vertex violet willow zephyr"
)
WORDS = _WORD_TEXT.split()
MAIL_PREFIXES = ("mail", "webmail", "email", "inbox", "post", "m.mail", "secure.mail", "owa", "imail")
MAIL_SUFFIXES = ("mail", "post", "inbox", "box", "letter")
TLDS = (
    "com",
    "net",
    "org",
    "io",
    "co",
    "info",
    "biz",
    "de",
    "fr",
    "nl",
    "ru",
    "jp",
    "kr",
    "cn",
    "hk",
    "tw",
    "in",
    "br",
    "eu",
    "uk",
    "co.uk",
    "com.hk",
    "com.cn",
    "com.tw",
    "com.au",
    "com.br",
    "co.jp",
    "co.kr",
)
ALLOWED_PREFIXES = ("www", "cdn", "static", "api", "news", "shop", "docs", "img", "login", "app", "")
SUB_LABELS = ("a", "m", "www", "u1", "s3", "web", "us-east", "eu", "client", "attachments")
PATHS = (
    "/",
    "/index.html",
    "/inbox",
    "/mail/u/0/",
    "/login",
    "/search",
    "/static/app.js",
    "/images/logo.png",
    "/api/v2/messages",
    "/news/today",
    "/products/123",
    "/account/settings",
)


@dataclass(frozen=True)
class Workload:
    hosts: list[str]  # the webmail list
    urls: list[str]
    blocked: list[bool]  # expected decision per URL (True: block, ICAP 200 with a 403)

    @property
    def blocked_count(self) -> int:
        return sum(self.blocked)

    def write(self, directory: Path) -> tuple[Path, Path]:
        hosts_file = directory / "webmail-hosts.txt"
        urls_file = directory / "urls.txt"
        hosts_file.write_text("".join(f"{host}\n" for host in self.hosts), encoding="ascii")
        urls_file.write_text("".join(f"{url}\n" for url in self.urls), encoding="ascii")
        return hosts_file, urls_file


def real_hosts() -> list[str]:
    """The shipped webmail hosts (the catalogue's curated list), as the first entries of the workload."""
    sys.path.insert(0, str(REPO))
    from policy.services import default_list

    return [host.lower() for host in default_list("webmail") if "/" not in host]


def is_listed(host: str, listed: set[str]) -> bool:
    """The reference decision: the host or a parent on a label boundary is listed."""
    labels = host.split(".")
    return any(".".join(labels[i:]) in listed for i in range(len(labels)))


def synthetic_host(rng: random.Random) -> str:
    word = rng.choice(WORDS)
    number = rng.randrange(1, 1000)
    tld = rng.choice(TLDS)
    shape = rng.randrange(3)
    if shape == 0:
        return f"{rng.choice(MAIL_PREFIXES)}.{word}{number}.{tld}"
    if shape == 1:
        return f"{word}{rng.choice(MAIL_SUFFIXES)}{number}.{tld}"
    return f"{rng.choice(MAIL_PREFIXES)}.{word}-{rng.choice(WORDS)}.{tld}"


def allowed_host(rng: random.Random, hosts: list[str]) -> str:
    """A host that must not match; a quarter of them are label-boundary traps built from listed hosts."""
    kind = rng.randrange(20)  # 0-4: traps (when the reference walk agrees they do not match); else ordinary
    listed = rng.choice(hosts)
    parent = listed.split(".", 1)[1]
    if kind == 0 and "." in parent and parent not in TLDS:
        return parent  # the parent of a listed host: mail.x.com listed, x.com is not
    if kind == 1:
        return "x" + listed  # shares a string suffix, not a label boundary: xmail.x.com
    if kind == 2:
        return f"{rng.choice(SUB_LABELS)}.not{listed}"
    if kind == 3:
        return f"{listed}.cdn{rng.randrange(100)}.net"  # a listed name as a prefix
    if kind == 4 and "." in parent and parent not in TLDS:
        return f"{rng.choice(ALLOWED_PREFIXES) or 'docs'}.{parent}"  # a sibling: docs.x.com beside mail.x.com
    prefix = rng.choice(ALLOWED_PREFIXES)
    name = f"{rng.choice(WORDS)}{rng.choice(WORDS)}{rng.randrange(1, 5000)}.{rng.choice(TLDS)}"
    return f"{prefix}.{name}" if prefix else name


def blocked_host(rng: random.Random, hosts: list[str]) -> str:
    listed = rng.choice(hosts)
    if rng.random() < 0.5:
        return listed
    depth = rng.randrange(1, 3)
    return ".".join(rng.choice(SUB_LABELS) for _ in range(depth)) + "." + listed


def url_for(rng: random.Random, host: str) -> str:
    path = rng.choice(PATHS)
    if rng.random() < 0.3:
        path += f"?q={rng.randrange(10**6)}&lang=en"
    return f"http://{host}{path}"


def generate(seed: int = SEED) -> Workload:
    rng = random.Random(seed)
    hosts = list(dict.fromkeys(real_hosts()))
    listed = set(hosts)
    while len(hosts) < LIST_SIZE:
        host = synthetic_host(rng)
        if host not in listed:
            hosts.append(host)
            listed.add(host)
    blocked_total = round(URL_COUNT * BLOCKED_SHARE)
    plan = [True] * blocked_total + [False] * (URL_COUNT - blocked_total)
    rng.shuffle(plan)
    urls: list[str] = []
    for block in plan:
        while True:
            host = blocked_host(rng, hosts) if block else allowed_host(rng, hosts)
            if is_listed(host, listed) == block:
                break
        urls.append(url_for(rng, host))
    return Workload(hosts=hosts, urls=urls, blocked=plan)
