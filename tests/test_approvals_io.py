"""`clearance approvals import` / `export`: bulk grants checked like `approvals grant`, exact round trips."""

from __future__ import annotations

import csv
import functools
import io
import json
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import redis

from tests.conftest import CLI

ZONE = ZoneInfo("Asia/Hong_Kong")  # the default policy.timezone
LAST_DAY = (datetime.now(ZONE).date() + timedelta(days=30)).isoformat()
GRANT_HEADER = (
    "subject_kind,subject,category,host,approver,justification,ticket,owner_department,valid_from,valid_until\n"
)
JUSTIFICATION = "Exchanges files with the overseas liaison office"
DEPARTMENTS = 10
PEOPLE = 2000


def rules_config(tmp_path: Path) -> Path:
    """The real approval rules (department heads, justifications of 20 characters, 180 days at most)."""
    path = tmp_path / "rules.yaml"
    path.write_text("policy:\n  load_default_lists: false\nlogging:\n  format: json\n", encoding="utf-8")
    return path


def load_directory(cli: CLI, config: Path, tmp_path: Path) -> None:
    """u0…u1999 in departments D0…D9; h0…h9 head them, d0 is D0's delegate."""
    lines = ["user,name,department,groups,heads,delegates"]
    lines += [f"h{d},Head {d},D{d},,D{d}," for d in range(DEPARTMENTS)]
    lines.append("d0,Delegate 0,D0,,,D0")
    lines += [f"u{n},User {n},D{n % DEPARTMENTS},staff;g{n % 7},," for n in range(PEOPLE)]
    directory = tmp_path / "directory.csv"
    directory.write_text("\n".join(lines) + "\n", encoding="utf-8")
    cli("--config", str(config), "directory", "load", str(directory))


def grant_row(n: int, approver: str | None = None, justification: str = JUSTIFICATION) -> str:
    user = n % PEOPLE
    category = ("webmail", "cloud-storage", "web-im")[n % 3]
    approver = approver or f"h{user % DEPARTMENTS}"
    return f"user,u{user},{category},,{approver},{justification},T-{n},,,{LAST_DAY}\n"


def approvals_count(sync_redis: redis.Redis) -> int:
    return int(sync_redis.hlen("clearance:approvals"))


def audit(sync_redis: redis.Redis) -> list[dict[str, str]]:
    entries: Any = sync_redis.xrange("clearance:audit")
    return [dict(fields) for _, fields in entries]


def test_ten_thousand_grants_one_bad_row_writes_nothing_then_imports(
    cli: CLI, sync_redis: redis.Redis, tmp_path: Path
) -> None:
    config = rules_config(tmp_path)
    load_directory(cli, config, tmp_path)
    bad = 4567  # u567 is in D7; h3 heads D3
    rows = [grant_row(n, approver="h3" if n == bad else None) for n in range(10_000)]
    path = tmp_path / "grants.csv"
    path.write_text(GRANT_HEADER + "".join(rows), encoding="utf-8")

    started = time.monotonic()
    result = cli("--config", str(config), "approvals", "import", str(path), check=False)
    rejected_in = time.monotonic() - started
    assert result.returncode == 2, result
    line = bad + 2  # the header is line 1
    assert result.stderr.splitlines() == [
        f"{path}:{line}: 'h3' may not approve for D7: only its head or a delegate may (h7)",
        f"clearance: {path}: 1 bad row of 10000; nothing was imported",
    ]
    assert approvals_count(sync_redis) == 0
    assert sync_redis.get("clearance:approval:seq") is None
    assert [entry["action"] for entry in audit(sync_redis)] == ["directory-load"]

    rows[bad] = grant_row(bad)
    path.write_text(GRANT_HEADER + "".join(rows), encoding="utf-8")
    started = time.monotonic()
    result = cli("--config", str(config), "--actor", "ops", "approvals", "import", str(path))
    imported_in = time.monotonic() - started
    assert result.stdout == f"{path}: imported 10000 new (A1-A10000), 0 updated, 0 restored, 0 unchanged\n"
    assert approvals_count(sync_redis) == 10_000
    assert rejected_in < 10 and imported_in < 10, (rejected_in, imported_in)
    print(f"10k rows: rejected in {rejected_in:.2f} s, imported in {imported_in:.2f} s (CLI start included)")

    first = json.loads(sync_redis.hget("clearance:approvals", "A1"))  # type: ignore[arg-type]
    assert first["subject"] == "u0" and first["department"] == "D0" and first["approver"] == "h0"
    assert first["created_at"] == first["valid_from"]  # an empty valid_from is the moment of the import
    assert first["created_by"] == "ops" and first["ticket"] == "T-0" and first["category"] == "webmail"
    end = datetime.fromisoformat(LAST_DAY + "T00:00:00+08:00") + timedelta(days=1)  # inclusive, local time
    assert first["valid_until"] == end.astimezone(ZoneInfo("UTC")).isoformat()
    # The next grant continues after the import.
    assert cli("approvals", "grant", "--user", "x", "--category", "webmail", "--days", "1", "--approver", "y",
               "--reason", "r").stdout.strip() == "A10001"  # fmt: skip


