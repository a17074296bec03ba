"""The access report as a printable page: who has access, to what, on whose authority and why, per department.

The same rows as `clearance report` (`policy.access_report`: group, department and network approvals
expanded to the people they cover, one row per person × approval), for heads and auditors who do not use a
command line. `render_report_page` is pure: a report in, HTML and the page's Content-Security-Policy out.
The page holds its one stylesheet inline (`templates/report.css`, print rules included: landscape, rows not
split across pages, every heading repeated on each printed page), allowed by its hash, so a saved or printed
copy is complete. Headings are in the browser's language with the other language beside them, from the one
catalog (`texts.environment`); the rows themselves (names, justifications, notes) are shown as recorded.

Who may see which department (`may_see`) is decided here too, on the identity the heads' workspace trusts
(`heads_auth.proxy_user`): a head or delegate of the department, or a user named in `portal.auditors`, who
may also see every department at once. `read_access_report` reads the report's records from the store,
for this page and for `clearance report`.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import structlog
from starlette.requests import Request as HTTPRequest
from starlette.responses import HTMLResponse, Response

from blockpages.negotiate import Language
from icap_server.config import Config
from icap_server.portal import texts
from icap_server.portal.heads_auth import proxy_user
from icap_server.service.catalogue import shipped_services
from policy.access_report import AccessReport, AccessRow, Thresholds, build_access_report
from policy.approvals import Approval, SubjectKind
from policy.directory import Directory
from policy.identity import normalise_username
from policy.state import ServiceCatalogue
from policy.store import PolicyStore

log = structlog.get_logger("clearance.portal")

REPORT_DEFAULT_DAYS = 90  # the revoked-in-the-period rows start this many days back, as `clearance report`'s
STYLE = (Path(__file__).parent / "templates" / "report.css").read_text(encoding="utf-8")
STYLE_HASH = base64.b64encode(hashlib.sha256(STYLE.encode()).digest()).decode()
CSP = (
    f"default-src 'none'; style-src 'sha256-{STYLE_HASH}'; form-action 'none'; base-uri 'none'; frame-ancestors 'none'"
)

Check = Callable[[Directory, list[Approval]], None]
Refusal = Callable[[str], Response]  # the heads' workspace's refusal page of a kind (`heads_texts.REFUSALS`)


@dataclass(frozen=True, slots=True)
class ReportPage:
    html: str
    csp: str  # the page's own Content-Security-Policy: its inline stylesheet, by hash, and nothing else


async def read_access_report(
    config: Config,
    store: PolicyStore,
    now: datetime,
    since: datetime,
    department: str | None,
    check: Check | None = None,
) -> AccessReport:
    """The report from the store's records (`check` sees the directory and approvals first, and may refuse)."""
    approvals = await store.all_approvals()
    directory = await store.load_directory()
    if check is not None:
        check(directory, approvals)
    catalogue = ServiceCatalogue((*shipped_services(config), *await store.admin_services()))
    limits = Thresholds(on_review_overdue=config.approvals.on_review_overdue)
    return build_access_report(approvals, directory, await store.usage(), catalogue, now, since, department, limits)


def may_see(user: str, department: str | None, directory: Directory, auditors: Iterable[str], config: Config) -> bool:
    """An auditor sees any department, or all (None); a head or delegate only a department they head or deputise."""
    if user in {normalise_username(name, config.identity) for name in auditors}:
        return True
    return department is not None and directory.may_approve(user, department)


def since_days_ago(now: datetime, zone: ZoneInfo, days: int) -> datetime:
    """Local midnight `days` days before today: where the revoked-in-the-period rows start."""
    day = now.astimezone(zone).date() - timedelta(days=days)
    return datetime.combine(day, datetime.min.time(), tzinfo=zone)


def render_report_page(
    report: AccessReport, zone: ZoneInfo, language: Language, organisation: dict[Language, str]
) -> ReportPage:
    """The printable page of a report, in `language` with the other beside it."""

    def local(moment: datetime | None, form: str = "%Y-%m-%d %H:%M") -> str:
        return moment.astimezone(zone).strftime(form) if moment else "-"

    html = (
        texts.environment(language)
        .get_template("report.html")
        .render(  # a tuple of rows and plain values: the template computes nothing
            report=report,
            org=organisation,
            style=STYLE,
            zone=zone.key,
            local=local,
            last_day=lambda moment: local(moment - timedelta(seconds=1), "%Y-%m-%d"),
            via=via,
        )
    )
    return ReportPage(html, CSP)


def via(row: AccessRow) -> str:
    """How the row's person is covered: `user`, `group finance-staff`, `department IT`, `network 10.0.0.0/8`."""
    approval = row.approval
    return "user" if approval.subject_kind is SubjectKind.USER else f"{approval.subject_kind} {approval.subject}"


class NotAllowed(Exception):
    """The signed-in user may not see the department asked for."""


async def report_route(
    request: HTTPRequest, config: Config, store: PolicyStore, zone: ZoneInfo, language: Language, refusal: Refusal
) -> Response:
    """`GET /report?department=D&since=YYYY-MM-DD`: the page, for a head or delegate of D or an auditor.

    Without `department`, every department: for auditors only. Refusals are the heads' workspace's pages.
    """
    user = proxy_user(request, config)
    if user is None:
        return refusal("sign-in")
    department = request.query_params.get("department") or None
    now = datetime.now(UTC)
    try:
        since_text = request.query_params.get("since")
        since = (
            datetime.combine(date.fromisoformat(since_text), datetime.min.time(), tzinfo=zone)
            if since_text
            else since_days_ago(now, zone, REPORT_DEFAULT_DAYS)
        )
    except ValueError:
        return refusal("bad-form")

    def allowed(directory: Directory, approvals: list[Approval]) -> None:
        if not may_see(user, department, directory, config.portal.auditors, config):
            raise NotAllowed

    try:
        report = await read_access_report(config, store, now, since, department, allowed)
    except NotAllowed:
        log.warning("report_refused", user=user, department=department)
        return refusal("not-yours")
    log.info("report_shown", user=user, department=department)
    organisation = texts.both(config.organisation.name_en, config.organisation.name_zh)
    page = render_report_page(report, zone, language, organisation)
    headers = {"Content-Security-Policy": page.csp, "Content-Language": language, "Vary": "Accept-Language"}
    return HTMLResponse(page.html, headers=headers)
