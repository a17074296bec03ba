"""Routing, and 1,000 mixed transactions on one connection: through the protocol core, and a running server.

How each scenario is fed (whole and byte by byte, every answer grammar-checked): tests/support/icap_driver.py.
"""

from __future__ import annotations

import random
import socket
import threading
from dataclasses import dataclass
from datetime import UTC, datetime

import pytest

from icap_server.config import Config
from icap_server.protocol import (
    BodyData,
    EndOfMessage,
    EndOfPreview,
    ICAPConnection,
    ICAPRequest,
)
from icap_server.service import responses
from icap_server.service.application import SERVICES, Application
from policy.state import PolicyState
from tests.conftest import StartServer
from tests.support.icap_driver import (
    HEAD,
    TAG,
    answer,
    chunks,
    drive,
    http_head,
    http_response_head,
    icap,
    options_request,
    run_both,
)
from tests.support.icap_grammar import parse_one, parse_stream

# ---- routing (Application) ---------------------------------------------------------------------------------


NOW = datetime(2026, 1, 1, tzinfo=UTC)


class VersionOnlyPolicy:
    """A policy source whose version is known but whose state must not be needed (routing, OPTIONS)."""

    def __init__(self) -> None:
        self.state_reads = 0

    @property
    def version(self) -> int:
        return 7

    @property
    def state(self) -> PolicyState:
        self.state_reads += 1
        raise AssertionError("routing and OPTIONS must not need the policy state")


@pytest.mark.parametrize(
    ("data", "status"),
    [
        (icap(uri="icap://icap.example/unknown", req_hdr=HEAD, headers=[("Allow", "204")]), 404),
        (icap("OPTIONS", "icap://icap.example/nope", encapsulated=False), 404),
        (icap("RESPMOD", "icap://icap.example/reqmod", res_hdr=http_response_head(), body=chunks(b"x")), 405),
        (icap("REQMOD", "icap://icap.example/respmod", req_hdr=HEAD, headers=[("Allow", "204")]), 405),
    ],
)
def test_routing_404_and_405(data: bytes, status: int) -> None:
    assert set(SERVICES) == {"/reqmod", "/respmod"}
    policy = VersionOnlyPolicy()
    app = Application(Config(), policy)
    statuses: list[int] = []

    def route(conn: ICAPConnection, request: ICAPRequest, body: bytes, event: EndOfPreview | EndOfMessage) -> bytes:
        verdict = app.evaluate(request, NOW)
        statuses.append(verdict.status)
        return conn.send(app.respond(request, verdict, conn.can_send_204, body, NOW))

    follow_up = icap(uri="icap://icap.example/other", req_hdr=HEAD)  # the connection carries on after a 404/405
    result = run_both(data + follow_up, route)
    assert statuses == [status, 404] * 2  # once per run
    assert policy.state_reads == 0
    first = result.parsed()[0]
    assert first.status == status and first.get("Encapsulated") == "null-body=0" and first.get("ISTag")
    assert result.keep_alive and result.transactions == 2


def test_routing_options() -> None:
    policy = VersionOnlyPolicy()
    app = Application(Config(), policy)
    conn = ICAPConnection()
    conn.receive_data(options_request())
    request = conn.next_event()
    assert isinstance(request, ICAPRequest) and conn.next_event() == EndOfMessage()
    verdict = app.evaluate(request, NOW)
    assert verdict.status == 0 and policy.state_reads == 0
    parsed = parse_one(conn.send(app.respond(request, verdict, conn.can_send_204, None, NOW)), "OPTIONS")
    assert parsed.get("Methods") == "REQMOD" and parsed.get("ISTag") == '"CL-7"'


# ---- 1,000 mixed transactions on one connection ------------------------------------------------------------