def test_every_bad_row_reported_with_its_line(cli: CLI, sync_redis: redis.Redis, tmp_path: Path) -> None:
    config = rules_config(tmp_path)
    load_directory(cli, config, tmp_path)
    far = (datetime.now(ZONE).date() + timedelta(days=400)).isoformat()
    text = (
        GRANT_HEADER
        + grant_row(0)  # line 2
        + f'user,u1,webmail,,h1,"{JUSTIFICATION},\nacross two lines",,,,{LAST_DAY}\n'  # lines 3-4, good
        + grant_row(2, justification="test")  # line 5
        + f"user,u3,news,,h3,{JUSTIFICATION},,,,{LAST_DAY}\n"  # line 6: not restricted
        + f"user,u4,webmail,,h4,{JUSTIFICATION},,,,{far}\n"  # line 7: too long
        + f"user,u5,webmail,,h5,{JUSTIFICATION},,,,tomorrow\n"  # line 8
        + f"user,nobody,webmail,,h5,{JUSTIFICATION},,,,{LAST_DAY}\n"  # line 9: not in the directory
        + f"group,g1,webmail,,h1,{JUSTIFICATION},,D1,,{LAST_DAY}\n"  # line 10: good
        + f"group,g1,webmail,web.whatsapp.com,h1,{JUSTIFICATION},,D1,,{LAST_DAY}\n"  # line 11: two scopes
        + f"team,g1,webmail,,h1,{JUSTIFICATION},,D1,,{LAST_DAY}\n"  # line 12
        + "user,u1,webmail\n"  # line 13
        + f"user,u10,webmail,,d0,{JUSTIFICATION},,,,{LAST_DAY}\n"  # line 14: the delegate, good
    )
    path = tmp_path / "grants.csv"
    path.write_text(text, encoding="utf-8")
    result = cli("--config", str(config), "approvals", "import", str(path), check=False)
    assert result.returncode == 2
    lines = result.stderr.splitlines()
    assert [line.split(": ", 1)[0] for line in lines[:-1]] == [f"{path}:{n}" for n in (5, 6, 7, 8, 9, 11, 12, 13)], (
        result.stderr
    )
    assert "'test' is a placeholder" in lines[0]
    assert "'news' is not restricted" in lines[1]
    assert "exceeds the maximum of 180" in lines[2]
    assert "valid_until: 'tomorrow' is not a date" in lines[3]
    assert "'nobody' is not in the directory" in lines[4]
    assert "exactly one scope" in lines[5]
    assert "subject_kind: 'team'" in lines[6]
    assert "3 fields, the header has 10" in lines[7]
    assert lines[-1] == f"clearance: {path}: 8 bad rows of 12; nothing was imported"
    assert approvals_count(sync_redis) == 0

    many = GRANT_HEADER + "".join(grant_row(n, justification="n/a") for n in range(25))
    path.write_text(many, encoding="utf-8")
    result = cli("--config", str(config), "approvals", "import", str(path), check=False)
    lines = result.stderr.splitlines()
    assert len(lines) == 22 and lines[19].startswith(f"{path}:21: ") and lines[20] == "… and 5 more bad rows"
    assert approvals_count(sync_redis) == 0


