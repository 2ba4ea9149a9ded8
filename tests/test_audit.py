"""The audit trail on SQLite and PostgreSQL: append-only (triggers), hash-chained, with a head
that catches removed last rows and truncation; one chain under concurrent threads and
processes; no link or secret in details; the CLI lists and verifies."""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import re
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from kernel.errors import BadInput, ControlDbError
from storage.audit import GENESIS_HASH, AuditAnchor, AuditKind, AuditTrail, event_hash
from tenant_export.cli import app
from tests.lifecycle_workers import append_audit_events
from tests.services import fresh_database

runner = CliRunner()
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/control/control.sqlite"
    return fresh_database(request.getfixturevalue("postgres_url"), "a")


@pytest.fixture
def trail(url: str) -> Iterator[AuditTrail]:
    t = AuditTrail(url)
    yield t
    t.close()


def _engine(url: str) -> sa.Engine:
    return sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://"))


def _sql(url: str, *statements: str) -> None:
    engine = _engine(url)
    with engine.begin() as conn:
        for statement in statements:
            conn.exec_driver_sql(statement)
    engine.dispose()


def _drop_guards(url: str) -> None:
    """What an attacker with DDL rights does first."""
    if url.startswith("sqlite"):
        _sql(url, *(f"DROP TRIGGER {name}" for name in (
            "audit_events_no_update", "audit_events_no_delete", "audit_head_no_delete",
            "audit_head_forward_only")))
    else:
        _sql(url, "DROP TRIGGER audit_events_append_only ON audit_events",
             "DROP TRIGGER audit_events_no_truncate ON audit_events",
             "DROP TRIGGER audit_head_no_delete ON audit_head",
             "DROP TRIGGER audit_head_no_truncate ON audit_head",
             "DROP TRIGGER audit_head_forward ON audit_head")


def _five(trail: AuditTrail) -> None:
    trail.record(AuditKind.EXPORT_REQUESTED, "t-1", "alice", export_id="E1")
    trail.record(AuditKind.EXPORT_COMPLETED, "t-1", "alice", export_id="E1", files=4, bytes=9)
    trail.record(AuditKind.LINKS_MINTED, "t-1", "portal:anna@client.example", export_id="E1",
                 ttl_seconds=900, files=4)
    trail.record(AuditKind.BACKUP_COMPLETED, "t-2", "schedule", snapshot_id="S1")
    trail.record(AuditKind.PRUNE, None, "schedule", deleted=3)


def test_record_list_and_verify(trail: AuditTrail) -> None:
    _five(trail)
    events = trail.events("t-1")
    assert [e.seq for e in events] == [1, 2, 3]
    assert [e.kind for e in events] == ["export.requested", "export.completed", "links.minted"]
    assert events[2].actor == "portal:anna@client.example"
    assert events[2].details == {"export_id": "E1", "ttl_seconds": 900, "files": 4}
    assert events[0].prev_hash == GENESIS_HASH and events[1].prev_hash == events[0].hash
    assert [e.kind for e in trail.events(None)] == ["prune"]
    assert trail.events("t-3") == []
    head = trail.head()
    assert head.event_count == 5
    report = trail.verify()
    assert report.ok and report.events == 5 and report.head_count == 5
    assert report.first_bad_seq is None
    assert trail.verify([head.anchor()]).ok


def test_the_hash_is_the_documented_encoding(url: str) -> None:
    at = datetime(2026, 11, 26, 10, 15, tzinfo=UTC)
    trail = AuditTrail(url, clock=lambda: at)
    event = trail.record("hold.set", "t-42", "operator:maria", reason="court order 12/2026")
    assert event.recorded_at == "2026-11-26T10:15:00.000000+00:00"
    details = '{"reason":"court order 12/2026"}'
    assert event.hash == event_hash(1, event.recorded_at, "t-42", "hold.set", "operator:maria",
                                    details, GENESIS_HASH)
    # the test vector of docs/offboarding.md, recomputed from its documented bytes
    doc = (ROOT / "docs" / "offboarding.md").read_text()
    block = re.search(r"```\n(tenant-export/audit/v1\n.*?)\n```", doc, re.S)
    vector = re.search(r"`hash` = `([0-9a-f]{64})`", doc)
    assert block and vector
    assert hashlib.sha256(block.group(1).encode()).hexdigest() == vector.group(1) == event.hash
    with pytest.raises(BadInput, match="time zone"):
        AuditTrail(url, clock=lambda: datetime(2026, 1, 1)).record(
            "prune", None, "schedule")
    trail.close()


