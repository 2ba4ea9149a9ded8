"""Backup retention in plain code: forget snapshots outside the policy, then their blobs.

Order matters: a forgotten snapshot is first marked forgotten in the control database (so its
absence is not taken for a rollback), then its manifest is deleted (it stops being a snapshot
at once), then the rest of its folder; blobs are deleted last, and only those no surviving
manifest references (by object name: keyed names and the plain SHA-256 names of format 1 alike,
so a format-1 blob goes once no surviving snapshot names it). The newest verified snapshot is
never deleted.

Prune never touches what a running backup may be writing. Staging objects, blobs and
manifest-less snapshot folders are debris only once they are older than ``STALE_AFTER``, with
or without the tenant lock (a second installation or a hand-run prune may not hold it). An open
multipart upload has no modification time, and its start time is not reliable on every S3
implementation (moto reports 2010 for all), so uploads are aborted only by a prune that holds
the tenant lock (``held``): then no backup of the tenant runs and every open upload is a dead
run's. Without the lock they are counted in the report (``uploads_left``), never aborted.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from flows.context import S3Context
from flows.locks import HeldLock
from storage import backup_store as store
from storage import objects
from storage.registry import SnapshotRegistry
from storage.retention import RetentionPolicy, SnapshotInfo, plan_retention, unreferenced_blobs
from storage.snapshots import snapshot_time
from storage.wrapping import KeyWrapper

STALE_AFTER = timedelta(hours=24)  # anything of a backup younger than this may be running


def backed_up_tenants(ctx: S3Context) -> list[str]:
    """Tenants that have anything in the backup bucket."""
    found = objects.list_prefixes(ctx.s3, ctx.settings.backup_bucket, "backups/")
    return sorted(p.rstrip("/").rsplit("/", 1)[-1] for p in found)


def prune_tenant(ctx: S3Context, wrapper: KeyWrapper, tenant_id: str, policy: RetentionPolicy,
                 *, dry_run: bool, now: datetime | None = None,
                 held: HeldLock | None = None) -> dict[str, Any]:
    """Apply the policy to one tenant; with ``dry_run`` only report what would go.

    ``held``: the tenant's lock, held by the caller; only then are open uploads aborted.
    """
    bucket = ctx.settings.backup_bucket
    cutoff = (now or datetime.now(UTC)) - STALE_AFTER
    complete = ctx.store.list_snapshots(tenant_id)
    plan = plan_retention([SnapshotInfo(s, snapshot_time(s), True) for s in complete], policy)
    forget = [s.snapshot_id for s in plan.delete]
    keep = [s.snapshot_id for s in plan.keep]
    stale = _stale_folders(ctx, tenant_id, set(complete), cutoff)
    blobs_to_delete: list[str] = []
    if keep:
        keys = ctx.store.data_key(wrapper, tenant_id, create=False)
        referenced = [set(ctx.store.blobs(  # distinct names: a pack is named by many lines
            keys, tenant_id, ctx.store.read_manifest(keys, tenant_id, s)))
            for s in keep]
        stored = [k.rsplit("/", 1)[-1] for k, modified in objects.list_objects(
            ctx.s3, bucket, store.tenant_prefix(tenant_id) + "blobs/", tenant_id)
            if modified < cutoff]
        blobs_to_delete = sorted(unreferenced_blobs(stored, referenced))
    staging_prefix = store.staging_prefix(tenant_id)
    staging = [k for k, modified in objects.list_objects(ctx.s3, bucket, staging_prefix,
                                                         tenant_id) if modified < cutoff]
    uploads = {p: objects.count_uploads(ctx.s3, bucket, p, tenant_id)
               for p in [staging_prefix, *stale]}
    aborted = 0
    if not dry_run:
        if held is not None:
            held.check()  # the lock is still ours: no backup of the tenant is running
        with SnapshotRegistry(ctx.settings.resolved_control_url()) as registry:
            registry.record_forgotten(tenant_id, forget)
        for snapshot_id in forget:
            prefix = store.snapshot_prefix(tenant_id, snapshot_id)
            store.delete(ctx.s3, bucket, prefix + store.MANIFEST, tenant_id)  # forgotten now
            objects.delete_prefix(ctx.s3, bucket, prefix, tenant_id)
        # a run killed mid-upload leaves an open multipart upload, invisible to listings
        for prefix, count in uploads.items():
            if held is not None and count:
                aborted += objects.abort_uploads(ctx.s3, bucket, prefix, tenant_id)
        for prefix in stale:
            objects.delete_prefix(ctx.s3, bucket, prefix, tenant_id)
        for name in blobs_to_delete:
            store.delete(ctx.s3, bucket, store.blob_key(tenant_id, name), tenant_id)
        for key in staging:
            store.delete(ctx.s3, bucket, key, tenant_id)
    return {"tenant_id": tenant_id, "dry_run": dry_run, "keep": keep, "forget": forget,
            "reasons": plan.reasons, "blobs_deleted": blobs_to_delete,
            "incomplete_snapshots_deleted": [p.rstrip("/").rsplit("/", 1)[-1] for p in stale],
            "staging_deleted": len(staging), "uploads_aborted": aborted,
            "uploads_left": sum(uploads.values()) - aborted}


def _stale_folders(ctx: S3Context, tenant_id: str, complete: set[str], cutoff: datetime
                   ) -> list[str]:
    """Snapshot folders without a manifest (or with only open uploads) whose backup started,
    and last wrote, before ``cutoff``: old enough not to be a backup still running."""
    bucket = ctx.settings.backup_bucket
    prefix = store.tenant_prefix(tenant_id) + "snapshots/"
    stale = []
    for folder in objects.unmarked_folders(ctx.s3, bucket, prefix, store.MANIFEST, tenant_id):
        snapshot_id = folder.rstrip("/").rsplit("/", 1)[-1]
        if snapshot_id in complete:  # its manifest appeared since the listing
            continue
        try:
            taken = snapshot_time(snapshot_id)
        except ValueError:
            continue  # not ours: leave it alone
        if taken < cutoff and all(modified < cutoff for _, modified in objects.list_objects(
                ctx.s3, bucket, folder, tenant_id)):
            stale.append(folder)
    return stale
