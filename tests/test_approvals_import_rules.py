"""`approvals import` never creates an approval `grant` would refuse: records with ids are sealed or checked.

Found in issue 9: a record with an id for a user not in the directory, approved by someone who heads no
department, valid for five years, was "restored" as it was and passed traffic. Now a record is restored as it
is only when its seal (an HMAC under the store's export key) shows it is this store's own export, unchanged;
any other record is checked like a grant, unless it can never pass traffic again.
"""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import redis

from policy.approvals import Approval, SubjectKind
from policy.sources.approval_files import EXPORT_COLUMNS, csv_cell
from tests.conftest import CLI
from tests.test_approvals_io import JUSTIFICATION, audit, load_directory, rules_config

NOW = datetime.now(UTC).replace(microsecond=0)


def record(approval_id: str, subject: str, approver: str, department: str, days: int, **changes: Any) -> Approval:
    """A record as an export would carry it, made by hand (so with no seal of this store)."""
    values: dict[str, Any] = {
        "id": approval_id,
        "subject_kind": SubjectKind.USER,
        "subject": subject,
        "category": "webmail",
        "host": None,
        "department": department,
        "approver": approver,
        "justification": JUSTIFICATION,
        "created_by": "migration",
        "created_at": NOW - timedelta(days=1),
        "valid_from": NOW - timedelta(days=1),
        "valid_until": NOW + timedelta(days=days),
        "review_due": NOW + timedelta(days=min(days, 80)),
    }
    values.update(changes)
    return Approval(**values)


def write_records(path: Path, approvals: list[Approval], seals: dict[str, str] | None = None) -> None:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(EXPORT_COLUMNS)
    for approval in approvals:
        row = {**approval.to_record(), "seal": (seals or {}).get(approval.id, "")}
        writer.writerow([csv_cell(column, row[column]) for column in EXPORT_COLUMNS])
    path.write_text(out.getvalue(), encoding="utf-8")


def test_the_three_records_of_found_6_are_refused_with_their_line(
    cli: CLI, sync_redis: redis.Redis, tmp_path: Path
) -> None:
    config = rules_config(tmp_path)
    load_directory(cli, config, tmp_path)  # u0…u1999 in D0…D9, h0…h9 head them
    path = tmp_path / "records.csv"
    bad = [
        record("A1", "stranger", "h0", "D0", 30),  # line 2: not in the directory
        record("A2", "u1", "u5", "D1", 30),  # line 3: u5 heads no department
        record("A3", "u2", "h2", "D2", 5 * 365, review_due=NOW + timedelta(days=80)),  # line 4: five years
    ]
    write_records(path, bad, seals={"A3": "0" * 32})  # a made-up seal is no seal
    result = cli("--config", str(config), "approvals", "import", str(path), check=False)
    assert result.returncode == 2, result
    lines = result.stderr.splitlines()
    assert [line.split(": ", 1)[0] for line in lines[:-1]] == [f"{path}:{n}" for n in (2, 3, 4)], result.stderr
    assert "'stranger' is not in the directory" in lines[0]
    assert "'u5' may not approve for D1" in lines[1]
    assert "exceeds the maximum of 180" in lines[2]
    assert lines[-1] == f"clearance: {path}: 3 bad rows of 3; nothing was imported"
    assert sync_redis.hlen("clearance:approvals") == 0
    assert [entry["action"] for entry in audit(sync_redis)] == ["directory-load"]

    # What grant would allow is imported (audited as an import, not a restore); history is kept as it is.
    good = record("A7", "u3", "h3", "D3", 30)
    history = record("A8", "stranger", "nobody", "", 5 * 365, valid_until=NOW - timedelta(days=1))
    overdue = record("A9", "u4", "h4", "D4", 30, review_due=NOW + timedelta(days=400))
    write_records(path, [good, history, overdue])
    result = cli("--config", str(config), "approvals", "import", str(path), check=False)
    assert result.returncode == 2 and f"{path}:4: A9 " in result.stderr and "review_due" in result.stderr
    write_records(path, [good, history])
    assert "2 restored" in cli("--config", str(config), "approvals", "import", str(path)).stdout
    assert [entry["action"] for entry in audit(sync_redis)][1:] == ["import", "import"]


def test_a_sealed_export_restores_exactly_into_its_own_store_only(
    cli: CLI, sync_redis: redis.Redis, tmp_path: Path
) -> None:
    config = rules_config(tmp_path)  # no portal.secret: the export key is kept in the store
    load_directory(cli, config, tmp_path)
    path = tmp_path / "grant.csv"
    path.write_text(
        "subject_kind,subject,category,approver,justification,valid_until\n"
        f"user,u1,webmail,h1,{JUSTIFICATION},{(NOW + timedelta(days=30)).date()}\n",
        encoding="utf-8",
    )
    cli("--config", str(config), "approvals", "import", str(path))
    export = tmp_path / "export.json"
    cli("--config", str(config), "approvals", "export", "--output", str(export))
    stored = sync_redis.hget("clearance:approvals", "A1")
    # The directory changes: h1 no longer heads D1, so a grant by h1 would be refused now.
    (tmp_path / "moved.csv").write_text("user,name,department,groups,heads,delegates\nh1,Head 1,D1,,,\n")
    cli("--config", str(config), "directory", "load", "--merge", str(tmp_path / "moved.csv"))

    sync_redis.hdel("clearance:approvals", "A1")  # lost by mistake: the export brings it back exactly
    assert "1 restored" in cli("--config", str(config), "approvals", "import", str(export)).stdout
    assert sync_redis.hget("clearance:approvals", "A1") == stored
    assert audit(sync_redis)[-1]["action"] == "restore"
    restores = cli("--config", str(config), "audit", "--action", "restore").stdout
    assert "restored user u1 category webmail until" in restores

    edited = json.loads(export.read_text(encoding="utf-8"))
    edited[0]["valid_until"] = (NOW + timedelta(days=170)).isoformat()  # a changed record loses its seal
    export.write_text(json.dumps(edited), encoding="utf-8")
    sync_redis.hdel("clearance:approvals", "A1")
    result = cli("--config", str(config), "approvals", "import", str(export), check=False)
    assert result.returncode == 2 and f"{export}:item 1: A1 is checked like a grant" in result.stderr
    assert "'h1' may not approve for D1" in result.stderr
    assert sync_redis.hget("clearance:approvals", "A1") is None
