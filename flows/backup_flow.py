"""Backup flows: one tenant, the nightly run over every tenant, snapshots and prune."""

from __future__ import annotations

import json
import os
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict
from typing import Annotated, Any, cast

from prefect import flow, get_run_logger
from prefect.artifacts import create_table_artifact
from prefect.futures import as_completed as prefect_as_completed
from prefect.task_runners import ThreadPoolTaskRunner
from pydantic import Field

from flows import backup, crash_rerun, prune
from flows.context import RunContext, S3Context, current_settings
from flows.forms import TenantIds, form_field
from flows.keyring import master_key
from flows.locks import tenant_lock
from flows.observe import audit, current_actor, emit, open_metrics
from flows.progress import Progress
from flows.retry import step
from kernel.errors import BadInput, ExportError
from kernel.ids import validate_tenant_id
from kernel.settings import Settings
from sources.tenants import all_tenants
from storage.audit import AuditKind
from storage.cases import CaseStore
from storage.retention import RetentionPolicy
from storage.s3 import require_bucket

NIGHTLY_PARALLELISM = 4
NIGHTLY_SHARD_DEPLOYMENT = "nightly_backup/nightly-backup-shard"
"""Where the shards run: not ``nightly-backup`` itself, whose one-at-a-time limit the waiting
night holds (its shards would wait for it forever)."""


@step(task_run_name="backup-{tenant_id}")
def backup_one(tenant_id: str, settings: Settings, actor: str = "cli") -> dict[str, Any]:
    """Back up one tenant under its lock (shared with exports); audited and measured."""
    validate_tenant_id(tenant_id)
    started = time.monotonic()
    with open_metrics(settings) as metrics:
        try:
            with tenant_lock(tenant_id, settings.lock_wait_seconds,
                             control_url=settings.resolved_control_url()) as held:
                ctx = RunContext.open(settings)
                try:
                    summary = backup.backup_tenant(ctx, master_key(settings), tenant_id,
                                                   fence=held.check)
                finally:
                    ctx.close()
        except Exception as failure:
            metrics.backup_failed(tenant_id)
            audit(settings, AuditKind.BACKUP_FAILED, tenant_id, actor,
                  reason=error_line(failure), seconds=round(time.monotonic() - started, 1))
            raise
        metrics.backup_completed(tenant_id, summary.bytes_uploaded, summary.seconds,
                                 summary.documents_missing)
    audit(settings, AuditKind.BACKUP_COMPLETED, tenant_id, actor,
          snapshot_id=summary.snapshot_id, rows_count=summary.rows,
          documents_count=summary.documents, documents_missing_count=summary.documents_missing,
          bytes_uploaded=summary.bytes_uploaded)
    emit("tenant.backup.verified", tenant_id, {"snapshot_id": summary.snapshot_id})
    return asdict(summary)


def error_line(error: object) -> str:
    """What the summary says about a failure: the error's first line, never a traceback."""
    text = str(error).strip()
    first = text.splitlines()[0] if text else ""
    return first or type(error).__name__


def _run_name() -> str:
    """``backup-all``, ``backup-t-42`` or ``backup-t-1+2-more``: the run says whom it covers."""
    from prefect.runtime import flow_run  # noqa: PLC0415

    tenants = (flow_run.parameters or {}).get("tenants") or []
    if not tenants:
        return "backup-all"
    return f"backup-{tenants[0]}" + (f"+{len(tenants) - 1}-more" if len(tenants) > 1 else "")


