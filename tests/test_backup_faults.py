"""Backups under attack and under crashes (issue 3, acceptance points "tampering" and "killing").

Tampering: objects of a committed snapshot are altered directly in the backup bucket (a flipped
byte, truncation at and inside a segment, two segments swapped, another tenant's object copied
over ours, the manifest damaged, the key record deleted, edited or replaced by another
tenant's). ``verify`` and ``restore`` must
both fail with ``VerificationFailed`` naming the object, and restore must write nothing: no
table in the target database, no object in the target documents bucket.

Crashes: the backup runs in a child process that calls ``os._exit(137)`` at a named point of the
write order (``flows.backup.checkpoint``), so where it dies is chosen by the test, not by timing.
Afterwards no snapshot of the killed run looks complete, a new backup completes and verifies and
restores, and ``prune`` clears what the killed run left behind.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import textwrap
import uuid
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from flows import backup, prune, restore
from flows.context import RunContext
from flows.locks import tenant_lock
from kernel.errors import BadInput, VerificationFailed
from kernel.settings import Settings
from storage import backup_store as store
from storage import objects
from storage.aead import HEADER_BYTES, SEGMENT_SIZE, TAG_BYTES
from storage.keys import KeyWrapper, parse_master_key
from storage.retention import RetentionPolicy
from storage.snapshots import BLOB_OBJECT
from tests import awkward
from tests.conftest import Platform
from tests.snapshot_view import with_table_chunks
from tests.test_backup_restore import compare_restored

ROOT = Path(__file__).resolve().parent.parent
SEALED_SEGMENT = SEGMENT_SIZE + TAG_BYTES  # a full segment on disk: 1 MiB + 16-byte tag
BIG_DOCUMENT = "t1/report"  # 3 MiB + 17 bytes: a blob of four segments
SMALL_DOCUMENT = "t1/passwd"
KILLED = 137


def settings() -> Settings:
    return Settings()


def wrapper() -> KeyWrapper:
    return parse_master_key(settings().master_key_value() or "")


@pytest.fixture
def ctx(sqlite_platform: Platform) -> Iterator[RunContext]:
    context = RunContext.open(settings())
    try:
        yield context
    finally:
        context.close()


# -- helpers on the backup bucket ------------------------------------------------------------


def get(platform: Platform, key: str) -> bytes:
    return bytes(platform.s3.get_object(Bucket=platform.backup_bucket, Key=key)["Body"].read())


def put(platform: Platform, key: str, data: bytes) -> None:
    platform.s3.put_object(Bucket=platform.backup_bucket, Key=key, Body=data)


def copy_over(platform: Platform, source: str, target: str) -> None:
    put(platform, target, get(platform, source))


def keys_under(platform: Platform, bucket: str, prefix: str = "") -> list[str]:
    return objects.list_keys(platform.s3, bucket, prefix)


def open_uploads(platform: Platform, bucket: str, prefix: str) -> list[str]:
    """Keys of multipart uploads started under ``prefix`` and never completed or aborted."""
    response = platform.s3.list_multipart_uploads(Bucket=bucket, Prefix=prefix)
    return [u["Key"] for u in response.get("Uploads", [])]


def manifest_of(ctx: RunContext, tenant_id: str, snapshot_id: str) -> dict[str, Any]:
    """The manifest with its document list read in (from the index since format 3)."""
    dek = ctx.store.data_key(wrapper(), tenant_id, create=False)
    manifest = ctx.store.read_manifest(dek, tenant_id, snapshot_id)
    return {**with_table_chunks(ctx.store, dek, tenant_id, manifest),
            "index": manifest["documents"],
            "documents": list(ctx.store.documents(dek, tenant_id, manifest))}


def blob_of(manifest: dict[str, Any], storage_key: str) -> str:
    (sha,) = [d["blob"] for d in manifest["documents"] if d["storage_key"] == storage_key]
    assert isinstance(sha, str)
    return sha


def table_key(tenant_id: str, manifest: dict[str, Any] | None, table: str) -> str:
    """The object of the table's first chunk (format 4: a blob named by its content)."""
    assert manifest is not None
    (described,) = [t for t in manifest["tables"] if t["name"] == table]
    return store.blob_key(tenant_id, described["chunks"][0]["blob"])


