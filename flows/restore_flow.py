"""Verify and restore flows: read a snapshot back, rebuild a tenant from it, or put one tenant
of the live platform back to it."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact

from flows import restore, verify
from flows.context import RunContext, S3Context, current_settings
from flows.forms import (
    OptionalBucket,
    OptionalSnapshotId,
    OptionalTargetName,
    TenantId,
    form_field,
)
from flows.keyring import master_key
from flows.locks import tenant_lock
from flows.observe import audit_if_possible, current_actor, open_metrics
from flows.targets import resolve_target
from kernel.dburl import describe_url
from kernel.errors import BadInput
from kernel.ids import artifact_key, validate_tenant_id
from kernel.settings import Settings
from storage.audit import AuditKind
from storage.snapshots import snapshot_time

TENANT_HELP = ("The tenant's id as the platform database lists it (for example harbour-rowing): "
               "letters, digits, '.', '_' or '-'.")
SNAPSHOT_HELP = ("The backup snapshot, as its id (for example 20261126T023000Z-1a2b3c4d). Leave "
                 "empty: the tenant's newest complete snapshot.")


@flow(name="verify_backup", flow_run_name="verify-{tenant_id}")
def verify_backup(
    tenant_id: Annotated[TenantId, form_field("Tenant", TENANT_HELP)],
    snapshot_id: Annotated[OptionalSnapshotId, form_field(
        "Snapshot", SNAPSHOT_HELP, default="")] = None,
) -> dict[str, Any]:
    """Decrypt and check every object of a snapshot."""
    validate_tenant_id(tenant_id)
    settings = current_settings()
    with _reported("verify", tenant_id) as card:
        result = _warned(verify.verify_snapshot(S3Context.open(settings),
                                                 master_key(settings), tenant_id, snapshot_id))
        card.update(result)
    with open_metrics(settings) as metrics:  # an old snapshot never resets the newest's age
        metrics.backup_verified(tenant_id, snapshot_time(result["snapshot_id"]).timestamp())
    return result


def _warned(result: dict[str, Any]) -> dict[str, Any]:
    """Log the result's warnings (a rollback, snapshots missing from the bucket)."""
    for warning in result.get("warnings", []):
        get_run_logger().warning(warning)
    return result


@flow(name="restore_backup", flow_run_name="restore-{tenant_id}")
def restore_backup(
    tenant_id: Annotated[TenantId, form_field("Tenant", TENANT_HELP)],
    target: Annotated[OptionalTargetName, form_field(
        "Restore into database", "The database to write into, by name only: env:VARIABLE_URL "
        "(an environment variable of the worker whose name ends in _URL) or secret:BLOCK (a "
        "Prefect Secret block holding the URL). Leave empty: TENANT_EXPORT_RESTORE_TARGET_URL. "
        "A URL is never typed here: Prefect would store it with the run.", default="")] = None,
    snapshot_id: Annotated[OptionalSnapshotId, form_field(
        "Snapshot", SNAPSHOT_HELP, default="")] = None,
    documents_bucket: Annotated[OptionalBucket, form_field(
        "Restore documents into bucket", "An existing S3 bucket for the tenant's documents "
        "(for example restore-t42-documents), empty of the tenant's documents. Leave empty: "
        "only the tables are restored (the documents are checked with the snapshot, not "
        "written).", default="")] = None,
    data_only: Annotated[bool, form_field(
        "Into the platform's schema (rows only)", "Write only rows, into a database whose "
        "tables the platform's migrations created. Off: the database must be empty and the "
        "restore creates the tables.")] = False,
) -> dict[str, Any]:
    """Restore a snapshot into an empty database, or (``data_only``) into one whose schema the
    platform's migrations created (and documents into a bucket).

    ``target`` names the database without carrying a credential: a URL without password,
    ``env:VARIABLE`` or ``secret:BLOCK`` (a Prefect Secret block); default:
    ``TENANT_EXPORT_RESTORE_TARGET_URL``.
    """
    validate_tenant_id(tenant_id)
    settings = current_settings()
    with _reported("restore", tenant_id) as card:
        url = resolve_target(target, settings)  # a refused target gets its result card too
        mode = "data-only" if data_only else "empty-database"
        with _audited(settings, tenant_id, mode, describe_url(url).split("?", 1)[0]) as done:
            result = _warned(restore.restore_snapshot(
                S3Context.open(settings), master_key(settings), tenant_id, url, snapshot_id,
                documents_bucket, data_only=data_only))
            done.update(snapshot_id=result.get("snapshot_id"),
                        rows_count=sum(result.get("rows", {}).values()))
        card.update(result)
    return result