def _tenants_tonight(settings: Settings, tenants: list[str] | None) -> tuple[list[str],
                                                                            dict[str, str]]:
    """The tenants to back up, ids as stored, and those skipped with why (purged, offboarded).

    Named tenants must exist (a typo is bad input, not a failed night); a named tenant that
    was purged is refused, since a backup would recreate what its certificate says is gone.
    """
    ctx = RunContext.open(settings)
    try:
        require_bucket(ctx.s3, settings.backup_bucket, "backup")
        named = bool(tenants)
        if tenants:
            tenants = [ctx.check_tenant(t).id for t in tenants]  # the ids as stored
        else:
            with ctx.snapshot() as snap:
                tenants = all_tenants(ctx.catalog, snap)
    finally:
        ctx.close()
    with CaseStore(settings.resolved_control_url()) as cases:
        excluded = cases.backup_exclusions()
    skipped = {t: excluded[t] for t in tenants if t in excluded}
    purged = [t for t, why in skipped.items() if why.startswith("purged")]
    if named and purged:
        raise BadInput(f"tenant(s) {', '.join(purged)} were purged: a backup would recreate "
                       "what the deletion certificate says is gone")
    return [t for t in tenants if t not in skipped], skipped


@flow(name="nightly_backup", flow_run_name=_run_name,
      task_runner=cast(Any, ThreadPoolTaskRunner(max_workers=NIGHTLY_PARALLELISM)))
def nightly_backup(
    tenants: Annotated[TenantIds, form_field(
        "Only these tenants", "Tenant ids to back up (for example harbour-rowing). Leave "
        "empty: every tenant the platform lists (offboarded and purged tenants are skipped).",
        default=[])] = None,
    shards: Annotated[int, Field(ge=1, le=64), form_field(
        "Workers sharing the night", "Split a run over every tenant into this many runs of "
        "the nightly-backup-shard deployment, so several workers share the night: 1 to 64 "
        "(1: all in this run).")] = 1,
) -> list[dict[str, Any]]:
    """Back up the given tenants (default: all), at most 4 at a time per run; one failing never
    stops the others, but fails the run once all are done."""
    logger = get_run_logger()
    settings = current_settings()
    master_key(settings)
    actor = current_actor()
    sharded = not tenants and shards > 1
    todo, skipped = _tenants_tonight(settings, tenants)
    for tenant_id, why in skipped.items():
        logger.info("skipping tenant %s: %s", tenant_id, why)
    with Progress(total_steps=len(todo), title=f"Nightly backup of {len(todo)} "
                  "tenant(s)") as progress:
        if sharded and len(todo) > 1 and _deployed(NIGHTLY_SHARD_DEPLOYMENT):
            results = _run_shards(todo, shards, progress)
        else:
            results = _run_here(todo, settings, actor, progress, logger)
    results += [{"tenant": t, "status": "skipped", "reason": why} for t, why in skipped.items()]
    create_table_artifact(key="nightly-backup", table=results,
                          description="Nightly backup: one row per tenant.")
    failed = [f"{r['tenant']} ({r['error']})" for r in results if r["status"] == "failed"]
    if failed:
        raise ExportError(f"backup failed for {len(failed)} of {len(results)} tenants: "
                          f"{'; '.join(failed)}")
    return results


def _run_here(todo: list[str], settings: Settings, actor: str, progress: Progress,
              logger: Any) -> list[dict[str, Any]]:
    """Back up ``todo`` in this run, at most ``NIGHTLY_PARALLELISM`` at a time; rows in the
    order of ``todo``, progress counted as each tenant ends (whichever ends first)."""
    futures = {backup_one.submit(t, settings, actor): t for t in todo}
    rows: dict[str, dict[str, Any]] = {}
    for future in prefect_as_completed(list(futures)):
        tenant_id = futures[future]
        future.wait()  # done: this records its final state (else read back from the API)
        row = rows[tenant_id] = _outcome(tenant_id, future.state, logger)
        _count(progress, [row], len(rows), len(todo), f"last: {tenant_id}, {row['status']}")
    return [rows[t] for t in todo]


