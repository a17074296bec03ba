"""Each head's digest carries a single-use link per item, bound to that head, the item and its actions (issue 11).

The same scene as the reminders' acceptance test (tests/test_reminders.py), a real Redis and a real SMTP sink:
the links in hfin's mail verify under the portal's secret as hfin's, for exactly the item they stand beside and
only the actions that item allows; dfin's are dfin's. Using a link (once, and never again) is
tests/test_heads_workspace.py.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from icap_server.config import load_config
from icap_server.portal.links import portal_secret
from policy.store import PolicyStore
from policy.tokens import LinkClaim, verify_link
from tests.conftest import CLI
from tests.support.smtp import Inbox, smtp_sink
from tests.test_reminders import mail_text, seed, write_config


def links_by_item(body: str) -> dict[str, str]:
    """item id -> the link on the line that follows its lines (a digest lists each item, then its link)."""
    found: dict[str, str] = {}
    item = None
    for line in body.splitlines():
        head = re.match(r"^  ([AQ]\d+)  ", line)
        if head:
            item = head.group(1)
        elif "/heads/link?t=" in line and item is not None:
            found[item] = line.split(": ", 1)[1].strip()
    return found


def claim_of(link: str, secret: str) -> LinkClaim:
    parts = urlsplit(link)
    assert (parts.scheme, parts.netloc, parts.path) == ("https", "portal.example.gov", "/heads/link")
    return verify_link(parse_qs(parts.query)["t"][0], secret)


def test_each_head_s_digest_links_are_theirs_and_bound_to_the_item(
    redis_url: str, cli: CLI, tmp_path: Path
) -> None:
    inbox = Inbox()
    with smtp_sink(inbox, timeout=5) as smtp:
        config_path = write_config(tmp_path / "reminders.yaml", smtp)
        seed(redis_url, cli, config_path, tmp_path)
        cli("--config", str(config_path), "reminders", "run")
    config = load_config(config_path)

    async def secret() -> str:
        store = PolicyStore.from_url(redis_url)
        try:
            return await portal_secret(config, store)
        finally:
            await store.close()

    key = asyncio.run(secret())
    for head, address in (("hfin", "hfin@example.gov"), ("dfin", "dfin@example.gov")):
        (digest,) = inbox.to(address)
        links = links_by_item(mail_text(digest))
        assert set(links) == {"Q1", "Q2", "A1", "A2"}, links
        for item, link in links.items():
            claim = claim_of(link, key)
            assert (claim.head, claim.item) == (head, item)
            expected = ("approve", "deny") if item.startswith("Q") else ("keep", "review-revoke", "suspend")
            assert tuple(claim.actions) == expected
        assert len(set(links.values())) == 4  # one link each, none shared
