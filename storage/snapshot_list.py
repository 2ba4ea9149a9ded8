"""Which backup snapshots of a tenant are complete: a listing of the backup bucket that needs
neither the keys, the control database nor Arrow, so ``tenant-export snapshots`` answers
without loading them (``storage.snapshots`` imports all three).

The one definition of the rule (``SnapshotStore.list_snapshots`` calls it): a snapshot is
complete once its manifest exists (it is written last).
"""

from __future__ import annotations

from typing import Any

from kernel.ids import validate_tenant_id
from storage import backup_store as layout
from storage import objects


def complete_snapshots(client: Any, bucket: str, tenant_id: str) -> list[str]:
    """Ids of the tenant's complete snapshots (those with a manifest), oldest first: one
    listing request per 1,000 objects under ``snapshots/`` (a version-4 folder holds only its
    manifest), whatever the number of snapshots."""
    prefix = layout.tenant_prefix(validate_tenant_id(tenant_id)) + "snapshots/"
    complete = set()
    for key in objects.list_keys(client, bucket, prefix, tenant_id):
        folder, _, name = key[len(prefix):].partition("/")
        if name == layout.MANIFEST:
            complete.add(folder)
    return sorted(complete)
