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