@dataclass
class Planned:
    """One client transaction of the mixed run, and what the server must see and answer."""

    index: int
    data: bytes  # every byte the client sends for it (including what follows 100 Continue)
    method: str
    http: bytes | None
    body: bytes | None  # the original body; None for null-body
    plan: str  # "none" (no preview), "continue", "answer" (204 on the preview), "ieof"
    allow_204: bool
    preview_part: bytes = b""

    @property
    def seen(self) -> bytes:
        """The de-chunked bytes the server receives."""
        return self.preview_part if self.plan == "answer" else self.body or b""

    @property
    def statuses(self) -> list[int]:
        if self.plan == "answer":
            return [204]
        final = 204 if self.allow_204 and self.method != "OPTIONS" else 200
        return [100, final] if self.plan == "continue" else [final]


def random_chunks(rng: random.Random, body: bytes, last: bytes = b"0\r\n\r\n") -> bytes:
    out = bytearray()
    pos = 0
    while pos < len(body):
        size = min(len(body) - pos, rng.choice([1, 7, 100, 1000, 8192, 40_000]))
        size_text = b"%x" % size if rng.random() < 0.5 else b"%X" % size
        extension = rng.choice([b"", b"", b"", b";a=b", b" ; x"])
        out += size_text + extension + b"\r\n" + body[pos : pos + size] + b"\r\n"
        pos += size
    return bytes(out) + last


def random_body(rng: random.Random, index: int) -> bytes:
    size = rng.choice([0, 1, rng.randint(2, 100), rng.randint(100, 6000)])
    if index % 97 == 13:
        size = rng.randint(65_537, 90_000)  # > 64 KiB now and then
    return rng.randbytes(size)


def plan_transactions(rng: random.Random, count: int, continues: bool = True) -> list[Planned]:
    """`continues=False` for a running server, which decides on every preview (never a 100 Continue)."""
    plans = []
    for index in range(count):
        txn = [("X-Txn", str(index))]
        allow_204 = rng.random() < 0.5
        allow = [("Allow", "204")] if allow_204 else []
        kind = rng.choice(["get", "get", "options", "post", "post", "preview", "preview", "preview"])
        if kind == "get":
            http = http_head("GET", f"http://site{index}.example/p?i={index}")
            data = icap(req_hdr=http, headers=[*txn, ("Preview", "0"), *allow])
            plans.append(Planned(index, data, "REQMOD", http, None, "none", allow_204))
        elif kind == "options":
            choices: list[str | bool] = [False, "null-body=0"]
            encapsulated = rng.choice(choices)
            data = icap("OPTIONS", headers=txn, encapsulated=encapsulated)
            plans.append(Planned(index, data, "OPTIONS", None, None, "none", allow_204))
        else:
            http = http_head("POST", f"http://upload{index}.example/", [("Content-Type", "application/x-test")])
            body = random_body(rng, index)
            if kind == "post":
                data = icap(req_hdr=http, body=random_chunks(rng, body), headers=[*txn, *allow])
                plans.append(Planned(index, data, "REQMOD", http, body, "none", allow_204))
                continue
            preview = rng.choice([0, 1, 10, 1024, 4096])
            headers = [*txn, ("Preview", str(preview)), *allow]
            if len(body) <= preview and rng.random() < 0.7:
                data = icap(req_hdr=http, body=random_chunks(rng, body, b"0; ieof\r\n\r\n"), headers=headers)
                plans.append(Planned(index, data, "REQMOD", http, body, "ieof", allow_204, body))
                continue
            part, rest = body[:preview], body[preview:]
            plan = rng.choice(["continue", "answer"])
            plan = plan if continues else "answer"
            data = icap(req_hdr=http, body=random_chunks(rng, part), headers=headers)
            if plan == "continue":
                data += random_chunks(rng, rest)
            plans.append(Planned(index, data, "REQMOD", http, body, plan, allow_204, part))
    return plans


def random_slices(rng: random.Random, data: bytes) -> list[bytes]:
    pieces = []
    pos = 0
    while pos < len(data):
        size = rng.choice([1, 2, 3, 5, 17, 64, 100, 300, 1500]) if rng.random() < 0.98 else rng.randint(1, 100_000)
        pieces.append(data[pos : pos + size])
        pos += size
    return pieces


