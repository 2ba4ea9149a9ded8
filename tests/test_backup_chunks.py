"""Tables stored as content-addressed chunks (format 4): an unchanged table uploads nothing, a
changed row re-uploads only its chunk, and the rows come back value by value."""

from __future__ import annotations

import hashlib
import io
import sqlite3
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from flows import backup, prune, restore
from flows.backup_tables import (
    CHUNK_ROWS,
    MAX_CHUNK_BYTES,
    MAX_CHUNK_ROWS,
    chunk_rows,
    index_pieces,
    parquet_bytes,
)
from flows.context import RunContext
from kernel.errors import VerificationFailed
from kernel.settings import Settings
from storage import backup_store as store
from storage.doc_index import IndexWriter, encode
from storage.keys import KeyWrapper, parse_master_key
from storage.retention import RetentionPolicy
from tests.conftest import Platform
from tests.snapshot_view import with_table_chunks
from tests.test_backup_scale import counting, run_backup

MEMBERS = 20_000


def wrapper() -> KeyWrapper:
    return parse_master_key(Settings().master_key_value() or "")


# -- the chunker, on Arrow alone ---------------------------------------------------------------


def rows(n: int, *, start: int = 0, text: str = "row") -> pa.Table:
    return pa.table({"id": pa.array(range(start, start + n), pa.int64()),
                     "name": pa.array([f"{text}-{i}" for i in range(start, start + n)])})


def digests(table: pa.Table, batch_rows: int, key: tuple[str, ...] = ("id",)) -> list[str]:
    chunks = chunk_rows(table.to_batches(max_chunksize=batch_rows), table.schema, key)
    return [hashlib.sha256(parquet_bytes(c)).hexdigest() for c in chunks]


def test_chunks_hold_every_row_in_order_and_do_not_depend_on_the_batches() -> None:
    table = rows(50_000)
    chunks = list(chunk_rows(table.to_batches(max_chunksize=777), table.schema, ["id"]))
    assert pa.concat_tables(chunks).equals(table)
    assert 50_000 / CHUNK_ROWS / 3 <= len(chunks) <= 3 * 50_000 / CHUNK_ROWS  # CHUNK_ROWS each
    assert all(c.num_rows <= MAX_CHUNK_ROWS for c in chunks)
    assert digests(table, 777) == digests(table, 5_000) == digests(table, 50_000)


@pytest.mark.parametrize("key", [("id",), ("name",), ("id", "name"), ()],
                         ids=["integer", "text", "composite", "no-key"])
def test_a_changed_row_changes_only_its_chunk(key: tuple[str, ...]) -> None:
    before = rows(30_000)
    names = before.column("name").to_pylist()
    names[12_345] = "changed"
    after = before.set_column(1, "name", pa.array(names))
    old, new = digests(before, 4_096, key), digests(after, 4_096, key)
    changed = set(new) - set(old)
    # the row's own chunk; without a key the row's hash may also move one boundary
    assert 1 <= len(changed) <= (1 if key in (("id",),) else 2)
    assert len(new) - len(changed) >= len(old) - 2


def test_appended_rows_leave_the_earlier_chunks_alone() -> None:
    before, after = rows(20_000), rows(20_300)
    old, new = digests(before, 4_096), digests(after, 4_096)
    assert new[:len(old) - 1] == old[:-1]  # only the last chunk (and new ones) differ


def test_wide_rows_are_cut_by_size() -> None:
    wide = pa.table({"id": pa.array(range(400), pa.int64()),
                     "blob": pa.array([b"x" * 100_000] * 400, pa.binary())})
    chunks = list(chunk_rows(wide.to_batches(max_chunksize=64), wide.schema, ["id"]))
    assert pa.concat_tables(chunks).equals(wide)
    assert all(c.nbytes <= MAX_CHUNK_BYTES + 200_000 for c in chunks)
    assert len(chunks) >= 40_000_000 // MAX_CHUNK_BYTES


def test_an_empty_table_has_no_chunk() -> None:
    empty = rows(0)
    assert list(chunk_rows(empty.to_batches(), empty.schema, ["id"])) == []
    assert CHUNK_ROWS & (CHUNK_ROWS - 1) == 0


# -- backups of the platform -----------------------------------------------------------------


def add_members(platform: Platform, count: int, *, start: int = 0) -> None:
    db = platform.source_url.removeprefix("sqlite:///")
    with sqlite3.connect(db) as conn:
        conn.executemany(
            "INSERT INTO members (id, tenant_id, name, note, score, big, avatar) "
            "VALUES (?, 't-1', ?, ?, ?, ?, ?)",
            [(100_000 + i, f"member {i}", "n" * (i % 50), i / 7, i * 1_000_003,
              bytes([i % 256]) * (i % 5)) for i in range(start, start + count)])