@pytest.mark.parametrize("details", [
    {"note": "https://exports.s3.amazonaws.com/t-1/x.zip?X-Amz-Signature=ab12"},
    {"note": "see http://portal.example/export?token=abc"},
    {"note": "X-Amz-Credential=AKIA/20261126/us-east-1/s3/aws4_request"},
    {"files": [{"path": "data/a.csv", "where": "https://h.example/a.csv?sig=1"}]},
    {"target": "postgresql://restore:hunter2@db.internal/platform"},
    {"url": "data/a.csv"},
    {"download_link": "E1"},
    {"downloadUrl": "E1"},
    {"smtp_password": "x"},
    {"token": "abc"},
    {"portal": {"secret": "abc"}},
    {"bad key": 1},
    {"blob": "x" * 9000},
])
def test_details_refuse_links_and_secrets(trail: AuditTrail, details: dict[str, object]) -> None:
    with pytest.raises(BadInput, match="audit"):
        trail.record(AuditKind.LINKS_MINTED, "t-1", "alice", **details)
    assert trail.head().event_count == 0 and trail.events("t-1") == []


def test_facts_that_are_not_links_are_accepted(trail: AuditTrail) -> None:
    trail.record(AuditKind.LINKS_MINTED, "t-1", "anna@client.example", export_id="E1",
                 token_id="tok-3f2a", link_ttl_seconds=604800, link_count=4,
                 target="postgresql+psycopg://restore:***@db.internal/platform",
                 documentation="https://docs.example/offboarding", ratio=0.5)
    assert trail.verify().ok


@pytest.mark.parametrize(("kind", "tenant", "actor"), [
    ("Export Requested", "t-1", "alice"),
    ("export.requested", "../t-1", "alice"),
    ("export.requested", "t-1", ""),
    ("export.requested", "t-1", "alice\nbob"),
    ("export.requested", "t-1", "https://x.example/?a=1"),
])
def test_kind_tenant_and_actor_are_checked(trail: AuditTrail, kind: str, tenant: str,
                                           actor: str) -> None:
    with pytest.raises(BadInput):
        trail.record(kind, tenant, actor)
    assert trail.head().event_count == 0


def test_the_database_refuses_update_delete_and_truncate(url: str, trail: AuditTrail) -> None:
    _five(trail)
    statements = ["UPDATE audit_events SET actor = 'mallory'", "DELETE FROM audit_events",
                  "DELETE FROM audit_events WHERE seq = 5", "DELETE FROM audit_head",
                  "UPDATE audit_head SET event_count = 3"]
    if url.startswith("postgresql"):
        statements += ["TRUNCATE audit_events", "TRUNCATE audit_head"]
    for statement in statements:
        with pytest.raises(sa.exc.DBAPIError, match=r"append-only|only moves forward"):
            _sql(url, statement)
    assert trail.verify().ok and trail.head().event_count == 5


COLUMN_CHANGES = {
    "seq": "seq = 99",
    "recorded_at": "recorded_at = '2026-01-01T00:00:00.000000+00:00'",
    "tenant_id": "tenant_id = 't-9'",
    "tenant_id_null": "tenant_id = NULL",
    "kind": "kind = 'export.failed'",
    "actor": "actor = 'mallory'",
    "details": "details = '{\"export_id\":\"E1\",\"files\":5,\"ttl_seconds\":900}'",
    "details_whitespace": "details = '{\"export_id\": \"E1\",\"files\":4,\"ttl_seconds\":900}'",
    "prev_hash": f"prev_hash = '{'f' * 64}'",
    "hash": f"hash = '{'e' * 64}'",
}


