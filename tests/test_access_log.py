"""The access-log line written directly (`icap_server.runtime.logs.AccessLog`) is the line structlog wrote.

The per-transaction line left structlog's processor chain for speed (issue 12). What a log reader sees must
not change: for generated transactions (odd and unicode users and hosts, None everywhere it may be, passes,
blocks, tenant-restricted passes, routing errors) the line `ICAPProtocol._logged` writes is compared, byte for
byte but for the timestamp's value, with what the old chain renders from the same fields. The old chain is
kept here (`old_chain_line`), as configure_logging built it before, and the live structlog chain (which every
other event still uses) is compared too, so neither can drift from the direct line unnoticed.
"""

from __future__ import annotations

import dataclasses
import io
import logging
import re
from collections.abc import Iterator, Mapping
from typing import Any

import orjson
import pytest
import structlog
from hypothesis import given, settings
from hypothesis import strategies as st

from icap_server.config import Config
from icap_server.protocol import ICAPConnection, ICAPRequest
from icap_server.runtime import logs
from icap_server.runtime.logs import FastTimeStamper, access_log, configure_logging, flush_logs, static_fields
from icap_server.runtime.server import ICAPProtocol, ICAPServer, Transaction
from icap_server.service.application import Application, FixedPolicy, Verdict
from policy.decision import Action, Decision, Reason
from policy.identity import Identity
from policy.state import PolicyState
from tests.support.icap_client import reqmod

TIMESTAMP = re.compile(rb'"timestamp":"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z)"')


class Lines:
    """A logger for the old chain: it keeps what the renderer hands it."""

    def __init__(self) -> None:
        self.lines: list[bytes] = []

    def info(self, message: bytes) -> None:
        self.lines.append(message)


def old_chain_line(event: str, fields: Mapping[str, Any], static: Mapping[str, Any] | None) -> bytes:
    """The line as structlog rendered it before: configure_logging's JSON chain, run on the same fields."""
    processors: list[Any] = [static_fields(static)] if static else []
    processors += [
        structlog.processors.add_log_level,
        structlog.processors.format_exc_info,
        FastTimeStamper(),
        structlog.processors.JSONRenderer(serializer=orjson.dumps),
    ]
    sink = Lines()
    logger = structlog.wrap_logger(
        sink, processors=processors, wrapper_class=structlog.make_filtering_bound_logger(logging.INFO)
    )
    logger.info(event, **fields)
    (line,) = sink.lines
    return line


def without_timestamp(line: bytes) -> bytes:
    """The line with its timestamp's value blanked, after checking that it has structlog's exact format."""
    assert len(TIMESTAMP.findall(line)) == 1, line
    return TIMESTAMP.sub(b'"timestamp":"T"', line)


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    yield
    flush_logs()
    logs._buffers.clear()
    structlog.reset_defaults()
    access_log.direct(None, {}, FastTimeStamper())


APP = Application(Config(), FixedPolicy(PolicyState(version=7)))


def parsed_request() -> ICAPRequest:
    conn = ICAPConnection()
    conn.receive_data(reqmod("http://mail.example.com/inbox", user="alice"))
    request = conn.next_event()
    assert isinstance(request, ICAPRequest)
    return request


REQUEST = parsed_request()
odd_text = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=40) | st.sampled_from(
    ["", " ", '"', "\\", "\x00", "alice@EXAMPLE", "DOMAIN\\bob", "李小明", "mail.google.com."]
)
maybe = st.none() | odd_text
unicode_hosts = st.sampled_from(["xn--fiqs8s.example", "bücher.example", "例子.测试", "mail.google.com", "[::1]"])
decisions = st.none() | st.builds(
    Decision,
    action=st.sampled_from(Action),
    reason=st.sampled_from(Reason),
    category=maybe,
    matched_entry=maybe,
    approval_id=maybe,
    rule_id=maybe,
    exemption_id=maybe,
    approval_scope=maybe,
    review_overdue=st.booleans(),
    service=maybe,
    tenant=st.none() | st.sampled_from(["google", "microsoft", "dropbox"]) | odd_text,
)
verdicts = st.builds(
    Verdict,
    status=st.sampled_from([0, 404, 405]),
    identity=st.builds(Identity, user=maybe, client_ip=st.none() | st.ip_addresses().map(str) | odd_text),
    host=st.none() | unicode_hosts | odd_text,
    decision=decisions,
    version=st.integers(0, 2**40),
    reference=st.none() | st.text("0123456789abcdef", min_size=12, max_size=12),
)
statics = st.none() | st.fixed_dictionaries({"worker": st.none() | st.integers(0, 64) | st.just("portal")})