def members_of(manifest: dict[str, Any]) -> dict[str, Any]:
    (members,) = [t for t in manifest["tables"] if t["name"] == "members"]
    return members


def read_manifest(ctx: RunContext, snapshot_id: str) -> dict[str, Any]:
    keys = ctx.store.data_key(wrapper(), "t-1", create=False)
    return with_table_chunks(ctx.store, keys, "t-1",
                             ctx.store.read_manifest(keys, "t-1", snapshot_id))


def assert_members_restored(ctx: RunContext, snapshot_id: str, rows: int, db: str,
                            restored: Path) -> None:
    """Restore the snapshot into a new database: the tenant's members come back value by
    value, as the platform holds them."""
    result = restore.restore_snapshot(ctx, wrapper(), "t-1", f"sqlite:///{restored}",
                                      snapshot_id=snapshot_id)
    assert result["rows"]["members"] == rows
    columns = "id, tenant_id, name, note, score, big, avatar"
    query = f"SELECT {columns} FROM members WHERE tenant_id = 't-1' ORDER BY id"
    with sqlite3.connect(db) as source, sqlite3.connect(restored) as target:
        assert target.execute(query).fetchall() == source.execute(query).fetchall()


def blob_puts(proxy: Any, platform: Platform) -> int:
    return sum(1 for s in proxy.requests(lambda r: r.bucket == platform.backup_bucket)
               if s.request.operation == "PutObject" and "/blobs/" in s.request.path)