@pytest.mark.parametrize("change", sorted(COLUMN_CHANGES))
def test_an_altered_column_is_detected(url: str, trail: AuditTrail, change: str) -> None:
    _five(trail)
    _drop_guards(url)
    _sql(url, f"UPDATE audit_events SET {COLUMN_CHANGES[change]} WHERE seq = 3")
    report = trail.verify()
    assert not report.ok and report.first_bad_seq == 3, report


@pytest.mark.parametrize(("statement", "first_bad"), [
    ("DELETE FROM audit_events WHERE seq = 3", 3),
    ("DELETE FROM audit_events WHERE seq = 5", 5),
    ("DELETE FROM audit_events WHERE seq >= 4", 4),
    ("DELETE FROM audit_events", 1),
    ("DELETE FROM audit_head", 6),
    ("UPDATE audit_head SET event_count = 4", 5),
    (f"UPDATE audit_head SET last_hash = '{'a' * 64}'", 5),
])
def test_removed_rows_and_a_changed_head_are_detected(url: str, trail: AuditTrail,
                                                      statement: str, first_bad: int) -> None:
    _five(trail)
    _drop_guards(url)
    _sql(url, statement)
    report = trail.verify()
    assert not report.ok and report.first_bad_seq == first_bad, report


def test_truncate_is_detected_on_postgres(postgres_url: str) -> None:
    url = fresh_database(postgres_url, "a")
    trail = AuditTrail(url)
    _five(trail)
    _drop_guards(url)
    _sql(url, "TRUNCATE audit_events")
    report = trail.verify()
    assert not report.ok and report.first_bad_seq == 1
    assert "events 1..5 are missing" in (report.problem or "")
    trail.close()


def test_a_rehashed_row_breaks_the_next_link(url: str, trail: AuditTrail) -> None:
    _five(trail)
    _drop_guards(url)
    row = trail.events("t-1")[2]
    forged = event_hash(3, row.recorded_at, "t-1", row.kind, "mallory",
                        json.dumps(row.details, sort_keys=True, separators=(",", ":")),
                        row.prev_hash)
    _sql(url, f"UPDATE audit_events SET actor = 'mallory', hash = '{forged}' WHERE seq = 3")
    report = trail.verify()
    assert not report.ok and report.first_bad_seq == 4
    assert "previous hash" in (report.problem or "")


def test_an_event_appended_outside_the_trail_is_detected(url: str, trail: AuditTrail) -> None:
    _five(trail)
    last = trail.head().last_hash
    forged = event_hash(6, "2026-01-01T00:00:00.000000+00:00", "t-1", "download", "x", "{}",
                        last)
    _sql(url, "INSERT INTO audit_events (seq, recorded_at, tenant_id, kind, actor, details, "
         f"prev_hash, hash) VALUES (6, '2026-01-01T00:00:00.000000+00:00', 't-1', 'download', "
         f"'x', '{{}}', '{last}', '{forged}')")
    report = trail.verify()
    assert not report.ok and report.first_bad_seq == 6


def test_a_consistent_rewrite_is_caught_only_by_an_external_anchor(url: str,
                                                                   trail: AuditTrail) -> None:
    _five(trail)
    anchor = trail.head().anchor()  # e.g. embedded in a deletion certificate
    _drop_guards(url)
    # rewrite the whole history: drop both tables, and let a new trail recreate them
    _sql(url, "DROP TABLE audit_events", "DROP TABLE audit_head")
    rewritten = AuditTrail(url)
    for _ in range(5):
        rewritten.record(AuditKind.PRUNE, None, "schedule")
    assert rewritten.verify().ok  # internally consistent: the chain alone cannot tell
    report = rewritten.verify([anchor])
    assert not report.ok and report.first_bad_seq == 5
    assert "external anchor" in (report.problem or "")
    shorter = AuditTrail(url).verify([AuditAnchor(9, "0" * 64)])
    assert not shorter.ok and shorter.first_bad_seq == 6
    rewritten.close()


def test_record_refuses_when_the_head_is_gone(url: str, trail: AuditTrail) -> None:
    _five(trail)
    _drop_guards(url)
    _sql(url, "DELETE FROM audit_head")
    with pytest.raises(ControlDbError, match="head row is missing"):
        trail.record(AuditKind.PRUNE, None, "schedule")
    with pytest.raises(ControlDbError, match="head row is missing"):
        trail.head()


