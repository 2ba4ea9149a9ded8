"""Verify and restore flows: read a snapshot back, or rebuild a tenant from it."""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger

from flows import restore
from flows.context import S3Context, current_settings
from flows.keyring import master_key
from flows.targets import resolve_target
from kernel.ids import validate_tenant_id


@flow(name="verify_backup", flow_run_name="verify-{tenant_id}")
def verify_backup(tenant_id: str, snapshot_id: str | None = None) -> dict[str, Any]:
    """Decrypt and check every object of a snapshot."""
    validate_tenant_id(tenant_id)
    settings = current_settings()
    return _warned(restore.verify_snapshot(S3Context.open(settings), master_key(settings),
                                           tenant_id, snapshot_id))


def _warned(result: dict[str, Any]) -> dict[str, Any]:
    """Log the result's warnings (a rollback, snapshots missing from the bucket)."""
    for warning in result.get("warnings", []):
        get_run_logger().warning(warning)
    return result


@flow(name="restore_backup", flow_run_name="restore-{tenant_id}")
def restore_backup(tenant_id: str, target: str | None = None, snapshot_id: str | None = None,
                   documents_bucket: str | None = None) -> dict[str, Any]:
    """Restore a snapshot into an empty database (and documents into a bucket).

    ``target`` names the database without carrying a credential: a URL without password,
    ``env:VARIABLE`` or ``secret:BLOCK`` (a Prefect Secret block); default:
    ``TENANT_EXPORT_RESTORE_TARGET_URL``.
    """
    validate_tenant_id(tenant_id)
    settings = current_settings()
    url = resolve_target(target, settings)
    return _warned(restore.restore_snapshot(S3Context.open(settings), master_key(settings),
                                            tenant_id, url, snapshot_id, documents_bucket))
