"""Verify backup snapshots: every object read back and decrypted, like ``restic check
--read-data``.

Before reading, the bucket is compared with the snapshots the control database recorded: a
snapshot recorded as committed but gone from the bucket is reported, and falling back to an
older one than the newest recorded (a rollback) is a warning in the result. Objects are read
``fetch_concurrency`` at a time (:func:`flows.backup_pool.run_bounded`).
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from flows.backup_pool import run_bounded
from flows.context import S3Context
from kernel.errors import ControlDbError, VerificationFailed
from storage import backup_store as layout
from storage.aead import Keys
from storage.keys import KeyWrapper
from storage.packs import MemberSpool
from storage.registry import SnapshotRegistry
from storage.snapshots import BLOB_OBJECT, object_name


def resolve(ctx: S3Context, tenant_id: str, snapshot_id: str | None
            ) -> tuple[str, dict[str, Any]]:
    """The snapshot to read, and what the control database says about the bucket's state:
    ``{"expected_newest", "missing_snapshots", "warnings"}``."""
    complete = ctx.store.list_snapshots(tenant_id)
    state: dict[str, Any] = {"expected_newest": None, "missing_snapshots": [], "warnings": []}
    try:
        with SnapshotRegistry(ctx.settings.resolved_control_url()) as registry:
            expected = registry.expected(tenant_id)
    except ControlDbError as err:  # a restore must not depend on the control database
        state["warnings"].append(f"cannot check the bucket against the snapshot registry: {err}")
        return ctx.store.resolve_snapshot(tenant_id, snapshot_id, complete), state
    missing = [e for e in expected if e.snapshot_id not in complete]
    state["missing_snapshots"] = [e.snapshot_id for e in missing]
    if expected:
        state["expected_newest"] = expected[-1].snapshot_id
    gone = {e.snapshot_id: e for e in missing}
    if snapshot_id in gone or (snapshot_id is None and not complete and missing):
        lost = gone.get(snapshot_id or "") or missing[-1]
        raise VerificationFailed(
            f"snapshot {lost.snapshot_id} of tenant {tenant_id!r}, committed at "
            f"{lost.committed_at} according to the control database, is missing from bucket "
            f"{ctx.store.bucket!r}: it was deleted (or this is not the bucket it was written "
            "to)", tenant_id=tenant_id)
    chosen = ctx.store.resolve_snapshot(tenant_id, snapshot_id, complete)
    if missing:
        newest = expected[-1]
        rolled_back = (snapshot_id is None and newest.snapshot_id in gone
                       and chosen < newest.snapshot_id)
        if rolled_back:
            state["warnings"].append(
                f"rollback: the newest snapshot of tenant {tenant_id!r}, {newest.snapshot_id} "
                f"(committed at {newest.committed_at}), is missing from the bucket; using the "
                f"older {chosen}")
        others = [m for m in state["missing_snapshots"]
                  if not (rolled_back and m == newest.snapshot_id)]
        if others:
            state["warnings"].append(
                f"{len(others)} snapshot(s) of tenant {tenant_id!r} recorded as committed are "
                f"missing from the bucket: {', '.join(others)}")
    return chosen, state


def verify_snapshot(ctx: S3Context, wrapper: KeyWrapper, tenant_id: str,
                    snapshot_id: str | None = None) -> dict[str, Any]:
    """Decrypt every object of the snapshot and compare sizes and hashes with the manifest
    (``fetch_concurrency`` objects at a time: at 20 ms per request a thousand documents read
    one by one would take 20 s)."""
    store = ctx.store
    snapshot_id, state = resolve(ctx, tenant_id, snapshot_id)
    dek = store.data_key(wrapper, tenant_id, create=False)
    manifest = store.read_manifest(dek, tenant_id, snapshot_id)
    prefix = layout.snapshot_prefix(tenant_id, snapshot_id)
    checked, documents, seen = 0, 0, set()  # a blob shared by chunks or documents: once

    def checks() -> Iterator[Callable[[], None]]:
        nonlocal checked, documents
        with MemberSpool() as packed:  # format 5: each pack read once, whole, at the end
            for table in manifest["tables"]:
                if "object" in table:  # formats 1-3: one object per table
                    checked += 1
                    yield functools.partial(
                        _check_plain, ctx, dek, tenant_id, prefix + table["object"],
                        object_name(snapshot_id, table["object"]), table["plaintext_bytes"],
                        table["plaintext_sha256"])
            for _, chunk in store.table_chunks(dek, tenant_id, manifest):  # the index checked
                if chunk["blob"] in seen:
                    continue
                seen.add(chunk["blob"])
                checked += 1
                if chunk.get("pack"):
                    packed.add({**chunk, "sha256": chunk["plaintext_sha256"]})
                    continue
                yield functools.partial(
                    _check_plain, ctx, dek, tenant_id,
                    layout.blob_key(tenant_id, chunk["blob"]), BLOB_OBJECT,
                    chunk["plaintext_bytes"], chunk["plaintext_sha256"])
            for doc in store.documents(dek, tenant_id, manifest):
                documents += 1
                blob = doc.get("blob")
                if blob and blob not in seen:
                    seen.add(blob)
                    checked += 1
                    if doc.get("pack"):
                        packed.add(doc)
                        continue
                    yield functools.partial(
                        _check_plain, ctx, dek, tenant_id, layout.blob_key(tenant_id, blob),
                        BLOB_OBJECT, doc.get("plaintext_bytes"), doc.get("sha256") or blob)
            for pack, members in packed.packs():
                yield functools.partial(_check_pack, ctx, dek, tenant_id, pack, members)

    workers = ctx.settings.fetch_concurrency  # objects are read back concurrently, bounded
    with ThreadPoolExecutor(workers, thread_name_prefix="verify") as pool:
        run_bounded(pool, checks(), _ignore, 2 * workers)
    # the document index is an object too (format 3), and so is the table index (format 7)
    index = (manifest["version"] >= 3) + (manifest["version"] >= 7)
    return {"tenant_id": tenant_id, "snapshot_id": snapshot_id,
            "objects": checked + index + 1, "tables": len(manifest["tables"]),
            "documents": documents, "ok": True, **state}


def _check_plain(ctx: S3Context, dek: Keys, tenant_id: str, key: str, name: str,
                 size: int | None, sha256: str) -> None:
    digest, total = hashlib.sha256(), 0
    for piece in ctx.store.decrypt_object(dek, tenant_id, key, name):
        digest.update(piece)
        total += len(piece)
    if digest.hexdigest() != sha256 or (size is not None and total != size):
        raise VerificationFailed(
            f"{key}: decrypts to {total} bytes sha256 {digest.hexdigest()}, the manifest says "
            f"{size} bytes sha256 {sha256}", tenant_id=tenant_id)


def _check_pack(ctx: S3Context, dek: Keys, tenant_id: str, pack: str,
                members: list[dict[str, Any]]) -> None:
    """Every member of one pack the snapshot uses, from one GET of the pack."""
    for doc, plain in ctx.store.pack_plaintexts(dek, tenant_id, pack, members):
        sha = hashlib.sha256(plain).hexdigest()
        if sha != (doc.get("sha256") or doc["blob"]) or (
                doc.get("plaintext_bytes") is not None and len(plain) != doc["plaintext_bytes"]):
            raise VerificationFailed(
                f"pack {pack}: blob {doc['blob']} decrypts to {len(plain)} bytes sha256 {sha}, "
                f"the index says {doc.get('plaintext_bytes')} bytes sha256 {doc.get('sha256')}",
                tenant_id=tenant_id)


def _ignore(_: None) -> None:
    """A check raises on failure; a passed one returns nothing to collect."""