def build_varied_store(cli: CLI, tmp_path: Path) -> None:
    """Every kind of subject and scope, and every kind of history (the default test config: no directory)."""

    def grant(*args: str) -> str:
        return cli("approvals", "grant", *args, "--approver", "boss", "--reason", "liaison work").stdout.strip()

    assert grant("--user", "alice", "--category", "webmail", "--days", "30", "--ticket", "SD-1") == "A1"
    assert grant("--group", "finance-staff", "--owner-department", "Finance", "--host", "web.whatsapp.com",
                 "--until", LAST_DAY) == "A2"  # fmt: skip
    assert grant("--department", "Finance", "--category", "cloud-storage", "--days", "10") == "A3"
    assert grant("--network", "10.20.30.7/24", "--owner-department", "IT", "--category", "web-im",
                 "--days", "5") == "A4"  # fmt: skip
    assert grant("--user", "bob", "--host", "*.dropbox.com", "--days", "20") == "A5"
    assert grant("--user", "carol", "--category", "webmail", "--days", "20") == "A6"
    cli("approvals", "revoke", "A2", "--by", "boss", "--reason", "project ended")
    cli("approvals", "suspend", "A3", "--by", "boss")
    cli("approvals", "review", "A4", "--by", "boss", "--keep", "--note", "still needed, 仍需要")
    cli("approvals", "review", "A5", "--by", "boss", "--revoke", "--note", 'said "no", twice')
    cli("approvals", "review", "A6", "--by", "boss", "--keep")
    # A restored record with awkward text: commas, quotes, a line break, CJK, an old date.
    odd = {
        "id": "A40",
        "subject_kind": "user",
        "subject": "陳大文",
        "category": "webmail",
        "host": None,
        "department": "",
        "approver": "boss",
        "justification": 'Talks to "partners", daily',
        "created_by": "migration",
        "created_at": "2023-01-02T03:04:05.123456+00:00",
        "valid_from": "2023-01-02T00:00:00+00:00",
        "valid_until": "2023-06-30T16:00:00+00:00",
        "review_due": "2023-04-02T00:00:00+00:00",
        "ticket": "SD-9,b",
        "status": "revoked",
        "revoked_by": "boss",
        "revoked_at": "2023-03-01T00:00:00+00:00",
        "revoke_reason": "line one\nline two",
        "suspended_by": None,
        "suspended_at": None,
        "suspend_reason": None,
        "reviews": [{"by": "boss", "at": "2023-02-01T00:00:00+00:00", "decision": "keep", "note": ""}],
    }
    records = tmp_path / "odd.json"
    records.write_text(json.dumps([odd], ensure_ascii=False), encoding="utf-8")
    assert "0 new, 0 updated, 1 restored" in cli("approvals", "import", str(records)).stdout


def keyed(cli: CLI, config_file: Path) -> CLI:
    """The test config with a `portal.secret`: the export key then outlives the store (a restore after FLUSHALL)."""
    keyed_config = config_file.with_name("keyed.yaml")
    keyed_config.write_text(config_file.read_text(encoding="utf-8") + "portal:\n  secret: s3cret-kept-in-config\n")
    return functools.partial(cli, "--config", str(keyed_config))


def test_export_import_export_round_trips_exactly(
    cli: CLI, config_file: Path, sync_redis: redis.Redis, tmp_path: Path
) -> None:
    cli = keyed(cli, config_file)
    build_varied_store(cli, tmp_path)
    csv_text = cli("approvals", "export").stdout
    json_path = tmp_path / "all.json"
    assert (
        cli("approvals", "export", "--output", str(json_path)).stdout == f"7 approvals exported to {json_path} (json)\n"
    )
    json_text = json_path.read_text(encoding="utf-8")
    stored = dict(sync_redis.hgetall("clearance:approvals"))

    header, *rows = list(csv.reader(io.StringIO(csv_text)))
    assert header == ["id", "subject_kind", "subject", "category", "host", "department", "approver", "justification",
                      "created_by", "created_at", "valid_from", "valid_until", "review_due", "ticket", "service",
                      "status", "revoked_by", "revoked_at", "revoke_reason", "suspended_by", "suspended_at",
                      "suspend_reason", "reviews", "seal"]  # fmt: skip
    assert [row[0] for row in rows] == ["A1", "A2", "A3", "A4", "A5", "A6", "A40"]
    assert [json.loads(line.rstrip(","))["id"] for line in json_text.splitlines()[1:-1]] == [row[0] for row in rows]

    for source, form in ((tmp_path / "all.csv", "csv"), (json_path, "json")):
        if form == "csv":
            source.write_text(csv_text, encoding="utf-8")
        sync_redis.flushall()
        result = cli("--actor", "restorer", "approvals", "import", str(source))
        assert result.stdout == f"{source}: imported 0 new, 0 updated, 7 restored, 0 unchanged\n"
        assert cli("approvals", "export").stdout == csv_text
        assert cli("approvals", "export", "--format", "json").stdout == json_text
        assert dict(sync_redis.hgetall("clearance:approvals")) == stored
        assert [entry["action"] for entry in audit(sync_redis)] == ["restore"] * 7  # sealed: restored as they are
        # Imported ids are never handed out again.
        assert sync_redis.get("clearance:approval:seq") == "40"

    sync_redis.flushall()
    assert "7 restored" in cli("approvals", "import", "-", "--format", "csv", stdin=csv_text).stdout
    assert cli("approvals", "export").stdout == csv_text

    # Importing the same export again changes nothing and writes no audit entries.
    entries = len(audit(sync_redis))
    assert "0 updated, 0 restored, 7 unchanged" in cli("approvals", "import", str(json_path)).stdout
    assert len(audit(sync_redis)) == entries


