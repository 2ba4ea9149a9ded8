"""Export retention (issue 12): the scheduled cleanup deletes a package (every version) once
``export_retention_days`` have passed since its ``created`` time, incomplete folders once they
are a day old (open uploads aborted), keeps a package while its tenant's offboarding case
has not been purged and everything of a tenant on legal hold; ``links`` refuses (exit 2) for
a package that is gone and works for as long as it exists. The clock is the test's."""

from __future__ import annotations

import json
from datetime import datetime, timedelta

from typer.testing import CliRunner

from flows.export_flow import ExportRequest, offboarding_export
from flows.offboarding import CaseDesk, start_case
from flows.offboarding_flow import export_retention
from kernel.settings import Settings
from tenant_export.cli import app
from tests.conftest import Platform
from tests.test_offboarding import audit_events, version, versions_under

runner = CliRunner()


def folder_of(platform: Platform, tenant: str, export_id: str) -> list[tuple[str, str]]:
    return versions_under(platform, platform.export_bucket, f"exports/{tenant}/{export_id}/")


def test_packages_expire_after_retention_unless_a_case_or_a_hold_keeps_them(
        sqlite_platform: Platform) -> None:
    platform = sqlite_platform
    version(platform)
    t1 = offboarding_export(ExportRequest(tenant_id="t-1"))["export_id"]
    t2 = offboarding_export(ExportRequest(tenant_id="t-2"))["export_id"]
    created = _created(platform, "t-2", t2)
    s3, bucket = platform.s3, platform.export_bucket
    stale = "exports/t-2/20200101T000000Z-0bad/"  # a run killed years ago
    s3.put_object(Bucket=bucket, Key=stale + "data/members.csv", Body=b"id\n1\n")
    s3.create_multipart_upload(Bucket=bucket, Key=stale + "documents/documents-0001.zip")
    fresh = f"exports/t-2/{created + timedelta(hours=24):%Y%m%dT%H%M%SZ}-0f00/"  # running
    s3.put_object(Bucket=bucket, Key=fresh + "data/members.csv", Body=b"id\n")

    report = export_retention(now=created + timedelta(hours=25))
    assert [(r["export_id"], r["reason"], r["action"]) for r in report] == [
        ("20200101T000000Z-0bad", "incomplete", "deleted")]
    assert versions_under(platform, bucket, stale) == []
    assert s3.list_multipart_uploads(Bucket=bucket, Prefix=stale).get("Uploads", []) == []
    assert versions_under(platform, bucket, fresh) and folder_of(platform, "t-2", t2)
    assert runner.invoke(app, ["links", "t-2", "--export-id", t2]).exit_code == 0

    assert runner.invoke(app, ["hold", "t-2", "--reason", "dispute 7"]).exit_code == 0
    desk = CaseDesk.open(Settings(), created)
    try:  # t-1 leaves: its case keeps its export until the purge, 45 days after today
        case = start_case(desk, "t-1", created.date(), "operator:test", retention_days=45)
    finally:
        desk.close()
    later = created + timedelta(days=31)
    planned = export_retention(now=later, dry_run=True)
    assert sorted((r["export_id"], r["action"]) for r in planned) == sorted([
        (t2, "kept: legal hold"), (fresh.split("/")[2], "kept: legal hold")])  # all of t-2
    assert folder_of(platform, "t-2", t2) and versions_under(platform, bucket, fresh)

    assert runner.invoke(app, ["hold", "release", "t-2"]).exit_code == 0
    planned = export_retention(now=later, dry_run=True)
    assert {r["action"] for r in planned} == {"would delete"} and len(planned) == 2
    assert folder_of(platform, "t-2", t2)  # a dry run deletes nothing
    report = export_retention(now=later)
    assert {(r["export_id"], r["reason"]) for r in report} == {
        (t2, "retention ended"), (fresh.split("/")[2], "incomplete")}
    assert folder_of(platform, "t-2", t2) == []  # every version
    assert folder_of(platform, "t-1", t1)  # kept by the open case
    gone = runner.invoke(app, ["links", "t-2", "--export-id", t2])
    assert gone.exit_code == 2 and t2 in gone.stderr, gone.stderr  # one clear line, exit 2
    newest = runner.invoke(app, ["links", "t-2"])
    assert newest.exit_code == 2 and "no complete export" in newest.stderr
    assert runner.invoke(app, ["links", "t-1", "--export-id", t1]).exit_code == 0

    due = datetime.fromisoformat(case.purge_due.replace("Z", "+00:00"))
    assert export_retention(now=due - timedelta(seconds=1)) == []
    (expired,) = export_retention(now=due)
    assert (expired["tenant_id"], expired["export_id"]) == ("t-1", t1)
    assert versions_under(platform, bucket, "exports/") == []
    deleted = [e["details"] for e in audit_events("t-2") if e["kind"] == "export.deleted"]
    assert {d["export_id"] for d in deleted} == {t2, "20200101T000000Z-0bad",
                                                 fresh.split("/")[2]}
    assert all(e["actor"] == "schedule" for e in audit_events("t-1")
               if e["kind"] == "export.deleted")


def _created(platform: Platform, tenant: str, export_id: str) -> datetime:
    """The package's ``created`` time, as its datapackage.json says."""
    body = platform.s3.get_object(Bucket=platform.export_bucket,
                                  Key=f"exports/{tenant}/{export_id}/datapackage.json")["Body"]
    return datetime.fromisoformat(json.loads(body.read())["created"])
