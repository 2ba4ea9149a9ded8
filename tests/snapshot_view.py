"""Snapshots as tests look at them: each table's chunk list inline, whatever the format."""

from __future__ import annotations

from typing import Any

from storage.aead import Keys
from storage.datakeys import DataKeys
from storage.snapshots import SnapshotStore


def with_table_chunks(store: SnapshotStore, keys: Keys, tenant_id: str,
                      manifest: dict[str, Any]) -> dict[str, Any]:
    """The manifest with each table's chunk entries under ``chunks``, as formats 4 to 6 wrote
    them inline (read from the table index since format 7, checked on the way)."""
    tables = [{**t, "chunks": []} for t in manifest["tables"]]
    by_name = {t["name"]: t for t in tables}
    for table, chunk in store.table_chunks(keys, tenant_id, manifest):
        by_name[table["name"]]["chunks"].append(chunk)
    return {**manifest, "tables": tables}


def as_format(store: SnapshotStore, keys: DataKeys, tenant_id: str, snapshot_id: str,
              version: int) -> dict[str, Any]:
    """Rewrite a format-7 snapshot's manifest as format ``version`` (4 to 6) wrote it: the
    table chunks listed inline, no table index (its chunks are left where they are, unnamed).
    The document index must already be of that format (a test writes it so)."""
    written = store.read_manifest(keys, tenant_id, snapshot_id)
    assert written["version"] == 7 and 4 <= version <= 6, (written["version"], version)
    older = with_table_chunks(store, keys, tenant_id, written)
    del older["table_index"]
    for table in older["tables"]:
        del table["chunk_count"]
    older["version"] = version
    store.write_manifest(keys, tenant_id, snapshot_id, older)
    return older