def test_new_grants_and_records_in_one_file(cli: CLI, sync_redis: redis.Redis, tmp_path: Path) -> None:
    build_varied_store(cli, tmp_path)
    exported = list(csv.DictReader(io.StringIO(cli("approvals", "export").stdout)))
    changed = dict(exported[0], justification="A changed justification for the record")
    new = {"subject_kind": "user", "subject": "dave", "category": "webmail", "approver": "boss",
           "justification": "liaison", "valid_until": LAST_DAY}  # fmt: skip
    sync_redis.delete("clearance:approval:seq")  # new ids must still not collide with ids in the file
    path = tmp_path / "mixed.csv"
    with path.open("w", encoding="utf-8", newline="") as out:
        writer = csv.DictWriter(out, fieldnames=[*exported[0], "owner_department"])
        writer.writeheader()
        writer.writerows([changed, *exported[1:], new, {**new, "subject": "erin"}])
    result = cli("approvals", "import", str(path))
    assert result.stdout == f"{path}: imported 2 new (A41-A42), 1 updated, 0 restored, 6 unchanged\n"
    assert json.loads(sync_redis.hget("clearance:approvals", "A42"))["subject"] == "erin"  # type: ignore[arg-type]
    assert [entry["target"] for entry in audit(sync_redis)[-3:]] == ["A41", "A42", "A1"]
    assert json.loads(audit(sync_redis)[-1]["before"])["justification"] == "liaison work"


def test_dry_run_writes_nothing(cli: CLI, sync_redis: redis.Redis, tmp_path: Path) -> None:
    config = rules_config(tmp_path)
    load_directory(cli, config, tmp_path)
    before = sync_redis.dbsize()
    path = tmp_path / "grants.csv"
    path.write_text(GRANT_HEADER + "".join(grant_row(n) for n in range(50)), encoding="utf-8")
    result = cli("--config", str(config), "approvals", "import", "--dry-run", str(path))
    assert result.stdout == f"{path}: all 50 rows are valid; would import 50 new, 0 updated, 0 restored, " \
        "0 unchanged (dry run)\n"  # fmt: skip
    assert sync_redis.dbsize() == before and approvals_count(sync_redis) == 0
    assert len(audit(sync_redis)) == 1

    path.write_text(GRANT_HEADER + grant_row(0, approver="u5"), encoding="utf-8")
    result = cli("--config", str(config), "approvals", "import", "--dry-run", str(path), check=False)
    assert result.returncode == 2 and f"{path}:2: 'u5' may not approve for D0" in result.stderr
    assert sync_redis.dbsize() == before


