"""`clearance requests create-from-discovery`: the discovery report's people turned into pending requests.

One step from "who used it while we monitored" to the heads' work: for each person of the department seen
using the service (or, for hosts that are no service's, the category) and blocked under `enforce` today,
a pending access request is created, as if they had asked from the block page. It never approves anything:
the heads decide each one (mail, workspace, `requests approve`). A person who already has a pending request
for it is skipped; the audit names the admin who ran it.
"""

from __future__ import annotations

import argparse
import secrets
from datetime import UTC, datetime
from functools import partial

from icap_server.admin.support import StoreAction, UsageError
from icap_server.config import Config
from icap_server.service.application import decision_settings
from icap_server.service.explain import served_state
from policy.decision import RequestFacts, judge
from policy.discovery import DiscoveryRow, summarise
from policy.requests import AccessRequest, open_key
from policy.services import Service
from policy.store import PolicyStore

DEFAULT_DAYS = 30
NONCE_TTL_S = 60


def add_create_from_discovery(requests: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    create = requests.add_parser(
        "create-from-discovery", help="pending requests for the people discovery saw using a service (no approvals)"
    )
    create.add_argument("--department", required=True)
    target = create.add_mutually_exclusive_group(required=True)
    target.add_argument("--service", help="a catalogue service id")
    target.add_argument("--category", help="a category, for hosts that are no service's")
    create.add_argument("--days", type=int, default=DEFAULT_DAYS, help=f"validity asked for (default {DEFAULT_DAYS})")
    create.set_defaults(handler=create_from_discovery)


def create_from_discovery(args: argparse.Namespace, config: Config) -> StoreAction:
    if not 1 <= args.days <= config.approvals.max_validity_days:
        raise UsageError(f"--days: expected 1 to {config.approvals.max_validity_days}, got {args.days}")
    settings = decision_settings(config)

    def wanted(row: DiscoveryRow) -> bool:
        return row.service == args.service if args.service else (not row.service and row.category == args.category)

    async def action(store: PolicyStore) -> int:
        now = datetime.now(UTC)
        rows = [row for row in summarise(await store.read_discovery(), args.department) if wanted(row) and row.user]
        directory = await store.load_directory()
        heads, delegates = directory.approvers_of(args.department)
        created = skipped = 0
        for row in rows:
            host = row.hosts[0]
            state = await served_state(config, store, host)
            if not judge(state, RequestFacts(host, "/", row.user), settings, now).blocked:
                skipped += 1  # approved or exempt by now: nothing to ask
                continue
            service = state.services.get(row.service) if row.service else None
            justification = (
                f"From the discovery report: {row.total} uses of {row.service or row.category} between "
                f"{row.first_day.isoformat()} and {row.last_seen.date().isoformat()} (created by {args.actor}; "
                "the person has not written a justification yet)"
            )

            build = partial(
                discovery_request,
                row=row,
                host=host,
                justification=justification,
                days=args.days,
                now=now,
                department=args.department,
                approvers=tuple(sorted(heads | delegates)),
                service=service,
            )
            key = open_key(row.user, row.category, host, row.service)
            stored, made = await store.create_request(build, key, secrets.token_urlsafe(12), NONCE_TTL_S, 0, args.actor)
            if made and stored is not None:
                created += 1
                print(f"{stored.id}\t{row.user}")
            else:
                skipped += 1
        print(f"created {created}, skipped {skipped} (already pending, approved or exempt)")
        return 0

    return action


def discovery_request(
    request_id: str,
    *,
    row: DiscoveryRow,
    host: str,
    justification: str,
    days: int,
    now: datetime,
    department: str,
    approvers: tuple[str, ...],
    service: Service | None,
) -> AccessRequest:
    """The pending request for one discovery row, as the portal would have stored it (no client address)."""
    return AccessRequest(
        id=request_id,
        user=row.user,
        client_ip=None,
        category=row.category,
        host=host,
        justification=justification,
        days=days,
        created_at=now,
        department=department,
        approvers=approvers,
        key=secrets.token_urlsafe(18),
        service=row.service,
        service_en=service.name_en if service else "",
        service_zh=service.name_zh if service else "",
    )
