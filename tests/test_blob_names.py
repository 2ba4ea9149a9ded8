"""Blobs named by a keyed hash (issue 12): listing the backup bucket does not reveal plaintext
hashes, so no one can confirm that a tenant holds a known file, nor see that two tenants hold
the same one; a blob's name is checked against its content on every read; snapshots written by
format 1 (blobs named by their plain SHA-256) stay readable, their blobs move to keyed names
when a later snapshot reuses them, and prune then removes the old names.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from flows import backup, prune
from flows.context import RunContext
from flows.keyring import master_key
from kernel.errors import VerificationFailed
from kernel.settings import Settings
from storage import backup_store as store
from storage import objects
from storage.aead import SEGMENT_SIZE, object_associated_data
from storage.doc_index import INDEX
from storage.retention import RetentionPolicy
from storage.snapshots import BLOB_OBJECT, FORMAT_VERSION, object_name, schema_of
from tests import awkward
from tests.conftest import Platform
from tests.snapshot_view import with_table_chunks
from tests.test_format_vectors import encrypt_v1
from tests.test_key_rotation import restores

SHARED = b"the same contract, uploaded by two clients\n" * 50


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def all_keys(platform: Platform) -> list[str]:
    return objects.list_keys(platform.s3, platform.backup_bucket, "")


def manifest(ctx: RunContext, tenant: str, snapshot_id: str) -> dict[str, Any]:
    """The manifest with its document list read in (from the index since format 3)."""
    keys = ctx.store.data_key(master_key(Settings()), tenant, create=False)
    described = ctx.store.read_manifest(keys, tenant, snapshot_id)
    return {**with_table_chunks(ctx.store, keys, tenant, described),
            "documents": list(ctx.store.documents(keys, tenant, described))}


def share_a_document(platform: Platform) -> None:
    """t-1 and t-2 each upload the same file."""
    db = platform.source_url.removeprefix("sqlite:///")
    with sqlite3.connect(db) as conn:
        conn.execute("INSERT INTO documents VALUES (900, 't-1', 'contract.pdf', 't1/contract')")
        conn.execute("INSERT INTO documents VALUES (901, 't-2', 'contract.pdf', 't2/contract')")
    for key in ("t1/contract", "t2/contract"):
        platform.s3.put_object(Bucket=platform.documents_bucket, Key=key, Body=SHARED)


def test_the_listing_reveals_no_plaintext_hash_and_no_shared_file(
        sqlite_platform: Platform, ctx: RunContext) -> None:
    platform = sqlite_platform
    share_a_document(platform)
    wrapper = master_key(Settings())
    snapshots = {t: backup.backup_tenant(ctx, wrapper, t).snapshot_id for t in ("t-1", "t-2")}

    known = {sha(SHARED)} | {sha(c) for c in awkward.blobs().values()}
    listing = all_keys(platform)
    assert listing and not [k for k in listing for h in known if h in k]

    names, places = {}, {}
    for tenant, snapshot_id in snapshots.items():
        keys = ctx.store.data_key(wrapper, tenant, create=False)
        for doc in manifest(ctx, tenant, snapshot_id)["documents"]:
            if doc["storage_key"].endswith("/contract"):
                assert doc["sha256"] == sha(SHARED)
                assert doc["blob"] == keys.blob_name(tenant, sha(SHARED)) != sha(SHARED)
                names[tenant] = doc["blob"]
                places[tenant] = doc.get("pack") or doc["blob"]
    assert names["t-1"] != names["t-2"]  # the same file, unrelated names
    for tenant in ("t-1", "t-2"):  # each tenant's blob in a pack of its own tenant's folder
        assert f"backups/{tenant}/blobs/{places[tenant]}" in listing


@pytest.mark.usefixtures("unpacked")  # one object per blob, as format 4
def test_a_blob_copied_over_another_fails_its_name_check(
        sqlite_platform: Platform, ctx: RunContext) -> None:
    platform = sqlite_platform
    wrapper = master_key(Settings())
    snapshot_id = backup.backup_tenant(ctx, wrapper, "t-1").snapshot_id
    docs = {d["storage_key"]: d["blob"] for d in manifest(ctx, "t-1", snapshot_id)["documents"]
            if d.get("blob")}
    source, victim = (store.blob_key("t-1", docs[k]) for k in ("t1/dup-a", "t1/passwd"))
    platform.s3.put_object(Bucket=platform.backup_bucket, Key=victim, Body=platform.s3.get_object(
        Bucket=platform.backup_bucket, Key=source)["Body"].read())
    keys = ctx.store.data_key(wrapper, "t-1", create=False)
    with pytest.raises(VerificationFailed, match="does not match its name") as caught:
        for _ in ctx.store.decrypt_object(keys, "t-1", victim, BLOB_OBJECT):
            pass
    assert victim in str(caught.value)


@pytest.mark.parametrize("plant", ["random-bytes", "own-blob-of-other-content"])
def test_an_object_planted_at_a_keyed_name_is_overwritten_not_reused(
        sqlite_platform: Platform, ctx: RunContext, tmp_path: Path, plant: str) -> None:
    """Whoever can compute a name (a holder of the data key) still cannot make a backup reuse
    what they put there: only the previous manifest vouches for a blob."""
    platform = sqlite_platform
    wrapper = master_key(Settings())
    keys = ctx.store.data_key(wrapper, "t-1", create=True)
    target = store.blob_key("t-1", keys.blob_name("t-1", sha(awkward.blobs()["t1/passwd"])))
    if plant == "random-bytes":
        platform.s3.put_object(Bucket=platform.backup_bucket, Key=target, Body=os.urandom(99))
    else:
        ctx.store.seal(keys, "t-1", target, BLOB_OBJECT, lambda sink: sink.write(b"forged"))
    first = backup.backup_tenant(ctx, wrapper, "t-1")
    second = backup.backup_tenant(ctx, wrapper, "t-1")
    assert second.blobs_uploaded == 0
    for snapshot_id in (first.snapshot_id, second.snapshot_id):
        restores(platform, ctx, tmp_path, snapshot_id)


# -- format 1, as an older version wrote it ----------------------------------------------------


V1_DOCUMENT_FIELDS = ("document_id", "storage_key", "etag", "size", "status", "blob")


def version_1_record(tenant: str, dek: bytes) -> bytes:
    """A format-1 key record (docs/backup-format.md, section 3.4) of ``dek``."""
    kek = base64.b64decode(Settings().master_key_value() or "")
    nonce = os.urandom(12)
    wrapped = AESGCM(kek).encrypt(nonce, dek, b"tenant-export/v1/data-key\0" + tenant.encode())
    return json.dumps({"version": 1, "tenant_id": tenant, "key_id": master_key(Settings()).key_id,
                       "alg": "A256GCM", "nonce": base64.b64encode(nonce).decode(),
                       "wrapped": base64.b64encode(wrapped).decode(),
                       "created_at": "2026-11-26T11:07:23Z"}).encode()


def as_version_1(platform: Platform, ctx: RunContext, snapshot_id: str) -> dict[str, Any]:
    """Rewrite a snapshot of t-1 and its key record exactly as format 1 wrote them: objects with
    48-byte headers, blobs named by their plaintext SHA-256, a version-1 manifest without
    ``sha256``, a version-1 record. Returns the version-1 manifest."""
    keys = ctx.store.data_key(master_key(Settings()), "t-1", create=False)
    dek, bucket = keys.key(1), platform.backup_bucket
    described = manifest(ctx, "t-1", snapshot_id)
    prefix = store.snapshot_prefix("t-1", snapshot_id)

    def reseal(key: str, name: str, plaintext: bytes) -> bytes:
        sealed = encrypt_v1(plaintext, dek, object_associated_data("t-1", name), SEGMENT_SIZE)
        platform.s3.put_object(Bucket=bucket, Key=key, Body=sealed)
        return sealed

    for table in described["tables"]:  # format 4's chunks back into one object per table
        chunks = [store.blob_key("t-1", c["blob"]) for c in table.pop("chunks")]
        parts = [pq.read_table(pa.BufferReader(b"".join(
            ctx.store.decrypt_object(keys, "t-1", c, BLOB_OBJECT)))) for c in chunks]
        whole = pa.concat_tables(parts) if parts else schema_of(table).empty_table()
        buffer = io.BytesIO()
        pq.write_table(whole, buffer, compression="zstd")
        plaintext = buffer.getvalue()
        table["object"] = f"tables/{table['name']}.parquet"
        key, name = prefix + table["object"], object_name(snapshot_id, table["object"])
        sealed = reseal(key, name, plaintext)
        table.pop("uploaded_bytes", None)
        table.update(plaintext_bytes=len(plaintext), plaintext_sha256=sha(plaintext),
                     ciphertext_bytes=len(sealed), ciphertext_sha256=sha(sealed))
        for chunk in chunks:
            platform.s3.delete_object(Bucket=bucket, Key=chunk)
    blobs: dict[str, dict[str, Any]] = {}
    for doc in described["documents"]:
        if not doc.get("blob"):
            continue
        plain_sha = doc.pop("sha256")
        if plain_sha not in blobs:
            keyed = store.blob_key("t-1", doc["blob"])
            plaintext = b"".join(ctx.store.decrypt_object(keys, "t-1", keyed, BLOB_OBJECT))
            sealed = reseal(store.blob_key("t-1", plain_sha), BLOB_OBJECT, plaintext)
            platform.s3.delete_object(Bucket=bucket, Key=keyed)
            blobs[plain_sha] = {"plaintext_bytes": len(plaintext), "ciphertext_bytes": len(sealed),
                                "ciphertext_sha256": sha(sealed)}
        doc["blob"] = plain_sha
    described["documents"] = [{k: v for k, v in d.items() if k in V1_DOCUMENT_FIELDS}
                              for d in described["documents"]]
    described.update(version=1, blobs=blobs)
    written = ctx.store.read_manifest(keys, "t-1", snapshot_id)
    for chunk in [*written["documents"]["chunks"], *written["table_index"]["chunks"]]:
        platform.s3.delete_object(Bucket=bucket, Key=store.blob_key("t-1", chunk["blob"]))
    del described["table_index"]  # format 7's list of table chunks: format 1 had none
    for table in described["tables"]:
        del table["chunk_count"]
    platform.s3.delete_object(Bucket=bucket, Key=prefix + INDEX)  # format 1 had no index
    reseal(prefix + store.MANIFEST, object_name(snapshot_id, store.MANIFEST),
           json.dumps(described, sort_keys=True).encode())
    platform.s3.put_object(Bucket=bucket, Key=store.key_record_key("t-1"),
                           Body=version_1_record("t-1", dek))
    return described


@pytest.mark.usefixtures("unpacked")  # one object per blob, as format 4
def test_format_1_snapshots_stay_readable_then_their_names_move_and_prune_clears_them(
        sqlite_platform: Platform, ctx: RunContext, tmp_path: Path) -> None:
    platform = sqlite_platform
    wrapper = master_key(Settings())
    old_id = backup.backup_tenant(ctx, wrapper, "t-1").snapshot_id
    old = as_version_1(platform, ctx, old_id)
    plain_names = set(old["blobs"])
    assert plain_names and all(store.blob_key("t-1", n) in all_keys(platform)
                               for n in plain_names)
    restores(platform, ctx, tmp_path, old_id)  # format 1 is read as it is

    new = backup.backup_tenant(ctx, wrapper, "t-1")  # unchanged documents: copied, not sent
    assert new.blobs_uploaded == 0 and new.blobs_renamed == len(plain_names)
    described = manifest(ctx, "t-1", new.snapshot_id)
    assert described["version"] == FORMAT_VERSION
    assert not plain_names & {d["blob"] for d in described["documents"]}
    restores(platform, ctx, tmp_path, new.snapshot_id)
    restores(platform, ctx, tmp_path, old_id)  # the old snapshot still reads its old names

    pruned = prune.prune_tenant(ctx, wrapper, "t-1", RetentionPolicy(daily=1, weekly=0,
                                                                     monthly=0),
                                dry_run=False, now=datetime.now(UTC) + timedelta(days=2))
    assert pruned["forget"] == [old_id]
    assert set(pruned["blobs_deleted"]) == plain_names
    listing = all_keys(platform)
    assert not [k for k in listing for h in plain_names if h in k]
    restores(platform, ctx, tmp_path, new.snapshot_id)