def _count(progress: Progress, rows: list[dict[str, Any]], done: int, total: int,
           last: str) -> None:
    """Progress once ``rows`` ended, ``done`` of ``total`` tenants so far (``Progress``
    throttles what it publishes: 1,000 tenants are not 1,000 artifact updates)."""
    progress.doing(f"{done} of {total} tenants backed up ({last})")
    progress.advance(len(rows), documents=sum(int(r.get("documents") or 0) for r in rows),
                     nbytes=sum(int(r.get("bytes_uploaded") or 0) for r in rows))


def _outcome(tenant_id: str, state: Any, logger: Any) -> dict[str, Any]:
    """One row of the summary from a finished task's state."""
    if state.is_completed():
        outcome = state.result()
        return {"tenant": tenant_id, "status": "ok", **{k: outcome[k] for k in (
            "snapshot_id", "rows", "documents", "bytes_uploaded")},
            "seconds": round(outcome["seconds"], 1)}
    error = error_line(state.result(raise_on_failure=False))
    logger.error("backup of %s failed: %s", tenant_id, error)
    return {"tenant": tenant_id, "status": "failed", "error": error}


def _deployed(name: str) -> bool:
    """Whether the server has the deployment (a run started by the CLI on embedded defaults
    has none: its shards would have nowhere to run, so it backs up in this run)."""
    from prefect.client.orchestration import get_client  # noqa: PLC0415
    from prefect.exceptions import ObjectNotFound  # noqa: PLC0415

    try:
        with get_client(sync_client=True) as client:
            client.read_deployment_by_name(name)
    except ObjectNotFound:
        get_run_logger().warning("deployment %s not found: the shards run in this run", name)
        return False
    return True


def _run_shards(tenants: list[str], shards: int,
                progress: Progress | None = None) -> list[dict[str, Any]]:
    """Run the deployment once per shard of tenants (on whichever workers are free) and wait;
    a shard that fails reports each of its tenants from its own summary or as failed, a shard
    that crashed is run again (``flows.crash_rerun``: bounded, never a cancelled one). Rows in
    the order of ``tenants``; progress counted as each shard ends."""
    count = min(shards, len(tenants))
    parts = [tenants[i::count] for i in range(count)]
    logger = get_run_logger()
    rows: list[dict[str, Any]] = []
    ended = 0
    with ThreadPoolExecutor(max_workers=count) as pool:
        futures = {pool.submit(_one_shard, part, logger): part for part in parts}
        for future in as_completed(futures):  # in the order they end
            part = futures[future]
            try:
                got = future.result()
            except Exception as err:  # noqa: BLE001 - one shard never drops the others' rows
                got = _shard_failed(part, err)
            rows += got
            ended += len(part)
            if progress is not None:
                _count(progress, [r for r in got if r.get("tenant") in part], ended,
                       len(tenants), f"last: a shard of {len(part)}")
    order = {tenant: i for i, tenant in enumerate(tenants)}
    return sorted(rows, key=lambda row: order.get(str(row.get("tenant")), len(order)))


def _shard_failed(part: list[str], error: object) -> list[dict[str, Any]]:
    """Each tenant of a shard as failed, with the shard's one-line reason."""
    return [{"tenant": t, "status": "failed", "error": f"shard run failed: {error_line(error)}"}
            for t in part]


def _one_shard(part: list[str], logger: Any) -> list[dict[str, Any]]:
    """One shard's rows: its run (and its re-runs after crashes), read from its summary."""
    from prefect.client.orchestration import get_client  # noqa: PLC0415
    from prefect.deployments import run_deployment  # noqa: PLC0415

    options: dict[str, Any] = {}
    while True:
        try:
            run: Any = run_deployment(NIGHTLY_SHARD_DEPLOYMENT,
                                      parameters={"tenants": part, "shards": 1},
                                      timeout=None, as_subflow=True, **options)  # sync here
        except Exception as err:  # noqa: BLE001 - reported as this shard's failure
            logger.error("shard %s could not run: %s", ", ".join(part), error_line(err))
            return _shard_failed(part, err)
        rows = _shard_summary(run.id)  # results are not persisted: the summary artifact is
        if rows is not None:
            return rows
        state = run.state
        if state is not None and state.is_crashed():
            with get_client(sync_client=True) as client:
                decision = crash_rerun.rerun_of(
                    client, run.id, crash_rerun.reruns_from(os.environ))
            if not isinstance(decision, str):
                logger.warning("shard run %s crashed; %s", run.name, decision.message)
                options = {"tags": decision.tags, "idempotency_key": decision.idempotency_key}
                continue
            logger.error("shard run %s crashed: %s", run.name, decision)
        reason = error_line(state.message if state is not None and state.message else
                            "the shard's run did not complete")
        return _shard_failed(part, reason)


