"""The portal's bounds (issue 9, Found 7): pending requests per user, a rate per user and per address, one digest
per interval to each head, and form posts only from the portal or the block page."""

from __future__ import annotations

import time
import urllib.parse
from dataclasses import dataclass, field
from email.message import Message
from typing import Any

import redis

from tests.support.smtp import Inbox, smtp_sink
from tests.support.waiting import wait_until
from tests.test_portal import WHY, HTTPAnswer, Portal, fetch, requests_in_redis, start_portal

__all__ = ["start_portal"]  # the fixture, used by name


def post(portal: Portal, token: str, client: str = "10.1.2.3", **headers: str) -> HTTPAnswer:
    body = urllib.parse.urlencode({"token": token, "justification": WHY, "days": "30"}).encode()
    sent = {"Content-Type": "application/x-www-form-urlencoded", "X-Forwarded-For": client, **headers}
    return fetch(portal.url + "/request", body, sent)


def test_a_burst_of_200_creates_at_most_the_bound_and_is_told_why(start_portal: Any, sync_redis: redis.Redis) -> None:
    portal: Portal = start_portal(extra="  max_pending_per_user: 3\n  max_submits_per_minute: 10\n")
    answers = [post(portal, portal.token(host=f"h{n}.mail.example")) for n in range(200)]
    statuses = [answer.status for answer in answers]
    assert statuses[:3] == [303] * 3 and set(statuses[3:]) == {429}, statuses
    assert len(requests_in_redis(sync_redis)) == 3
    waiting = answers[3].text
    assert "You have requests waiting already" in waiting and "你已有等候處理的申請" in waiting
    assert "Too many requests just now" in answers[-1].text and "剛才的申請過多" in answers[-1].text
    assert [answer.status for answer in answers[3:10]] == [429] * 7
    assert all("waiting already" in answer.text for answer in answers[3:10])  # under the rate: the bound answers
    assert all("Too many requests" in answer.text for answer in answers[10:])  # over it: the rate

    # Another person at another computer is served; another person at the same computer is held by its rate.
    assert post(portal, portal.token(user="carol", client_ip="10.1.2.4"), client="10.1.2.4").status == 303
    hfin = portal.token(user="hfin", client_ip="10.1.2.3")
    assert "Too many requests" in post(portal, hfin).text
    mine = [item for item in requests_in_redis(sync_redis).values() if item["user"] == "alice"]
    assert len(mine) == 3 and {item["status"] for item in mine} == {"pending"}


def test_form_posts_from_another_site_are_refused(start_portal: Any, sync_redis: redis.Redis) -> None:
    portal: Portal = start_portal(extra="  max_submits_per_minute: 100\n  max_pending_per_user: 10\n")
    for headers in ({"Origin": "https://evil.example"}, {"Referer": "https://evil.example/page"}):
        refused = post(portal, portal.token(host="evil-test.mail.example"), **headers)
        assert refused.status == 403 and "Sent from another site" in refused.text and "由其他網站送出" in refused.text
    assert requests_in_redis(sync_redis) == {}
    accepted = [
        {},  # no Origin at all (an older browser)
        {"Origin": "null"},  # the block page and the portal's pages say Referrer-Policy: no-referrer
        {"Origin": portal.url},  # the portal's own form page
        {"Origin": "http://a.mail.example"},  # the block page, shown in place of the blocked site
    ]
    for n, headers in enumerate(accepted):
        answer = post(portal, portal.token(host="a.mail.example" if n == 3 else f"x{n}.mail.example"), **headers)
        assert answer.status == 303, (headers, answer.status, answer.text[:300])
    assert len(requests_in_redis(sync_redis)) == 4


@dataclass
class TimedInbox(Inbox):
    arrived: list[float] = field(default_factory=list)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.arrived.append(time.monotonic())
        return await super().handle_DATA(server, session, envelope)


def test_the_head_gets_one_mail_at_once_then_one_digest_per_interval(start_portal: Any) -> None:
    inbox = TimedInbox()
    with smtp_sink(inbox) as smtp:
        extra = "  max_pending_per_user: 5\n  max_submits_per_minute: 300\n  digest_interval_minutes: 0.05\n"
        portal: Portal = start_portal(sections=smtp, extra=extra)  # a digest every 3 s at most
        started = time.monotonic()
        answers = [post(portal, portal.token(host=f"h{n}.mail.example")) for n in range(200)]
        assert [answer.status for answer in answers].count(303) == 5
        wait_until(lambda: len(inbox.messages) >= 2, 10, what="the digest")
    (first_to, first), (digest_to, digest) = inbox.messages
    assert sorted(first_to) == sorted(digest_to) == ["dfin@example.gov", "hfin@example.gov"]  # one mail for both
    assert "Q1" in first["Subject"] and "alice" in first["Subject"]  # the first request went at once
    assert digest["Subject"] == "Access requests: 4 new (Q2, Q3, Q4, Q5)"
    body = payload(digest)
    assert "4 new access requests wait for your decision." in body and "有 4 項新的存取申請等候你決定。" in body
    for request_id in ("Q2", "Q3", "Q4", "Q5"):
        assert f"clearance requests approve {request_id} --by" in body
    assert inbox.arrived[0] - started < 3 <= inbox.arrived[1] - inbox.arrived[0] + 0.1


def payload(message: Message) -> str:
    data = message.get_payload(decode=True)
    assert isinstance(data, bytes)
    return data.decode("utf-8")


def test_the_rate_is_a_bucket_refilled_over_a_minute() -> None:
    from icap_server.portal.limits import RateLimit

    now = [0.0]
    limit = RateLimit(6, clock=lambda: now[0])
    assert [limit.allow("alice") for _ in range(8)] == [True] * 6 + [False] * 2
    assert limit.allow("bob")  # each key has a bucket of its own
    now[0] += 10.0  # one post's worth comes back every 10 s
    assert [limit.allow("alice") for _ in range(2)] == [True, False]
    now[0] += 600.0
    assert sum(limit.allow("alice") for _ in range(10)) == 6  # never more than the burst