def test_an_unchanged_table_uploads_nothing_and_a_changed_row_one_chunk(
        sqlite_platform: Platform, ctx: RunContext, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch, moto_endpoint: str) -> None:
    platform = sqlite_platform
    add_members(platform, MEMBERS)
    first = backup.backup_tenant(ctx, wrapper(), "t-1")
    described = members_of(read_manifest(ctx, first.snapshot_id))
    assert described["rows"] == first.tables["members"] >= MEMBERS
    assert len(described["chunks"]) >= 5 and described["uploaded_bytes"] > 0
    # format 5: the chunks travel in packs (a few PUTs for the whole table)
    assert all(c.get("pack", "").startswith("pack-") for c in described["chunks"])
    assert len({c["pack"] for c in described["chunks"]}) < len(described["chunks"]) / 4

    with counting(moto_endpoint, monkeypatch) as proxy:
        unchanged = run_backup()  # a context of its own: its client goes through the proxy
        puts, by_operation = blob_puts(proxy, platform), proxy.counts()
    again = read_manifest(ctx, unchanged.snapshot_id)
    assert members_of(again)["chunks"] == described["chunks"]
    assert all(t["uploaded_bytes"] == 0 for t in again["tables"]), again["tables"]
    assert puts == 0 and unchanged.blobs_uploaded == 0
    # the indexes' chunks are unchanged too: only the manifest is written, with one PUT;
    # reads: the key record, the previous manifest, its document index's pack and its table
    # index's pack (format 7: a series of its own), the read-back
    before = read_manifest(ctx, first.snapshot_id)
    for index in ("documents", "table_index"):
        assert again[index]["chunks"] == before[index]["chunks"]
    # with the snapshot listing, and a HEAD per document key (this catalog has no per-tenant
    # prefix to list: tests/test_backup_scale.py counts the listing case)
    assert by_operation == {"PutObject": 1, "GetObject": 5, "ListObjectsV2": 1,
                            "HeadObject": 9}, by_operation

    db = platform.source_url.removeprefix("sqlite:///")
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE members SET note = 'changed tonight' WHERE id = ?",
                     (100_000 + MEMBERS // 2,))
    with counting(moto_endpoint, monkeypatch) as proxy:
        changed = run_backup()
        puts = blob_puts(proxy, platform)
    now = members_of(read_manifest(ctx, changed.snapshot_id))
    new = [c for c in now["chunks"] if c not in described["chunks"]]
    # one pack for the changed chunk, one for the table index's changed chunk (format 7)
    assert puts == len(new) + 1 == 2, new
    assert len(new) == 1 and changed.table_packs_uploaded == 2
    assert now["uploaded_bytes"] == new[0]["ciphertext_bytes"]
    assert now["uploaded_bytes"] < described["uploaded_bytes"] / 4

    assert_members_restored(ctx, changed.snapshot_id, now["rows"], db,
                            tmp_path / f"restored-{uuid.uuid4().hex[:6]}.sqlite")

    # prune keeps every chunk a surviving snapshot names, and deletes the replaced one
    later = datetime.now(UTC) + timedelta(days=2)  # blobs younger than a day are never pruned
    pruned = prune.prune_tenant(ctx, wrapper(), "t-1", RetentionPolicy(daily=1, weekly=0,
                                                                          monthly=0),
                                dry_run=False, now=later)
    assert pruned["keep"] == [changed.snapshot_id], pruned
    replaced = {c["blob"] for c in described["chunks"]} - {c["blob"] for c in now["chunks"]}
    assert replaced
    # format 5: the replaced chunk sits in the first night's pack of chunks, which the kept
    # snapshot still uses (a pack goes with the last snapshot naming it)
    assert {c["pack"] for c in described["chunks"] if c["blob"] in replaced} <= {
        c["pack"] for c in now["chunks"]}
    assert not {c["pack"] for c in now["chunks"]} & set(pruned["blobs_deleted"])
    assert restore.verify_snapshot(ctx, wrapper(), "t-1", changed.snapshot_id)["ok"]


@pytest.mark.usefixtures("unpacked")  # one object per chunk: the swap copies objects
def test_a_chunk_swapped_after_verification_is_refused_before_its_rows_load(
        sqlite_platform: Platform, ctx: RunContext, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    platform = sqlite_platform
    add_members(platform, 5_000)
    snapshot_id = backup.backup_tenant(ctx, wrapper(), "t-1").snapshot_id
    chunks = members_of(read_manifest(ctx, snapshot_id))["chunks"]
    assert len(chunks) >= 2
    real_verify = restore.verify_snapshot

    def verify_then_swap(*args: Any, **kwargs: Any) -> dict[str, Any]:
        report = real_verify(*args, **kwargs)
        source = store.blob_key("t-1", chunks[0]["blob"])
        platform.s3.copy_object(Bucket=platform.backup_bucket, CopySource={
            "Bucket": platform.backup_bucket, "Key": source},
            Key=store.blob_key("t-1", chunks[1]["blob"]))
        return report

    monkeypatch.setattr(restore, "verify_snapshot", verify_then_swap)
    target = tmp_path / "swapped.sqlite"
    with pytest.raises(VerificationFailed, match=chunks[1]["blob"]):
        restore.restore_snapshot(ctx, wrapper(), "t-1", f"sqlite:///{target}",
                                 snapshot_id=snapshot_id)
    assert not target.exists()


@pytest.mark.usefixtures("unpacked")  # many objects to read: one per blob, as format 4
def test_verification_reads_objects_concurrently_within_the_bound(
        sqlite_platform: Platform, ctx: RunContext, monkeypatch: pytest.MonkeyPatch) -> None:
    from flows import verify

    snapshot_id = backup.backup_tenant(ctx, wrapper(), "t-1").snapshot_id
    active, peak, lock = 0, 0, threading.Lock()
    real = verify._check_plain

    def slow_check(*args: Any) -> None:
        nonlocal active, peak
        with lock:
            active += 1
            peak = max(peak, active)
        try:
            time.sleep(0.2)  # a distant S3: the next reads must not wait for this one
            real(*args)
        finally:
            with lock:
                active -= 1

    monkeypatch.setattr(verify, "_check_plain", slow_check)
    monkeypatch.setenv("TENANT_EXPORT_FETCH_CONCURRENCY", "4")
    bounded = RunContext.open(Settings())
    try:
        report = verify.verify_snapshot(bounded, wrapper(), "t-1", snapshot_id)
    finally:
        bounded.close()
    assert report["ok"] and report["objects"] >= 8
    assert peak == 4  # concurrent, and never more than the setting


def test_a_changed_document_changes_one_chunk_of_the_index() -> None:
    def pieces(entries: list[dict[str, Any]]) -> list[str]:
        sink = io.BytesIO()
        writer = IndexWriter(sink)
        out = [hashlib.sha256(data).hexdigest()
               for data, _ in index_pieces(entries, writer, sink)]
        assert writer.count == len(entries)
        return out

    entries = [{"document_id": i, "storage_key": f"t1/{i}", "status": "ok", "etag": f"e{i}",
                "size": i, "blob": f"{i:064x}", "sha256": f"{i:064x}"} for i in range(5_000)]
    before = pieces(entries)
    entries[2_500] = {**entries[2_500], "etag": "changed", "size": 1}
    after = pieces(entries)
    assert len(before) == len(after) >= 5
    assert sum(a != b for a, b in zip(before, after, strict=True)) == 1
    sink = io.BytesIO()
    joined = b"".join(d for d, _ in index_pieces(entries, IndexWriter(sink), sink))
    assert joined == b"".join(encode(e) for e in entries)  # the chunks are the index, in order


def test_index_chunks_are_compressed_and_a_truncated_stream_is_refused(
        sqlite_platform: Platform, ctx: RunContext) -> None:
    import zlib

    from storage.snapshots import inflate

    snapshot_id = backup.backup_tenant(ctx, wrapper(), "t-1").snapshot_id
    described = read_manifest(ctx, snapshot_id)["documents"]
    assert described["chunks"] and all(c["compression"] == "zlib" for c in described["chunks"])
    # the index's lines (plaintext_bytes) take less room once compressed, chunk by chunk
    assert sum(c["plaintext_bytes"] for c in described["chunks"]) < described["plaintext_bytes"]
    keys = ctx.store.data_key(wrapper(), "t-1", create=False)
    lines = list(ctx.store.documents(keys, "t-1", read_manifest(ctx, snapshot_id)))
    assert len(lines) == described["count"] > 0

    data = b"".join(bytes([i % 7]) * 1000 for i in range(5_000))  # 5 MB of runs: ratio ~100
    packed = zlib.compress(data, 6)
    pieces = list(inflate([packed[:10], packed[10:]], "chunk", "t-1"))
    assert b"".join(pieces) == data and max(map(len, pieces)) <= store.READ_CHUNK
    with pytest.raises(VerificationFailed, match="truncated"):
        list(inflate([packed[:-5]], "chunk", "t-1"))
    with pytest.raises(VerificationFailed, match="not a zlib stream"):
        list(inflate([b"plain text"], "chunk", "t-1"))


def test_a_pack_of_chunks_mostly_unused_is_rewritten_and_the_rows_restore(
        sqlite_platform: Platform, ctx: RunContext, tmp_path: Path) -> None:
    platform = sqlite_platform
    add_members(platform, MEMBERS)
    first = backup.backup_tenant(ctx, wrapper(), "t-1")
    old = {c["pack"] for c in members_of(read_manifest(ctx, first.snapshot_id))["chunks"]}
    assert first.table_packs_uploaded >= 1 and len(old) == 1
    db = platform.source_url.removeprefix("sqlite:///")
    with sqlite3.connect(db) as conn:  # most members leave
        conn.execute("DELETE FROM members WHERE id >= ?", (100_000 + MEMBERS // 4,))
    second = backup.backup_tenant(ctx, wrapper(), "t-1")
    assert second.table_packs_retired == 1
    now = members_of(read_manifest(ctx, second.snapshot_id))
    assert not {c["pack"] for c in now["chunks"]} & old  # rewritten from its own bytes
    later = datetime.now(UTC) + timedelta(days=2)
    pruned = prune.prune_tenant(ctx, wrapper(), "t-1", RetentionPolicy(daily=1, weekly=0,
                                                                          monthly=0),
                                dry_run=False, now=later)
    assert old <= set(pruned["blobs_deleted"])  # the departed rows' bytes are gone
    assert_members_restored(ctx, second.snapshot_id, now["rows"], db,
                            tmp_path / "after-rewrite.sqlite")


def test_a_damaged_pack_of_chunks_is_reported_not_a_backup_stopper(
        sqlite_platform: Platform, ctx: RunContext) -> None:
    platform = sqlite_platform
    add_members(platform, MEMBERS)
    first = backup.backup_tenant(ctx, wrapper(), "t-1")
    chunk = members_of(read_manifest(ctx, first.snapshot_id))["chunks"][0]
    key = store.blob_key("t-1", chunk["pack"])
    body = bytearray(platform.s3.get_object(Bucket=platform.backup_bucket, Key=key)["Body"]
                     .read())
    body[chunk["pack_offset"] + 60] ^= 1  # a chunk the next snapshot still uses
    platform.s3.put_object(Bucket=platform.backup_bucket, Key=key, Body=bytes(body))
    db = platform.source_url.removeprefix("sqlite:///")
    with sqlite3.connect(db) as conn:  # the pack falls under half in use: a rewrite is due
        conn.execute("DELETE FROM members WHERE id >= ?", (100_000 + MEMBERS // 4,))
    second = backup.backup_tenant(ctx, wrapper(), "t-1")  # not stopped by the damage
    # the damaged pack is kept as it is (table_packs_retired also counts the table index's
    # packs since format 7, which this night may rewrite, depending on where chunks are cut)
    kept = {c.get("pack") for c in members_of(read_manifest(ctx, second.snapshot_id))["chunks"]}
    assert chunk["pack"] in kept
    assert any(chunk["pack"] in w and "could not be read" in w for w in second.warnings)
    with pytest.raises(VerificationFailed, match=chunk["pack"]):  # and verify says where
        restore.verify_snapshot(ctx, wrapper(), "t-1", second.snapshot_id)
