"""The nightly run: every tenant, bounded parallelism, one failure never stops the others, a
summary artifact, and a failed run when any tenant failed."""

from __future__ import annotations

from typing import Any

import pytest

from flows import backup
from flows.backup_flow import nightly_backup
from flows.context import RunContext
from kernel.errors import ExportError, StorageError
from kernel.settings import Settings
from tests.conftest import Platform


@pytest.fixture(autouse=True)
def patient_locks(sqlite_platform: Platform, monkeypatch: pytest.MonkeyPatch) -> None:
    """Several tenants acquire their locks at once on a busy machine: allow the default wait
    (after the platform fixture, which sets a short one)."""
    monkeypatch.setenv("TENANT_EXPORT_LOCK_WAIT_SECONDS", "30")


def summary_artifact() -> list[dict[str, Any]]:
    import json

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["nightly-backup"])))
    newest = max(artifacts, key=lambda a: a.created or 0)
    data = newest.data
    rows: list[dict[str, Any]] = json.loads(data) if isinstance(data, str) else data
    return rows


def test_nightly_backs_up_every_tenant(sqlite_platform: Platform) -> None:
    results = nightly_backup()
    assert sorted(r["tenant"] for r in results) == ["t-1", "t-2", "t-empty"]
    assert all(r["status"] == "ok" for r in results)
    ctx = RunContext.open(Settings())
    try:
        for tenant in ("t-1", "t-2", "t-empty"):
            assert len(ctx.store.list_snapshots(tenant)) == 1
    finally:
        ctx.close()
    rows = {r["tenant"]: r for r in summary_artifact()}
    assert rows["t-1"]["status"] == "ok" and int(rows["t-1"]["rows"]) > 0
    progress = newest_progress()  # the bar ends at 100 % with what was done
    assert progress.data == 100.0
    assert "3 of 3 tenants backed up" in (progress.description or "")


def newest_progress() -> Any:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterType

    with get_client(sync_client=True) as client:
        bars = client.read_artifacts(artifact_filter=ArtifactFilter(
            type=ArtifactFilterType(any_=["progress"])))
    return max(bars, key=lambda a: a.created or 0)


