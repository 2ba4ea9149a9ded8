"""Purge (issue 12): a process killed at a chosen point of the purge order (between deleting
the objects and destroying the key among them) and a rerun end in the same final state with
exactly one certificate, counting every version once; legal hold refuses purge with a clear
message and nothing deleted, and once released the purge proceeds; bad input is exit 2."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import pytest
from typer.testing import CliRunner

from flows import backup
from flows.context import RunContext
from flows.export_flow import ExportRequest, offboarding_export
from flows.offboarding_flow import PurgeRequest, purge_tenant
from kernel.settings import Settings
from storage import backup_store
from storage.cases import CaseStore
from storage.keys import parse_master_key
from tenant_export.cli import app
from tests.conftest import Platform
from tests.test_offboarding import audit_events, tenant_versions, version, versions_under

runner = CliRunner()
ROOT = Path(__file__).resolve().parent.parent
KILLED = 137
STATEMENT = "migrations/t-1/M-20261126-0a1b2c3d/statement.csv"

CHILD = textwrap.dedent("""
    import os
    import sys

    from flows import purge
    from flows.offboarding import CaseDesk
    from kernel.settings import Settings
    from storage.s3 import make_client
    from storage.signing import signing_key_from_settings

    POINT = sys.argv[1]


    def checkpoint(name: str) -> None:
        if name == POINT:
            sys.stdout.flush()
            os._exit(137)


    purge.checkpoint = checkpoint
    settings = Settings()
    desk = CaseDesk.open(settings)
    purge.purge_tenant(desk, make_client(settings), signing_key_from_settings(settings), "t-1",
                       "operator:crash")
    print("not killed")
    sys.exit(3)