def test_one_thousand_mixed_transactions_on_one_connection() -> None:
    rng = random.Random(3507)
    plans = plan_transactions(rng, 1000)
    assert {plan.plan for plan in plans} == {"none", "continue", "answer", "ieof"}
    assert any(plan.body is not None and len(plan.body) > 65536 for plan in plans)
    assert any(plan.body == b"" for plan in plans)
    data = b"".join(plan.data for plan in plans)

    def stress(conn: ICAPConnection, request: ICAPRequest, body: bytes, event: EndOfPreview | EndOfMessage) -> bytes:
        plan = plans[int(request.headers.get("X-Txn") or "-1")]
        if isinstance(event, EndOfPreview):
            assert plan.plan in ("continue", "answer") and body == plan.preview_part
            return conn.send_continue() if plan.plan == "continue" else conn.send(responses.no_content(TAG))
        assert event.ieof == (plan.plan == "ieof")
        return conn.send(answer(conn, request, body))

    whole = drive([data], stress)
    for seed in (1, 2):
        sliced = drive(random_slices(random.Random(seed), data), stress)
        assert sliced.comparable() == whole.comparable()
    assert whole.error is None and whole.end == "closed" and whole.keep_alive
    assert whole.transactions == 1000

    # per transaction: the request as parsed, and the de-chunked bytes between it and the next one
    seen: list[tuple[ICAPRequest, bytes]] = []
    for event in whole.events:
        if isinstance(event, ICAPRequest):
            seen.append((event, b""))
        elif isinstance(event, BodyData):
            seen[-1] = (seen[-1][0], seen[-1][1] + event.data)
    assert len(seen) == 1000
    for plan, (request, body) in zip(plans, seen, strict=True):
        assert request.headers.get("X-Txn") == str(plan.index)
        assert request.method == plan.method
        if plan.http is not None:
            assert request.encapsulated.sections == (("req-hdr", 0, len(plan.http)),)
            assert request.encapsulated.body_offset == len(plan.http)
            assert request.http_request is not None and request.http_request.raw == plan.http
        else:
            assert request.encapsulated.sections == () and request.encapsulated.body_offset == 0
        assert request.encapsulated.body == ("req-body" if plan.body is not None else "null-body")
        assert body == plan.seen

    check_answers(plans, whole.output)


def check_answers(plans: list[Planned], output: bytes) -> None:
    """Every answer, read by the grammar reader: the statuses planned, echoes exact, OPTIONS answered."""
    parsed = parse_stream(output)
    assert [response.status for response in parsed] == [status for plan in plans for status in plan.statuses]
    finals = [response for response in parsed if response.status != 100]
    for plan, response in zip(plans, finals, strict=True):
        if response.status == 200 and plan.method == "REQMOD":
            assert response.req_hdr == plan.http and response.body == plan.body
        if plan.method == "OPTIONS":
            assert response.get("Methods") == "REQMOD" and response.body is None


def test_one_thousand_mixed_transactions_against_a_running_server(start_icap_server: StartServer) -> None:
    """The same mix over a real socket, sent in random slices while the answers are read; EOF ends it."""
    plans = plan_transactions(random.Random(3507), 1000, continues=False)
    assert {plan.plan for plan in plans} == {"none", "answer", "ieof"}
    data = b"".join(plan.data for plan in plans)
    server = start_icap_server()
    with socket.create_connection((server.host, server.port), timeout=30) as sock:
        failure: list[BaseException] = []

        def send() -> None:
            try:
                for piece in random_slices(random.Random(1), data):
                    sock.sendall(piece)
                sock.shutdown(socket.SHUT_WR)  # the end of the stream: the server closes after the last answer
            except BaseException as error:
                failure.append(error)

        sender = threading.Thread(target=send, daemon=True)
        sender.start()
        output = bytearray()
        while chunk := sock.recv(1 << 16):
            output += chunk
        sender.join(timeout=30)
    assert not failure and not sender.is_alive(), failure
    check_answers(plans, bytes(output))