def test_one_failing_tenant_does_not_stop_the_others(sqlite_platform: Platform,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    real = backup.backup_tenant

    def flaky(ctx: Any, wrapper: Any, tenant_id: str, **options: Any) -> Any:
        if tenant_id == "t-2":
            raise StorageError("reading document 't2/secret': AccessDenied", tenant_id=tenant_id)
        return real(ctx, wrapper, tenant_id, **options)

    monkeypatch.setattr(backup, "backup_tenant", flaky)
    # the run's own error says why, in one line per tenant (the CLI prints only this line)
    with pytest.raises(ExportError, match=r"1 of 3 tenants: t-2 \(reading document "
                       r"'t2/secret': AccessDenied \(tenant 't-2'\)\)$"):
        nightly_backup()
    ctx = RunContext.open(Settings())
    try:
        assert len(ctx.store.list_snapshots("t-1")) == 1
        assert len(ctx.store.list_snapshots("t-empty")) == 1
        assert ctx.store.list_snapshots("t-2") == []
    finally:
        ctx.close()
    rows = {r["tenant"]: r for r in summary_artifact()}
    assert rows["t-2"]["status"] == "failed"
    assert rows["t-2"]["error"] == "reading document 't2/secret': AccessDenied (tenant 't-2')"
    assert rows["t-1"]["status"] == "ok"


@pytest.mark.parametrize(("error", "line"), [
    (StorageError("denied\n  Traceback (most recent call last): ...", tenant_id="t-2"),
     "denied"),
    (KeyError("blob"), "'blob'"),
    (RuntimeError(""), "RuntimeError"),
])
def test_the_summary_gives_the_first_line_of_any_error(error: BaseException, line: str) -> None:
    from flows.backup_flow import error_line

    assert error_line(error) == line


def test_purged_and_offboarded_tenants_are_skipped_and_a_named_purged_one_refused(
        sqlite_platform: Platform) -> None:
    """A backup after purge would recreate what the certificate says is gone; after an
    offboarding case's final backup, the tenant's data only waits for its purge."""
    from kernel.errors import BadInput
    from storage.cases import Case, CaseStore, Purge

    url = Settings().resolved_control_url()
    with CaseStore(url) as cases:
        cases.start_purge(Purge(purge_id="P-1", tenant_id="t-2", case_id=None,
                                started_at="2026-11-01T00:00:00+00:00", started_by="test"))
        case = cases.open_case(Case(
            case_id="C-1", tenant_id="t-empty", contract_end="2026-10-31", retention_days=30,
            notice_days=7, purge_due="2026-11-30", opened_at="2026-10-31T00:00:00+00:00",
            opened_by="test"))
        from storage.cases import Step
        cases.record_step(case, Step(step="final_backup", at="2026-10-31T01:00:00+00:00",
                                     actor="test"))
    results = {r["tenant"]: r for r in nightly_backup()}
    assert results["t-1"]["status"] == "ok"
    assert results["t-2"] == {"tenant": "t-2", "status": "skipped",
                              "reason": "purged (purge P-1)"}
    assert results["t-empty"]["status"] == "skipped"
    assert "final backup" in results["t-empty"]["reason"]
    ctx = RunContext.open(Settings())
    try:
        assert ctx.store.list_snapshots("t-2") == []  # nothing was recreated
    finally:
        ctx.close()
    with pytest.raises(BadInput, match="purged"):
        nightly_backup(["t-2"])


def test_backups_are_audited_and_measured(sqlite_platform: Platform,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from monitoring import METADATA, FigureStore
    from storage.audit import AuditTrail
    from storage.control import open_control

    real = backup.backup_tenant

    def flaky(ctx: Any, wrapper: Any, tenant_id: str, **options: Any) -> Any:
        if tenant_id == "t-2":
            raise StorageError("reading document: AccessDenied", tenant_id=tenant_id)
        return real(ctx, wrapper, tenant_id, **options)

    monkeypatch.setattr(backup, "backup_tenant", flaky)
    with pytest.raises(ExportError):
        nightly_backup(["t-1", "t-2"])
    url = Settings().resolved_control_url()
    trail = AuditTrail(url)
    try:
        ok = [e for e in trail.events("t-1") if e.kind == "backup.completed"]
        failed = [e for e in trail.events("t-2") if e.kind == "backup.failed"]
        assert len(ok) == 1 and ok[0].details["rows_count"] > 0
        assert ok[0].actor.startswith("cli")  # a direct call, not a schedule
        assert len(failed) == 1 and "AccessDenied" in failed[0].details["reason"]
        assert trail.verify().ok
    finally:
        trail.close()
    engine = open_control(url, METADATA)
    try:
        figures = {(f.family, f.tenant_id): f.value for f in FigureStore(engine).figures()}
    finally:
        engine.dispose()
    assert any(t == "t-1" and "last_verified" in fam for fam, t in figures), figures
    assert any(t == "t-2" and "failed" in fam for fam, t in figures)


def test_run_names_say_whom_they_cover(sqlite_platform: Platform) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName
    from prefect.client.schemas.sorting import FlowRunSort

    nightly_backup(["t-1"])
    nightly_backup(shards=3)  # no deployment here: the shards run in this run
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(
            flow_filter=FlowFilter(name=FlowFilterName(any_=["nightly_backup"])),
            sort=FlowRunSort.START_TIME_DESC, limit=2)
    assert [r.name for r in runs] == ["backup-all", "backup-t-1"]
    assert all(r.state is not None and r.state.is_completed() for r in runs)


def test_progress_counts_tenants_as_they_end_not_in_order(sqlite_platform: Platform,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    import threading

    from flows import backup_flow

    real = backup.backup_tenant
    others_counted = threading.Event()

    def slow_first(ctx: Any, wrapper: Any, tenant_id: str, **options: Any) -> Any:
        if tenant_id == "t-1":  # ends last: once the flow has counted the other two
            assert others_counted.wait(120), "the other tenants were not counted first"
        return real(ctx, wrapper, tenant_id, **options)

    counted: list[str] = []
    real_count = backup_flow._count

    def record(progress: Any, rows: list[dict[str, Any]], *args: Any) -> None:
        counted.extend(r["tenant"] for r in rows)
        real_count(progress, rows, *args)
        if {"t-2", "t-empty"} <= set(counted):
            others_counted.set()

    monkeypatch.setattr(backup, "backup_tenant", slow_first)
    monkeypatch.setattr(backup_flow, "_count", record)
    results = nightly_backup(["t-1", "t-2", "t-empty"])
    assert counted[-1] == "t-1" and sorted(counted) == ["t-1", "t-2", "t-empty"]
    assert [r["tenant"] for r in results] == ["t-1", "t-2", "t-empty"]  # the summary's order