def test_yaml_import_reports_the_bad_items_line(cli: CLI, sync_redis: redis.Redis, tmp_path: Path) -> None:
    config = rules_config(tmp_path)
    load_directory(cli, config, tmp_path)
    item = (
        "- subject_kind: user\n  subject: u{n}\n  category: webmail\n  approver: h{d}\n"
        "  justification: {j}\n  valid_until: {until}\n"
    )
    good = [item.format(n=n, d=n % DEPARTMENTS, j=JUSTIFICATION, until=LAST_DAY) for n in range(3)]
    bad = item.format(n=3, d=3, j="need it", until=LAST_DAY)  # starts on line 1 + 3 * 6 + 2 (comments)
    text = "# grants\n\n" + "".join(good) + bad + "- subject_kind: user\n  subject: u4\n  valid_until: 2030-13-01\n"
    path = tmp_path / "grants.yaml"
    path.write_text(text, encoding="utf-8")
    result = cli("--config", str(config), "approvals", "import", str(path), check=False)
    assert result.returncode == 2
    assert result.stderr.splitlines()[:2] == [
        f"{path}:21: 'need it' is a placeholder, not a justification",
        f"{path}:27: not a valid value: month must be in 1..12",
    ]
    assert approvals_count(sync_redis) == 0

    path.write_text("# grants\n\n" + "".join(good), encoding="utf-8")
    assert "imported 3 new (A1-A3)" in cli("--config", str(config), "approvals", "import", str(path)).stdout
    # YAML dates (valid_until above) end, like --until, at the end of that day in policy.timezone.
    until = json.loads(sync_redis.hget("clearance:approvals", "A1"))["valid_until"]  # type: ignore[arg-type]
    assert datetime.fromisoformat(until).astimezone(ZONE).isoformat().endswith("T00:00:00+08:00")

    path.write_text("- [not, a, mapping]\n- subject_kind: user\n  {oops\n", encoding="utf-8")
    result = cli("--config", str(config), "approvals", "import", str(path), check=False)
    assert result.returncode == 2
    assert result.stderr == (
        f"clearance: {path}:4: not valid YAML: could not find expected ':' (while scanning a simple key on line 3)\n"
    )


def test_import_audits_each_approval_with_actor(cli: CLI, sync_redis: redis.Redis, tmp_path: Path) -> None:
    config = rules_config(tmp_path)
    load_directory(cli, config, tmp_path)
    path = tmp_path / "grants.csv"
    path.write_text(GRANT_HEADER + "".join(grant_row(n) for n in range(5)), encoding="utf-8")
    cli("--config", str(config), "--actor", "alice.admin", "approvals", "import", str(path))
    entries = [entry for entry in audit(sync_redis) if entry["action"] == "import"]
    assert [entry["target"] for entry in entries] == ["A1", "A2", "A3", "A4", "A5"]
    assert {entry["actor"] for entry in entries} == {"alice.admin"}
    assert [entry["department"] for entry in entries] == ["D0", "D1", "D2", "D3", "D4"]
    assert all(entry["before"] == "" and json.loads(entry["after"])["created_by"] == "alice.admin" for entry in entries)
    assert len(audit(sync_redis)) == 6  # the directory load, and one per approval


def test_file_level_errors(cli: CLI, sync_redis: redis.Redis, tmp_path: Path) -> None:
    cases = {
        "grants.txt": ("x", "cannot tell the format"),
        "bad.csv": ("subject_kind,subjekt\n", ":1: unknown column(s) 'subjekt'"),
        "bad.json": ('[{"id": "A1",}]', ":1: not valid JSON"),
        "missing.csv": (None, "No such file"),
    }
    for name, (text, message) in cases.items():
        path = tmp_path / name
        if text is not None:
            path.write_text(text, encoding="utf-8")
        result = cli("approvals", "import", str(path), check=False)
        assert result.returncode == 2 and message in result.stderr, (name, result.stderr)
        assert result.stderr.count("\n") == 1
    records = tmp_path / "records.json"
    records.write_text(
        json.dumps([{"id": "B7"}, {"id": "A1", "subject_kind": "user", "status": "gone"}]), encoding="utf-8"
    )
    result = cli("approvals", "import", str(records), check=False)
    assert result.stderr.splitlines()[:2] == [
        f"{records}:item 1: id: 'B7' is not an approval id (A followed by a number)",
        f"{records}:item 2: give exactly one scope: category, service or host",
    ]
    assert sync_redis.dbsize() == 0


def test_an_old_export_cannot_bring_back_a_revoked_approval(cli: CLI, tmp_path: Path) -> None:
    approval_id = cli(
        "approvals", "grant", "--user", "alice", "--category", "webmail", "--days", "30",
        "--approver", "head", "--justification", "Liaison with the overseas partner office",
    ).stdout.strip()
    export = tmp_path / "before.csv"
    cli("approvals", "export", "--output", str(export))
    cli("approvals", "revoke", approval_id, "--by", "head", "--reason", "project ended")
    result = cli("approvals", "import", str(export), check=False)
    assert result.returncode == 2
    assert f"would bring back {approval_id}" in result.stderr and "revocation is final" in result.stderr
    assert "revoked" in cli("approvals", "show", approval_id).stdout