@flow(name="restore_in_place", flow_run_name="restore-in-place-{tenant_id}")
def restore_in_place(
    tenant_id: Annotated[TenantId, form_field("Tenant", TENANT_HELP)],
    snapshot_id: Annotated[OptionalSnapshotId, form_field(
        "Snapshot", SNAPSHOT_HELP, default="")] = None,
    confirm: Annotated[bool, form_field(
        "Yes, replace the tenant's live data", "Required: the tenant's rows in the live "
        "platform database are replaced by the snapshot's (rows created since are removed) "
        "and its documents rewritten where missing or different. Off: nothing is "
        "touched.")] = False,
) -> dict[str, Any]:
    """Replace one tenant's rows in the live platform database with a snapshot's (rows created
    since are removed) and rewrite its documents that are missing or differ, under the tenant
    lock. ``confirm`` must be true: nothing is touched otherwise."""
    validate_tenant_id(tenant_id)
    if not confirm:
        raise BadInput(f"an in-place restore replaces tenant {tenant_id!r}'s rows in the live "
                       "platform database with the snapshot's (rows created since are "
                       "removed): confirm it (--confirm); nothing was touched",
                       tenant_id=tenant_id)
    settings = current_settings()
    wrapper = master_key(settings)
    ctx = RunContext.open(settings)
    try:
        stored = ctx.check_tenant(tenant_id).id  # the lock is the stored id's
        if stored != tenant_id:
            raise BadInput(f"tenant {tenant_id!r} is stored as {stored!r}: use that id",
                           tenant_id=tenant_id)
        with (_reported("restore-in-place", tenant_id) as card,
              _audited(settings, tenant_id, "in-place", "the platform database") as done,
              tenant_lock(tenant_id, settings.lock_wait_seconds,
                          control_url=settings.resolved_control_url()) as held):
            result = _warned(restore.restore_in_place(ctx, wrapper, tenant_id, snapshot_id,
                                                      fence=held.check))
            done.update(snapshot_id=result.get("snapshot_id"))
            card.update(result)
            return result
    finally:
        ctx.close()


@contextmanager
def _reported(kind: str, tenant_id: str) -> Iterator[dict[str, Any]]:
    """The run's result artifact, readable without opening logs: what the block put in the
    card (snapshot, rows per table, counts, warnings), or the one-line reason it failed."""
    from prefect.context import FlowRunContext  # noqa: PLC0415

    card: dict[str, Any] = {}
    if FlowRunContext.get() is None:  # called as a function (tests): no run to report on
        yield card
        return
    try:
        yield card
    except Exception as failure:
        reason = str(failure).strip().splitlines()[0] if str(failure).strip() else (
            type(failure).__name__)
        verdict = "refused" if isinstance(failure, BadInput) else "failed"
        create_markdown_artifact(key=artifact_key(kind, tenant_id),
                                 markdown=f"# {kind} of tenant `{tenant_id}`: {verdict}\n\n"
                                 f"{reason}")
        raise
    create_markdown_artifact(key=artifact_key(kind, tenant_id), markdown=_card(kind, tenant_id,
                                                                              card))


def _shown(value: object) -> object:
    """A database URL only as described (no password); any other URL not at all."""
    if not isinstance(value, str) or "://" not in value:
        return value
    try:
        return describe_url(value)
    except BadInput:
        return "(not shown)"


def _card(kind: str, tenant_id: str, result: dict[str, Any]) -> str:
    """Markdown of a verify or restore result: figures and warnings, never a URL."""
    lines = [f"# {kind} of tenant `{tenant_id}`: completed", "",
             f"Snapshot `{result.get('snapshot_id', '?')}`."]
    scalars = {k: _shown(v) for k, v in result.items()
               if isinstance(v, int | float | str) and k not in ("snapshot_id", "tenant_id")}
    if scalars:
        lines += ["", "| figure | value |", "|---|---|",
                  *(f"| {k.replace('_', ' ')} | {v} |" for k, v in sorted(scalars.items()))]
    rows = result.get("rows")
    if isinstance(rows, dict) and rows:
        lines += ["", "| table | rows |", "|---|---|",
                  *(f"| `{t}` | {n} |" for t, n in sorted(rows.items()))]
    warnings = result.get("warnings") or []
    lines += ["", "Warnings:", *(f"- {w}" for w in warnings)] if warnings else [
        "", "No warnings."]
    return "\n".join(lines)


@contextmanager
def _audited(settings: Settings, tenant_id: str, mode: str, target: str
             ) -> Iterator[dict[str, Any]]:
    """``restore.completed`` (with what the block adds) or ``restore.failed`` with the reason:
    the portal's "last restore test" reads these."""
    actor = current_actor()
    done: dict[str, Any] = {}
    try:
        yield done
    except Exception as failure:
        reason = str(failure).strip().splitlines()[0] if str(failure).strip() else (
            type(failure).__name__)
        audit_if_possible(settings, AuditKind.RESTORE_FAILED, tenant_id, actor, mode=mode,
                          target=target, reason=reason)
        raise
    audit_if_possible(settings, AuditKind.RESTORE_COMPLETED, tenant_id, actor, mode=mode,
                      target=target, **{k: v for k, v in done.items() if v is not None})
