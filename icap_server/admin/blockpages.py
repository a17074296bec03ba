"""`clearance blockpages check|preview`: try the block-page templates without starting the server or Redis."""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from blockpages.negotiate import LANGUAGES
from icap_server.admin.support import Commands
from icap_server.config import Config

BLOCK_REASONS = (
    "no-approval",
    "approval-expired",
    "approval-revoked",
    "approval-suspended",
    "not-permitted",
    "policy-unavailable",
    "bad-request",
)


def register(commands: Commands) -> None:
    group = commands.add_parser("blockpages", help="check or preview the block-page templates")
    group.set_defaults(handler=run)
    pages = group.add_subparsers(dest="action", required=True, metavar="ACTION")
    pages.add_parser("check", help="compile and test-render every template (as serve does at start-up)")
    preview = pages.add_parser("preview", help="print a block page rendered with sample facts")
    preview.add_argument("--reason", choices=BLOCK_REASONS, default="no-approval")
    preview.add_argument("--language", choices=LANGUAGES, default=None, help="default: blockpages.default_language")
    preview.add_argument("--format", choices=("html", "json", "text"), default="html")
    preview.add_argument("--host", default="mail.example.com")
    preview.add_argument("--path", default="/mail/u/0/")
    preview.add_argument("--category", default="webmail")
    preview.add_argument("--user", default="alice")
    preview.add_argument("--form", action="store_true", help="include a sample request-access form")


def run(args: argparse.Namespace, config: Config) -> int:
    """BlockPageError (a ConfigError) propagates: main prints it as one line and exits 2."""
    from blockpages.render import UNCATEGORISED, BlockFacts, RequestForm  # Jinja2 and Babel only when needed
    from icap_server.service.pages import block_pages

    renderer = block_pages(config)
    if args.action == "check":
        where = config.blockpages.template_dir or "built-in templates only"
        print(f"block-page templates OK ({where})")
        return 0
    facts = BlockFacts(
        host=args.host,
        path=args.path,
        category=None if args.reason in UNCATEGORISED else args.category,
        user=args.user or None,
        client_ip="10.0.0.1",
        reason=args.reason,
        reference="0123456789ab",
        time=datetime.now(UTC).astimezone(ZoneInfo(config.policy.timezone)),
    )
    form = RequestForm("http://portal.example/request", "sample-token", config.approvals.max_validity_days)
    language = args.language or renderer.settings.default_language
    page = renderer.render(facts, args.format, language, form if args.form else None)
    sys.stdout.buffer.write(page.body)
    return 0
