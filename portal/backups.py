"""The monitoring extract of Annex 1 for one tenant: its last backup and last restore test.

Read from what exists, nothing kept for the purpose: complete snapshots in the backup bucket
(``SnapshotStore.list_snapshots``: a snapshot counts once its manifest is written, and its id
carries its time), backup failures and restores from the tenant's audit trail
(``backup.failed``, ``restore.completed``, ``restore.failed``).
"""

from __future__ import annotations

from datetime import datetime

from kernel.errors import BadInput
from kernel.ids import validate_snapshot_id
from portal.models import BackupRun, BackupStatus, RestoreTest
from storage.audit import AuditEvent, AuditKind, AuditTrail
from storage.snapshots import SnapshotStore, snapshot_time

BASIS = ("last backup: the newest complete snapshot in the backup bucket, or a backup.failed "
         "audit event recorded after it; last restore test: the newest restore.completed or "
         "restore.failed audit event of the tenant")
RESTORE_KINDS = {AuditKind.RESTORE_COMPLETED.value: "completed",
                 AuditKind.RESTORE_FAILED.value: "failed"}


def backup_status(tenant_id: str, snapshots: SnapshotStore, audit: AuditTrail,
                  now: datetime) -> BackupStatus:
    """The tenant's last backup (completed or failed) and last restore test."""
    complete = snapshots.list_snapshots(tenant_id)
    events = audit.events(tenant_id)
    newest = None
    if complete:
        newest = BackupRun(state="completed", at=snapshot_time(complete[-1]),
                           snapshot_id=complete[-1])
    failures = [e for e in events if e.kind == AuditKind.BACKUP_FAILED.value]
    last = newest
    if failures:
        failed_at = datetime.fromisoformat(failures[-1].recorded_at)
        if newest is None or failed_at > newest.at:
            last = BackupRun(state="failed", at=failed_at, snapshot_id=None)
    restores = [e for e in events if e.kind in RESTORE_KINDS]
    restore = None
    if restores:
        event = restores[-1]
        restore = RestoreTest(state=RESTORE_KINDS[event.kind],
                              at=datetime.fromisoformat(event.recorded_at),
                              snapshot_id=_snapshot_of(event))
    return BackupStatus(tenant_id=tenant_id, checked_at=now, last_backup=last,
                        last_completed_snapshot=newest, snapshots_retained=len(complete),
                        last_restore_test=restore, basis=BASIS)


def _snapshot_of(event: AuditEvent) -> str | None:
    """The snapshot a restore event names, when it names a valid one (nothing else of its
    details reaches the client: a target database's address is the platform's business)."""
    value = event.details.get("snapshot_id")
    try:
        return validate_snapshot_id(value) if isinstance(value, str) else None
    except BadInput:
        return None
