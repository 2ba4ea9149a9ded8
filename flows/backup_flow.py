"""Backup flows: one tenant, the nightly run over every tenant, snapshots and prune."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any, cast

from prefect import flow, get_run_logger
from prefect.artifacts import create_table_artifact
from prefect.futures import wait
from prefect.task_runners import ThreadPoolTaskRunner

from flows import backup, prune
from flows.context import RunContext, S3Context, current_settings
from flows.keyring import master_key
from flows.locks import tenant_lock
from flows.retry import step
from kernel.errors import ExportError
from kernel.ids import validate_tenant_id
from kernel.settings import Settings
from sources.database import Snapshot
from sources.tenants import all_tenants
from storage.retention import RetentionPolicy
from storage.s3 import require_bucket

NIGHTLY_PARALLELISM = 4


@step(task_run_name="backup-{tenant_id}")
def backup_one(tenant_id: str, settings: Settings) -> dict[str, Any]:
    """Back up one tenant under its lock (shared with exports)."""
    validate_tenant_id(tenant_id)
    with tenant_lock(tenant_id, settings.lock_wait_seconds,
                     control_url=settings.resolved_control_url()) as held:
        ctx = RunContext.open(settings)
        try:
            return asdict(backup.backup_tenant(ctx, master_key(settings), tenant_id,
                                               fence=held.check))
        finally:
            ctx.close()


def error_line(error: object) -> str:
    """What the summary says about a failure: the error's first line, never a traceback."""
    text = str(error).strip()
    first = text.splitlines()[0] if text else ""
    return first or type(error).__name__


@flow(name="nightly_backup", flow_run_name="backup-{tenants}",
      task_runner=cast(Any, ThreadPoolTaskRunner(max_workers=NIGHTLY_PARALLELISM)))
def nightly_backup(tenants: list[str] | None = None) -> list[dict[str, Any]]:
    """Back up the given tenants (default: all), at most 4 at a time; one failing never stops
    the others, but fails the run once all are done."""
    logger = get_run_logger()
    settings = current_settings()
    master_key(settings)
    ctx = RunContext.open(settings)
    try:
        require_bucket(ctx.s3, settings.backup_bucket, "backup")
        if tenants:  # named tenants must exist: a typo is bad input, not a failed night
            tenants = [ctx.check_tenant(t).id for t in tenants]  # the ids as stored
        else:
            with Snapshot(ctx.engine) as snap:
                tenants = all_tenants(ctx.catalog, snap)
    finally:
        ctx.close()
    futures = {t: backup_one.submit(t, settings) for t in tenants}
    wait(list(futures.values()))
    results: list[dict[str, Any]] = []
    for tenant_id, future in futures.items():
        state = future.state
        if state.is_completed():
            outcome = future.result()
            results.append({"tenant": tenant_id, "status": "ok", **{k: outcome[k] for k in (
                "snapshot_id", "rows", "documents", "bytes_uploaded")},
                "seconds": round(outcome["seconds"], 1)})
        else:
            error = error_line(state.result(raise_on_failure=False))
            logger.error("backup of %s failed: %s", tenant_id, error)
            results.append({"tenant": tenant_id, "status": "failed", "error": error})
    create_table_artifact(key="nightly-backup", table=results,
                          description="Nightly backup: one row per tenant.")
    failed = [f"{r['tenant']} ({r['error']})" for r in results if r["status"] != "ok"]
    if failed:
        raise ExportError(f"backup failed for {len(failed)} of {len(results)} tenants: "
                          f"{'; '.join(failed)}")
    return results


@flow(name="backup_snapshots", flow_run_name="snapshots-{tenant_id}")
def list_snapshots(tenant_id: str) -> list[str]:
    """Complete snapshots of a tenant, oldest first."""
    validate_tenant_id(tenant_id)
    return S3Context.open(current_settings()).store.list_snapshots(tenant_id)


@flow(name="prune_backups", flow_run_name="prune")
def prune_backups(dry_run: bool = False) -> list[dict[str, Any]]:
    """Apply the retention policy to every backed-up tenant, each under its lock."""
    settings = current_settings()
    policy = RetentionPolicy(settings.keep_daily, settings.keep_weekly, settings.keep_monthly)
    wrapper = master_key(settings)
    ctx = S3Context.open(settings)
    reports: list[dict[str, Any]] = []
    failed: list[str] = []
    for tenant_id in prune.backed_up_tenants(ctx):  # one tenant failing never stops the rest
        try:
            with tenant_lock(tenant_id, settings.lock_wait_seconds,
                             control_url=settings.resolved_control_url()) as held:
                reports.append(prune.prune_tenant(ctx, wrapper, tenant_id, policy,
                                                  dry_run=dry_run, held=held))
        except ExportError as err:
            get_run_logger().error("prune of %s failed: %s", tenant_id, err)
            reports.append({"tenant_id": tenant_id, "error": error_line(err)})
            failed.append(f"{tenant_id} ({error_line(err)})")
    if failed:
        raise ExportError(f"prune failed for {len(failed)} tenants: {'; '.join(failed)}")
    return reports