def configured(static: Mapping[str, Any] | None, buffered: bool = True) -> io.BytesIO:
    stream = io.BytesIO()
    configure_logging("info", "json", stream=stream, fields=static, buffered=buffered)
    return stream


@settings(max_examples=400, deadline=None)
@given(
    verdict=verdicts,
    static=statics,
    method=st.sampled_from(["REQMOD", "RESPMOD", "OPTIONS"]) | odd_text,
    service=st.sampled_from(["/reqmod", "/respmod", "/nope"]) | odd_text,
    status=st.sampled_from([200, 204, 400, 404, 405, 500, 503]),
)
def test_the_direct_line_is_the_line_structlog_wrote(
    verdict: Verdict, static: dict[str, Any] | None, method: str, service: str, status: int
) -> None:
    stream = configured(static)
    protocol = ICAPProtocol(ICAPServer(APP))
    request = dataclasses.replace(REQUEST, method=method, service=service)
    protocol._logged(Transaction(request, verdict, started=0.0, keep_body=False), status)
    flush_logs()
    written = stream.getvalue()
    assert written.endswith(b"\n") and written.count(b"\n") == 1, written
    direct = written[:-1]
    duration = orjson.loads(direct)["duration_ms"]  # a clock reading, not rendering: the same value for both
    fields = {"method": method, "service": service, "status": status, "duration_ms": duration}
    fields.update(verdict.log_fields())
    assert without_timestamp(direct) == without_timestamp(old_chain_line("icap", fields, static))

    structlog.get_logger("live").info("icap", **fields)  # the chain every other event takes today
    flush_logs()
    live = stream.getvalue()[len(written) : -1]
    assert without_timestamp(direct) == without_timestamp(live)


class Rendered:
    """A value orjson cannot serialise, which tells structlog how to show it."""

    def __structlog__(self) -> str:
        return "rendered"


class Opaque:
    def __repr__(self) -> str:
        return "<opaque>"


@given(
    extra=st.dictionaries(
        st.text(min_size=1, max_size=10).filter(lambda key: key not in {"event", "level", "timestamp"}),
        st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.floats(allow_nan=False) | odd_text,
        max_size=6,
    ),
    buffered=st.booleans(),
)
@settings(max_examples=200, deadline=None)
def test_values_orjson_cannot_render_fall_back_as_in_structlog(extra: dict[str, Any], buffered: bool) -> None:
    """Beyond what a Verdict holds: any JSON value, and objects rendered by `__structlog__` or repr."""
    stream = configured({"worker": 3}, buffered=buffered)
    fields = {**extra, "odd": Opaque(), "told": Rendered()}
    access_log.info("icap", dict(fields))
    if buffered:
        assert stream.getvalue() == b""  # batched: nothing written before the flush
        flush_logs()
    direct = stream.getvalue()[:-1]
    assert b'"odd":"<opaque>"' in direct and b'"told":"rendered"' in direct
    assert without_timestamp(direct) == without_timestamp(old_chain_line("icap", fields, {"worker": 3}))


def test_above_info_no_access_line_and_warnings_still_written() -> None:
    stream = io.BytesIO()
    configure_logging("warning", "json", stream=stream, buffered=True)
    access_log.info("icap", {"method": "REQMOD", "status": 204})
    structlog.get_logger("x").warning("held_back", n=1)
    flush_logs()
    (line,) = stream.getvalue().splitlines()
    assert orjson.loads(line)["event"] == "held_back"


def test_console_format_still_shows_the_access_line() -> None:
    stream = io.StringIO()
    configure_logging("info", "console", stream=stream)
    access_log.info("icap", {"method": "REQMOD", "host": "例子.测试", "decision": "block", "user": None})
    text = stream.getvalue()
    assert "icap" in text and "例子.测试" in text and "block" in text and "{" not in text