""")


def stored_tenant(platform: Platform, *, versioned: bool = True) -> None:
    """Two snapshots, an export, a migration statement, an open upload, and a key record
    written twice (two versions when the buckets are versioned)."""
    if versioned:
        version(platform)
    settings = Settings()
    wrapper = parse_master_key(settings.master_key_value() or "")
    ctx = RunContext.open(settings)
    try:
        backup.backup_tenant(ctx, wrapper, "t-1")
        backup.backup_tenant(ctx, wrapper, "t-1")
        backup.backup_tenant(ctx, wrapper, "t-2")
    finally:
        ctx.close()
    offboarding_export(ExportRequest(tenant_id="t-1"))
    s3, bucket = platform.s3, platform.backup_bucket
    s3.put_object(Bucket=platform.export_bucket, Key=STATEMENT, Body=b"date,minutes\n")
    record = backup_store.key_record_key("t-1")
    s3.put_object(Bucket=bucket, Key=record, Body=s3.get_object(Bucket=bucket, Key=record)[
        "Body"].read())
    s3.create_multipart_upload(Bucket=bucket, Key="backups/t-1/staging/killed-run")


def expected_counts(platform: Platform) -> dict[str, int]:
    """Versions per kind, from the buckets before the purge."""
    counts: Counter[str] = Counter()
    for key, _ in tenant_versions(platform, "t-1"):
        kind = key.split("/")[0] if not key.startswith("backups/") else key.split("/")[2]
        counts[kind] += 1
    return dict(counts)


def run_killed_purge(point: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", CHILD, point], env=os.environ | {"PYTHONPATH": str(ROOT)},
        cwd=ROOT, capture_output=True, text=True, timeout=180, check=False)


@pytest.mark.parametrize("point", ["inventoried", "objects-deleted", "key-destroyed"])
def test_killed_purge_and_rerun_end_with_one_certificate(sqlite_platform: Platform,
                                                         point: str) -> None:
    platform = sqlite_platform
    stored_tenant(platform)
    t2_before = sorted(tenant_versions(platform, "t-2"))
    expected = expected_counts(platform)
    # format 4: a snapshot folder holds its manifest only; tables and index are blobs
    assert expected["keys"] == 2 and expected["snapshots"] >= 2 and expected["blobs"] > 2
    assert expected["exports"] > 1
    record_prefix = "backups/t-1/keys/"

    child = run_killed_purge(point)
    assert child.returncode == KILLED, (child.returncode, child.stdout, child.stderr[-3000:])
    left = tenant_versions(platform, "t-1")
    if point == "objects-deleted":  # the objects are gone, the data key is not yet
        assert left and all(k.startswith(record_prefix) for k, _ in left)
        assert len(left) == 2
    with CaseStore(Settings().resolved_control_url()) as cases:
        (killed,) = cases.purges("t-1")
        assert cases.certificate_document(killed.purge_id) is None

    certificate = purge_tenant(PurgeRequest(tenant_id="t-1", confirm=True))

    assert tenant_versions(platform, "t-1") == []
    assert platform.s3.list_multipart_uploads(Bucket=platform.backup_bucket,
                                              Prefix="backups/t-1/").get("Uploads", []) == []
    assert sorted(tenant_versions(platform, "t-2")) == t2_before
    with CaseStore(Settings().resolved_control_url()) as cases:
        assert [p.purge_id for p in cases.purges("t-1")] == [killed.purge_id]  # resumed
    assert certificate["purge_id"] == killed.purge_id
    deleted = certificate["deleted"]
    assert deleted["backup_snapshots"]["count"] == 2
    assert deleted["backup_snapshots"]["versions"] == expected["snapshots"]
    assert deleted["backup_blobs"]["versions"] == expected["blobs"]
    assert deleted["export_packages"] == {"count": 1, "objects": expected["exports"],
                                          "versions": expected["exports"],
                                          "bytes": deleted["export_packages"]["bytes"]}
    assert deleted["migration_statements"]["versions"] == expected["migrations"] == 1
    assert deleted["data_keys"]["count"] == 1 and deleted["data_keys"]["versions"] == 2
    assert deleted["open_uploads"]["count"] == 1
    assert certificate["purge_started_at"] <= certificate["purge_completed_at"]

    again = runner.invoke(app, ["purge", "t-1", "--confirm", "--json"])
    assert again.exit_code == 0, again.stderr
    assert json.loads(again.stdout) == certificate  # the same certificate, re-signed
    issued = [e for e in audit_events("t-1") if e["kind"] == "certificate.issued"]
    assert len(issued) == 1 and issued[0]["details"]["certificate_id"] == certificate[
        "certificate_id"]
    assert [e["kind"] for e in audit_events("t-1")].count("purge.started") == 1


def test_legal_hold_refuses_purge_until_released(sqlite_platform: Platform,
                                                 tmp_path: Path) -> None:
    platform = sqlite_platform
    stored_tenant(platform, versioned=False)
    before = sorted(tenant_versions(platform, "t-1"))

    held = runner.invoke(app, ["hold", "t-1", "--reason", "court order 12/2026", "--json"])
    assert held.exit_code == 0, held.stderr
    assert json.loads(held.stdout)["reason"] == "court order 12/2026"
    other = runner.invoke(app, ["hold", "t-1", "--reason", "another matter"])
    assert other.exit_code == 2 and "already on legal hold" in other.stderr

    refused = runner.invoke(app, ["purge", "t-1", "--confirm"])
    assert refused.exit_code == 2, refused.stderr
    assert "refused: it is on legal hold" in refused.stderr
    assert "court order 12/2026" in refused.stderr and "hold release t-1" in refused.stderr
    assert sorted(tenant_versions(platform, "t-1")) == before  # nothing deleted
    with CaseStore(Settings().resolved_control_url()) as cases:
        assert cases.purges("t-1") == []  # nothing written

    released = runner.invoke(app, ["hold", "release", "t-1", "--by", "operator:legal",
                                   "--json"])
    assert released.exit_code == 0, released.stderr
    assert json.loads(released.stdout)["by"] == "operator:legal"
    out = tmp_path / "certificate.json"
    purged = runner.invoke(app, ["purge", "t-1", "--confirm", "--certificate-out", str(out)])
    assert purged.exit_code == 0, purged.stderr
    assert "deletion certificate D-" in purged.stdout
    assert tenant_versions(platform, "t-1") == []
    assert runner.invoke(app, ["certificate", "verify", str(out)]).exit_code == 0
    keys = json.loads(out.read_text())["deleted"]["data_keys"]
    assert keys["count"] == keys["versions"] == 1  # an unversioned bucket keeps one
    assert [r["key_id"][:6] for r in keys["records"]] == ["local:"]

    trail = audit_events("t-1")
    kinds = [e["kind"] for e in trail]
    assert kinds.index("hold.set") < kinds.index("hold.released") < kinds.index("purge.started")
    release = trail[kinds.index("hold.released")]
    assert release["actor"] == "operator:legal" and release["details"]["reason"] == (
        "court order 12/2026")
    assert datetime.fromisoformat(release["recorded_at"]) <= datetime.now(UTC)


def test_purge_refuses_bad_input(sqlite_platform: Platform, tmp_path: Path) -> None:
    for args, message in [
        (["purge", "t-1"], "confirm it with --confirm"),
        (["purge", "../t-1", "--confirm"], "invalid tenant id"),
        (["purge", "t-1", "--confirm", "--certificate-out", str(tmp_path / "no" / "c.json")],
         "no folder"),
        (["purge", "t-nothing", "--confirm"], "nothing is stored for tenant 't-nothing'"),
    ]:
        result = runner.invoke(app, args)
        assert result.exit_code == 2, (args, result.stdout, result.stderr)
        assert message in result.stderr, (args, result.stderr)
    assert versions_under(sqlite_platform, sqlite_platform.backup_bucket, "backups/") == []


# -- the store, on both control databases ------------------------------------------------------


@pytest.fixture(params=["sqlite", "postgresql"])
def control_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'control.sqlite'}"
    from tests.services import fresh_database

    return fresh_database(request.getfixturevalue("postgres_url"), "c")


def test_case_store_records_each_fact_once_and_never_rewrites(control_url: str) -> None:
    from sqlalchemy import create_engine, text

    from storage.cases import Case, ObjectVersion, Purge, Step

    at = datetime(2026, 12, 26, 2, 0, 4, tzinfo=UTC)
    case = Case("O-20261126-9b3c7d10", "t-42", "2026-11-26", 30, 7, "2026-12-26T00:00:00Z",
                "2026-11-26T09:00:00Z", "operator:maria")
    purge = Purge("P-20261226-0c4d2e1f", "t-42", case.case_id, "2026-12-26T02:00:04Z",
                  "schedule")
    with CaseStore(control_url) as cases:
        cases.open_case(case)
        first, new = cases.record_step(case, Step("export", "2026-11-26T09:03:02Z", "a",
                                                  {"export_id": "x"}))
        again, repeated = cases.record_step(case, Step("export", "2026-11-27T00:00:00Z", "b",
                                                       {"export_id": "y"}))
        assert new and not repeated and again == first  # the first record wins
        assert set(cases.steps(case.case_id)) == {"opened", "export"}
        assert cases.set_hold("t-42", "court order", "legal", at)[1]
        assert not cases.set_hold("t-42", "court order", "legal", at)[1]
        cases.release_hold("t-42", "legal", at)
        assert cases.hold("t-42") is None
        cases.start_purge(purge)
        found = [ObjectVersion("b", "backups/t-42/blobs/ab", "v1", "backup_blobs", "blobs", 10),
                 ObjectVersion("b", "backups/t-42/blobs/ab", "v2", "backup_blobs", "blobs", 7),
                 ObjectVersion("b", "backups/t-42/blobs/ab", "m", "backup_blobs", "blobs", 0,
                               marker=True)]
        assert cases.add_inventory(purge, found) == 3
        assert cases.add_inventory(purge, found) == 0  # a resumed purge counts nothing twice
        assert cases.inventory_totals(purge.purge_id) == {
            "backup_blobs": {"objects": 1, "versions": 2, "bytes": 17, "units": 1}}
        stored = cases.store_certificate(purge, "D-1", {"n": 1})
        assert cases.store_certificate(purge, "D-2", {"n": 2}) == stored == {"n": 1}
    engine = create_engine(control_url.replace("postgresql://", "postgresql+psycopg://"))
    try:
        for statement in ("UPDATE offboarding_steps SET actor = 'x'", "DELETE FROM legal_holds",
                          "DELETE FROM deletion_certificates",
                          "UPDATE purge_objects SET bytes = 0"):
            with pytest.raises(Exception, match="append-only"), engine.begin() as conn:
                conn.execute(text(statement))
    finally:
        engine.dispose()