def sqlite_tables(path: Path) -> list[str]:
    with sqlite3.connect(path) as db:
        return [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]


# -- tampering -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Backed:
    """What the tamper functions work on: committed snapshots of t-1 (and t-2)."""

    platform: Platform
    t1: str
    t1_manifest: dict[str, Any]
    t2: str | None
    t2_manifest: dict[str, Any] | None


def flip_table_byte(b: Backed) -> str:
    key = table_key("t-1", b.t1_manifest, "members")
    data = bytearray(get(b.platform, key))
    data[len(data) // 2] ^= 0x01
    put(b.platform, key, bytes(data))
    return key


def truncate_table_last_byte(b: Backed) -> str:
    key = table_key("t-1", b.t1_manifest, "members")
    put(b.platform, key, get(b.platform, key)[:-1])
    return key


def big_blob_key(b: Backed) -> tuple[str, bytes]:
    key = store.blob_key("t-1", blob_of(b.t1_manifest, BIG_DOCUMENT))
    data = get(b.platform, key)
    assert len(data) == HEADER_BYTES + 3 * SEALED_SEGMENT + 17 + TAG_BYTES  # 4 segments
    return key, data


def truncate_blob_at_segment_boundary(b: Backed) -> str:
    key, data = big_blob_key(b)
    put(b.platform, key, data[: HEADER_BYTES + 2 * SEALED_SEGMENT])  # segments 0 and 1 only
    return key


def truncate_blob_mid_segment(b: Backed) -> str:
    key, data = big_blob_key(b)
    put(b.platform, key, data[: HEADER_BYTES + SEALED_SEGMENT + 1000])
    return key


def drop_last_blob_segment(b: Backed) -> str:
    key, data = big_blob_key(b)
    put(b.platform, key, data[: HEADER_BYTES + 3 * SEALED_SEGMENT])  # the final flag is gone
    return key


def swap_blob_segments(b: Backed) -> str:
    key, data = big_blob_key(b)
    first = data[HEADER_BYTES : HEADER_BYTES + SEALED_SEGMENT]
    second = data[HEADER_BYTES + SEALED_SEGMENT : HEADER_BYTES + 2 * SEALED_SEGMENT]
    rest = data[HEADER_BYTES + 2 * SEALED_SEGMENT :]
    swapped = data[:HEADER_BYTES] + second + first + rest
    assert len(swapped) == len(data) and swapped != data
    put(b.platform, key, swapped)
    return key


def t2_table_over_t1(b: Backed) -> str:
    assert b.t2 is not None
    key = table_key("t-1", b.t1_manifest, "members")
    copy_over(b.platform, table_key("t-2", b.t2_manifest, "members"), key)
    return key


def t2_blob_over_t1(b: Backed) -> str:
    assert b.t2_manifest is not None
    key = store.blob_key("t-1", blob_of(b.t1_manifest, SMALL_DOCUMENT))
    copy_over(b.platform, store.blob_key("t-2", blob_of(b.t2_manifest, "t2/secret")), key)
    return key


def own_blob_over_another(b: Backed) -> str:
    """Blobs share one associated data per tenant: only the manifest's hash catches this."""
    key = store.blob_key("t-1", blob_of(b.t1_manifest, SMALL_DOCUMENT))
    copy_over(b.platform, store.blob_key("t-1", blob_of(b.t1_manifest, "t1/dup-a")), key)
    return key


def own_table_over_another(b: Backed) -> str:
    key = table_key("t-1", b.t1_manifest, "members")
    copy_over(b.platform, table_key("t-1", b.t1_manifest, "tenants"), key)
    return key


def flip_manifest_byte(b: Backed) -> str:
    key = store.snapshot_prefix("t-1", b.t1) + store.MANIFEST
    data = bytearray(get(b.platform, key))
    data[HEADER_BYTES + 5] ^= 0x80
    put(b.platform, key, bytes(data))
    return key


def index_key(tenant_id: str, manifest: dict[str, Any] | None) -> str:
    """The object of the index's first chunk (format 4: a blob named by its content)."""
    assert manifest is not None
    return store.blob_key(tenant_id, manifest["index"]["chunks"][0]["blob"])


def flip_index_byte(b: Backed) -> str:
    key = index_key("t-1", b.t1_manifest)
    data = bytearray(get(b.platform, key))
    data[-20] ^= 0x01
    put(b.platform, key, bytes(data))
    return key


def t2_index_over_t1(b: Backed) -> str:
    assert b.t2 is not None
    key = index_key("t-1", b.t1_manifest)
    copy_over(b.platform, index_key("t-2", b.t2_manifest), key)
    return key


def forged_index(b: Backed) -> str:
    """A valid index chunk of this tenant (sealed with the tenant's key, at the chunk's name)
    without one document, as a rollback to another version of it would be: it decrypts, and
    its name and the manifest's count and hash catch it."""
    key, name = index_key("t-1", b.t1_manifest), BLOB_OBJECT
    ctx = RunContext.open(settings())
    try:
        dek = ctx.store.data_key(wrapper(), "t-1", create=False)
        packed = b"".join(ctx.store.decrypt_object(dek, "t-1", key, name))
        lines = zlib.decompress(packed).splitlines(True)  # format 5: chunks are compressed
        kept = b"".join(line for line in lines if b"t1/passwd" not in line)
        assert len(kept) < len(b"".join(lines))
        ctx.store.seal(dek, "t-1", key, name, lambda sink: sink.write(zlib.compress(kept, 6)))
    finally:
        ctx.close()
    return key


def delete_data_key(b: Backed) -> str:
    key = store.key_record_key("t-1")
    b.platform.s3.delete_object(Bucket=b.platform.backup_bucket, Key=key)
    return key


def edit_key_record(b: Backed) -> str:
    """A field the wraps do not cover (a time) edited: the record's MAC catches it."""
    key = store.key_record_key("t-1")
    record = json.loads(get(b.platform, key))
    record["data_keys"][0]["created_at"] = "2020-01-01T00:00:00Z"
    put(b.platform, key, json.dumps(record).encode())
    return key


def t2_key_record_over_t1(b: Backed) -> str:
    key = store.key_record_key("t-1")
    copy_over(b.platform, store.key_record_key("t-2"), key)
    return key


Tamper = Callable[[Backed], str]
NEEDS_T2 = {t2_table_over_t1, t2_blob_over_t1, t2_key_record_over_t1, t2_index_over_t1}

TAMPERS = [
    pytest.param(flip_table_byte, id="flip-table-byte"),
    pytest.param(truncate_table_last_byte, id="truncate-table-last-byte"),
    pytest.param(truncate_blob_at_segment_boundary, id="truncate-blob-at-segment-boundary"),
    pytest.param(truncate_blob_mid_segment, id="truncate-blob-mid-segment"),
    pytest.param(drop_last_blob_segment, id="drop-last-blob-segment"),
    pytest.param(swap_blob_segments, id="swap-blob-segments"),
    pytest.param(t2_table_over_t1, id="t2-table-over-t1"),
    pytest.param(t2_blob_over_t1, id="t2-blob-over-t1"),
    pytest.param(own_blob_over_another, id="own-blob-over-another"),
    pytest.param(own_table_over_another, id="own-table-over-another"),
    pytest.param(flip_manifest_byte, id="flip-manifest-byte"),
    pytest.param(flip_index_byte, id="flip-index-byte"),
    pytest.param(t2_index_over_t1, id="t2-index-over-t1"),
    pytest.param(forged_index, id="forged-index-one-document-less"),
    pytest.param(delete_data_key, id="delete-data-key"),
    pytest.param(edit_key_record, id="edit-key-record"),
    pytest.param(t2_key_record_over_t1, id="t2-key-record-over-t1"),
]


@pytest.mark.usefixtures("unpacked")  # one object per blob, as format 4
@pytest.mark.parametrize("tamper", TAMPERS)
def test_tampered_snapshot_fails_verify_and_restore_writes_nothing(
        sqlite_platform: Platform, ctx: RunContext, tmp_path: Path, tamper: Tamper) -> None:
    platform = sqlite_platform
    t1 = backup.backup_tenant(ctx, wrapper(), "t-1").snapshot_id
    t2 = backup.backup_tenant(ctx, wrapper(), "t-2").snapshot_id if tamper in NEEDS_T2 else None
    restore.verify_snapshot(ctx, wrapper(), "t-1", t1)  # sound before the tampering
    backed = Backed(platform, t1, manifest_of(ctx, "t-1", t1), t2,
                    manifest_of(ctx, "t-2", t2) if t2 else None)

    key = tamper(backed)

    with pytest.raises(VerificationFailed) as verified:
        restore.verify_snapshot(ctx, wrapper(), "t-1", t1)
    assert key in str(verified.value)

    target = tmp_path / "restored.sqlite"
    docs_target = f"restored-{uuid.uuid4().hex[:8]}"
    platform.s3.create_bucket(Bucket=docs_target)
    with pytest.raises(VerificationFailed) as restored:
        restore.restore_snapshot(ctx, wrapper(), "t-1", f"sqlite:///{target}", snapshot_id=t1,
                                 documents_bucket=docs_target)
    assert key in str(restored.value)
    assert not target.exists() or sqlite_tables(target) == []
    assert keys_under(platform, docs_target) == []
    assert open_uploads(platform, docs_target, "") == []


# -- crashes ---------------------------------------------------------------------------------

CHILD = textwrap.dedent("""
    import os
    import sys

    from flows import backup, backup_documents
    from flows.context import RunContext
    from storage import backup_store, objects
    from storage.keys import parse_master_key
    from kernel.settings import Settings

    POINT = sys.argv[1]


    def die() -> None:
        sys.stdout.flush()
        os._exit(137)


    def checkpoint(name: str) -> None:
        if name == POINT:
            die()


    backup.checkpoint = checkpoint

    if POINT in ("blob-staged", "mid-blob"):  # the 3 MiB document takes the multipart path
        backup_documents.SMALL_BLOB_BYTES = 1024 * 1024
        objects.SINGLE_PUT_BYTES = 1024 * 1024

    if POINT == "blob-staged":  # a blob is complete in staging/, not yet copied to blobs/
        def copy(*args: object, **kwargs: object) -> None:
            die()

        backup_store.copy = copy

    if POINT == "mid-blob":  # 2 MiB of a blob streamed into its staging upload
        real_open = backup_documents.open_document

        def open_document(*args: object, **kwargs: object) -> object:
            opened = real_open(*args, **kwargs)
            if opened is None:
                return None
            found, chunks = opened

            def counted() -> object:
                sent = 0
                for chunk in chunks:
                    if sent >= 2 * 1024 * 1024:
                        die()
                    sent += len(chunk)
                    yield chunk

            return found, counted()

        backup_documents.open_document = open_document

    settings = Settings()
    ctx = RunContext.open(settings)
    summary = backup.backup_tenant(ctx, parse_master_key(settings.master_key_value() or ""), "t-1")
    print("not killed:", summary.snapshot_id)
    sys.exit(3)
""")

KILL_POINTS = [
    pytest.param("table:members", id="table-members"),
    pytest.param("document", id="document"),
    pytest.param("before-verify", id="before-verify"),
    pytest.param("before-manifest", id="before-manifest"),
    pytest.param("committed", id="committed"),
    pytest.param("blob-staged", id="blob-staged"),
    pytest.param("mid-blob", id="mid-blob"),
    pytest.param("blob-written", id="blob-written"),  # a small blob PUT, not yet read back
]


def run_killed_backup(point: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", CHILD, point], env=os.environ | {"PYTHONPATH": str(ROOT)},
        cwd=ROOT, capture_output=True, text=True, timeout=180, check=False)


def restore_and_compare(platform: Platform, ctx: RunContext, tmp_path: Path,
                        snapshot_id: str) -> None:
    target = tmp_path / f"restored-{snapshot_id}.sqlite"
    docs_target = f"restored-{uuid.uuid4().hex[:8]}"
    platform.s3.create_bucket(Bucket=docs_target)
    result = restore.restore_snapshot(ctx, wrapper(), "t-1", f"sqlite:///{target}",
                                      snapshot_id=snapshot_id, documents_bucket=docs_target)
    manifest = manifest_of(ctx, "t-1", snapshot_id)
    assert result["rows"] == {t["name"]: t["rows"] for t in manifest["tables"]}
    compare_restored(platform.source_url, f"sqlite:///{target}")
    t1_blobs = {d[3]: d[4] for d in awkward.DOCUMENTS if d[0] == "t-1" and d[4] is not None}
    for key, content in t1_blobs.items():
        body = platform.s3.get_object(Bucket=docs_target, Key=key)["Body"].read()
        assert body == content, key
    assert result["documents_restored"] == len(t1_blobs)


@pytest.mark.parametrize("point", KILL_POINTS)
def test_killed_backup_leaves_no_complete_snapshot_and_rerun_recovers(
        sqlite_platform: Platform, ctx: RunContext, tmp_path: Path, point: str) -> None:
    platform, bucket = sqlite_platform, sqlite_platform.backup_bucket
    snapshots_prefix = store.tenant_prefix("t-1") + "snapshots/"
    staging_prefix = store.staging_prefix("t-1")

    child = run_killed_backup(point)
    assert child.returncode == KILLED, (child.returncode, child.stdout, child.stderr[-3000:])

    folders = objects.list_prefixes(platform.s3, bucket, snapshots_prefix)
    killed = ""
    if point == "committed":
        assert len(folders) == 1, folders  # the killed run's folder, named by its snapshot id
        killed = folders[0].rstrip("/").rsplit("/", 1)[-1]
        assert ctx.store.list_snapshots("t-1") == [killed]
        restore.verify_snapshot(ctx, wrapper(), "t-1", killed)
    else:
        # format 4: a snapshot's folder holds only its manifest, written last; a killed run
        # leaves blobs (chunks, documents, packs) that no manifest names, unless it was killed
        # before its first pack of table chunks was full (format 5), or in a large document's
        # staged upload, checked below, which is not under blobs/ yet
        assert folders == [] and ctx.store.list_snapshots("t-1") == []
        debris = keys_under(platform, bucket, store.tenant_prefix("t-1") + "blobs/")
        assert debris or point in ("table:members", "blob-staged", "mid-blob")
        with pytest.raises(BadInput, match="no complete backup snapshot"):
            restore.verify_snapshot(ctx, wrapper(), "t-1", None)
    if point == "blob-staged":  # the leftovers prune has to clear really are there
        assert keys_under(platform, bucket, staging_prefix)
    if point == "mid-blob":
        assert open_uploads(platform, bucket, staging_prefix)

    summary = backup.backup_tenant(ctx, wrapper(), "t-1")  # the next run, in-process
    assert summary.snapshot_id != killed
    complete = ctx.store.list_snapshots("t-1")
    assert summary.snapshot_id in complete
    assert complete == sorted({summary.snapshot_id} | ({killed} if point == "committed" else set()))
    report = restore.verify_snapshot(ctx, wrapper(), "t-1", summary.snapshot_id)
    assert report["ok"] and report["tables"] == len(summary.tables)
    restore_and_compare(platform, ctx, tmp_path, summary.snapshot_id)

    with tenant_lock("t-1", wait_seconds=30) as held:  # open uploads go only under the lock
        pruned = prune.prune_tenant(ctx, wrapper(), "t-1", RetentionPolicy(), dry_run=False,
                                    now=datetime.now(UTC) + timedelta(days=2), held=held)
    assert pruned["incomplete_snapshots_deleted"] == []
    assert keys_under(platform, bucket, staging_prefix) == []
    assert open_uploads(platform, bucket, store.tenant_prefix("t-1")) == []
    survivors = ctx.store.list_snapshots("t-1")
    assert survivors == sorted(pruned["keep"]) and survivors
    if point != "committed":
        assert survivors == [summary.snapshot_id]
    for snapshot_id in survivors:
        restore.verify_snapshot(ctx, wrapper(), "t-1", snapshot_id)