def test_concurrent_threads_keep_one_chain(url: str, trail: AuditTrail) -> None:
    errors: list[BaseException] = []

    def append(worker: int) -> None:
        own = AuditTrail(url) if worker % 2 else trail  # shared engine and separate engines
        try:
            for i in range(15):
                own.record(AuditKind.CASE_STEP, f"t-{worker}", "schedule", step=i)
        except BaseException as err:  # noqa: BLE001 - reported below
            errors.append(err)
        finally:
            if own is not trail:
                own.close()

    threads = [threading.Thread(target=append, args=(w,)) for w in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    report = trail.verify()
    assert report.ok and report.events == 90, report
    for worker in range(6):
        assert [e.details["step"] for e in trail.events(f"t-{worker}")] == list(range(15))


def test_concurrent_processes_keep_one_chain(url: str, trail: AuditTrail) -> None:
    trail.record(AuditKind.CASE_STEP, None, "test", step="start")  # tables exist before workers
    context = multiprocessing.get_context("spawn")
    start = context.Barrier(4)
    workers = [context.Process(target=append_audit_events, args=(url, w, 30, start))
               for w in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=240)
    assert [w.exitcode for w in workers] == [0, 0, 0, 0]
    report = trail.verify()
    assert report.ok and report.events == 121, report
    for worker_id in range(4):
        assert [e.details["entry"] for e in trail.events(f"p-{worker_id}")] == list(range(30))


def test_cli_lists_and_verifies(url: str, trail: AuditTrail, tmp_path: Path,
                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TENANT_EXPORT_CONTROL_URL", url)
    monkeypatch.setenv("TENANT_EXPORT_STATE_DIR", str(tmp_path / "state"))
    _five(trail)
    listed = runner.invoke(app, ["audit", "t-1", "--json"])
    assert listed.exit_code == 0, listed.stderr
    doc = json.loads(listed.stdout)
    assert doc["tenant_id"] == "t-1" and [e["seq"] for e in doc["events"]] == [1, 2, 3]
    assert doc["events"][2]["details"] == {"export_id": "E1", "files": 4, "ttl_seconds": 900}
    text = runner.invoke(app, ["audit", "t-2"])
    assert text.exit_code == 0 and "backup.completed" in text.stdout and "schedule" in text.stdout
    assert runner.invoke(app, ["audit", "show", "t-2", "--json"]).exit_code == 0
    bad = runner.invoke(app, ["audit", "no such tenant"])
    assert bad.exit_code == 2 and "invalid tenant id" in bad.stderr

    head = runner.invoke(app, ["audit", "head", "--json"])
    anchor = json.loads(head.stdout)["anchor"]
    assert anchor == f"5:{trail.head().last_hash}"
    ok = runner.invoke(app, ["audit", "verify", "--anchor", anchor])
    assert ok.exit_code == 0 and "intact: 5 events" in ok.stdout

    _drop_guards(url)
    _sql(url, "UPDATE audit_events SET actor = 'mallory' WHERE seq = 2")
    broken = runner.invoke(app, ["audit", "verify"])
    assert broken.exit_code == 1
    assert "audit trail broken at event 2" in broken.stderr
    assert len(broken.stderr.strip().splitlines()) == 1
    as_json = runner.invoke(app, ["audit", "verify", "--json"])
    assert as_json.exit_code == 1 and json.loads(as_json.stdout)["first_bad_seq"] == 2
    assert runner.invoke(app, ["audit", "verify", "--anchor", "5:xyz"]).exit_code == 2


def test_recorded_times_come_from_the_clock(url: str) -> None:
    moments = iter(datetime(2026, 11, 26, tzinfo=UTC) + timedelta(days=d) for d in range(3))
    trail = AuditTrail(url, clock=lambda: next(moments))
    for step in ("backup", "export", "purge"):
        trail.record(AuditKind.CASE_STEP, "t-1", "schedule", step=step)
    assert [e.recorded_at[:10] for e in trail.events("t-1")] == [
        "2026-11-26", "2026-11-27", "2026-11-28"]
    trail.close()
