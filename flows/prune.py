"""Backup retention in plain code: forget snapshots outside the policy, then their blobs.

Order matters: a snapshot is forgotten by deleting its manifest first (it stops being a
snapshot at once), then the rest of its folder; blobs are deleted last, and only those no
surviving manifest references. The newest verified snapshot is never deleted.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from flows.context import S3Context
from storage import backup_store as store
from storage import objects
from storage.keys import KeyWrapper
from storage.retention import RetentionPolicy, SnapshotInfo, plan_retention, unreferenced_blobs
from storage.snapshots import snapshot_time

STALE_AFTER = timedelta(hours=24)  # an incomplete snapshot younger than this may be running


def backed_up_tenants(ctx: S3Context) -> list[str]:
    """Tenants that have anything in the backup bucket."""
    found = objects.list_prefixes(ctx.s3, ctx.settings.backup_bucket, "backups/")
    return sorted(p.rstrip("/").rsplit("/", 1)[-1] for p in found)


def prune_tenant(ctx: S3Context, wrapper: KeyWrapper, tenant_id: str, policy: RetentionPolicy,
                 *, dry_run: bool, now: datetime | None = None) -> dict[str, Any]:
    """Apply the policy to one tenant; with ``dry_run`` only report what would go."""
    bucket = ctx.settings.backup_bucket
    complete = ctx.store.list_snapshots(tenant_id)
    plan = plan_retention([SnapshotInfo(s, snapshot_time(s), True) for s in complete], policy)
    forget = [s.snapshot_id for s in plan.delete]
    keep = [s.snapshot_id for s in plan.keep]
    stale = _stale_folders(ctx, tenant_id, set(complete), now or datetime.now(UTC))
    blobs_to_delete: list[str] = []
    if keep:
        dek = ctx.store.data_key(wrapper, tenant_id, create=False)
        referenced = [[d["blob"] for d in ctx.store.read_manifest(dek, tenant_id, s)["documents"]
                       if d.get("blob")] for s in keep]
        # a blob younger than a day may belong to a backup still running (whose manifest does
        # not exist yet): leave it to a later prune
        cutoff = (now or datetime.now(UTC)) - STALE_AFTER
        stored = [k.rsplit("/", 1)[-1] for k, modified in objects.list_objects(
            ctx.s3, bucket, store.tenant_prefix(tenant_id) + "blobs/", tenant_id)
            if modified < cutoff]
        blobs_to_delete = sorted(unreferenced_blobs(stored, referenced))
    staging = objects.list_keys(ctx.s3, bucket, store.staging_prefix(tenant_id), tenant_id)
    if not dry_run:
        for snapshot_id in forget:
            prefix = store.snapshot_prefix(tenant_id, snapshot_id)
            store.delete(ctx.s3, bucket, prefix + store.MANIFEST, tenant_id)  # forgotten now
            objects.delete_prefix(ctx.s3, bucket, prefix, tenant_id)
        for prefix in stale:
            objects.delete_prefix(ctx.s3, bucket, prefix, tenant_id)
        for sha in blobs_to_delete:
            store.delete(ctx.s3, bucket, store.blob_key(tenant_id, sha), tenant_id)
        for key in staging:
            store.delete(ctx.s3, bucket, key, tenant_id)
        # a run killed mid-upload leaves an open multipart upload, invisible to listings
        objects.abort_uploads(ctx.s3, bucket, store.staging_prefix(tenant_id), tenant_id)
    return {"tenant_id": tenant_id, "dry_run": dry_run, "keep": keep, "forget": forget,
            "reasons": plan.reasons, "blobs_deleted": blobs_to_delete,
            "incomplete_snapshots_deleted": [p.rstrip("/").rsplit("/", 1)[-1] for p in stale],
            "staging_deleted": len(staging)}


def _stale_folders(ctx: S3Context, tenant_id: str, complete: set[str], now: datetime) -> list[str]:
    """Snapshot folders without a manifest, old enough not to be a backup still running."""
    prefix = store.tenant_prefix(tenant_id) + "snapshots/"
    folders = objects.list_prefixes(ctx.s3, ctx.settings.backup_bucket, prefix, tenant_id)
    stale = []
    for folder in folders:
        snapshot_id = folder.rstrip("/").rsplit("/", 1)[-1]
        if snapshot_id in complete:
            continue
        try:
            taken = snapshot_time(snapshot_id)
        except ValueError:
            continue  # not ours: leave it alone
        if now - taken > STALE_AFTER:
            stale.append(folder)
    return stale