def _shard_summary(run_id: Any) -> list[dict[str, Any]] | None:
    """The rows of a finished shard's ``nightly-backup`` table artifact (None: it made none,
    it crashed before its summary)."""
    from prefect.client.orchestration import get_client  # noqa: PLC0415
    from prefect.client.schemas.filters import (  # noqa: PLC0415
        ArtifactFilter,
        ArtifactFilterFlowRunId,
        ArtifactFilterKey,
    )
    from prefect.client.schemas.sorting import ArtifactSort  # noqa: PLC0415

    with get_client(sync_client=True) as client:  # the newest, should a run have made two
        found = client.read_artifacts(artifact_filter=ArtifactFilter(
            flow_run_id=ArtifactFilterFlowRunId(any_=[run_id]),
            key=ArtifactFilterKey(any_=["nightly-backup"])),
            sort=ArtifactSort.CREATED_DESC, limit=1)
    if not found:
        return None
    data = found[0].data
    rows = json.loads(data) if isinstance(data, str) else data
    return [dict(row) for row in rows] if isinstance(rows, list) else None


@flow(name="backup_snapshots", flow_run_name="snapshots-{tenant_id}")
def list_snapshots(tenant_id: str) -> list[str]:
    """Complete snapshots of a tenant, oldest first."""
    validate_tenant_id(tenant_id)
    return S3Context.open(current_settings()).store.list_snapshots(tenant_id)


@flow(name="prune_backups", flow_run_name="prune")
def prune_backups(
    dry_run: Annotated[bool, form_field(
        "Only report, delete nothing", "List the snapshots the retention policy would forget "
        "and the blobs it would delete, without deleting anything.")] = False,
) -> list[dict[str, Any]]:
    """Apply the retention policy to every backed-up tenant, each under its lock."""
    settings = current_settings()
    policy = RetentionPolicy(settings.keep_daily, settings.keep_weekly, settings.keep_monthly)
    wrapper = master_key(settings)
    actor = current_actor()
    ctx = S3Context.open(settings)
    reports: list[dict[str, Any]] = []
    failed: list[str] = []
    for tenant_id in prune.backed_up_tenants(ctx):  # one tenant failing never stops the rest
        try:
            with tenant_lock(tenant_id, settings.lock_wait_seconds,
                             control_url=settings.resolved_control_url()) as held:
                report = prune.prune_tenant(ctx, wrapper, tenant_id, policy,
                                            dry_run=dry_run, held=held)
                reports.append(report)
            if not dry_run:
                audit(settings, AuditKind.PRUNE, tenant_id, actor,
                      snapshots_forgotten=len(report.get("forget", [])),
                      snapshots_kept=len(report.get("keep", [])),
                      blobs_deleted=len(report.get("blobs_deleted", [])))
        except ExportError as err:
            get_run_logger().error("prune of %s failed: %s", tenant_id, err)
            reports.append({"tenant_id": tenant_id, "error": error_line(err)})
            failed.append(f"{tenant_id} ({error_line(err)})")
    if failed:
        raise ExportError(f"prune failed for {len(failed)} tenants: {'; '.join(failed)}")
    return reports
