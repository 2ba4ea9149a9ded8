"""The document index in small chunks packed with the table chunks (backup format 6).

A night that changes 1 % of the documents must rewrite few index chunks, and reading an index
of many small chunks must still cost one request per pack. Snapshots of format 5 (each index
chunk an object of its own) stay readable, and their chunks are reused by a format-6 night.
"""

from __future__ import annotations

import hashlib
import re
import sqlite3
from collections import Counter
from typing import Any

import pytest

from flows import backup, restore
from flows.backup_tables import INDEX_CHUNK_LINES, TableChunks
from flows.context import RunContext
from kernel.errors import VerificationFailed
from kernel.settings import Settings
from storage import backup_store as store
from storage.snapshots import FORMAT_VERSION
from tests.conftest import Platform
from tests.snapshot_view import as_format
from tests.test_backup_packs import entries, wrapper
from tests.test_backup_scale import counting

MANY = 20 * INDEX_CHUNK_LINES  # documents: about twenty index chunks


def add_many(platform: Platform, n: int = MANY) -> None:
    db = platform.source_url.removeprefix("sqlite:///")
    with sqlite3.connect(db) as conn:
        conn.executemany("INSERT INTO documents VALUES (?, 't-1', ?, ?)",
                         [(1000 + i, f"m-{i}.txt", f"t1/many/{i}") for i in range(n)])
    for i in range(n):
        platform.s3.put_object(Bucket=platform.documents_bucket, Key=f"t1/many/{i}",
                               Body=b"document %d" % i)


def manifest(ctx: RunContext, snapshot_id: str) -> dict[str, Any]:
    keys = ctx.store.data_key(wrapper(), "t-1", create=False)
    return ctx.store.read_manifest(keys, "t-1", snapshot_id)


def index_chunks(ctx: RunContext, snapshot_id: str) -> list[dict[str, Any]]:
    chunks: list[dict[str, Any]] = manifest(ctx, snapshot_id)["documents"]["chunks"]
    return chunks


def chunk_pack_requests(proxy: Any, platform: Platform) -> Counter[str]:
    return Counter(s.request.operation for s in proxy.requests(
        lambda r: r.bucket == platform.backup_bucket)
        if re.search(r"/blobs/pack-[^/]*-t\d+$", s.request.path))


def test_a_one_percent_night_rewrites_few_index_chunks_and_reads_each_pack_once(
        sqlite_platform: Platform, ctx: RunContext, moto_endpoint: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    platform = sqlite_platform
    add_many(platform)
    first = backup.backup_tenant(ctx, wrapper(), "t-1")
    chunks = index_chunks(ctx, first.snapshot_id)
    assert len(chunks) >= 10  # small chunks (at 1,024 lines: one)
    assert all(re.fullmatch(r"pack-.*-t\d+", c.get("pack", "")) for c in chunks)
    assert all(c["compression"] == "zlib" for c in chunks)
    listing = [o["Key"].rsplit("/", 1)[-1] for o in platform.s3.list_objects_v2(
        Bucket=platform.backup_bucket, Prefix="backups/t-1/blobs/").get("Contents", [])]
    alone = {e["blob"] for e in entries(ctx, first.snapshot_id) if e.get("blob")
             and not e.get("pack")}  # documents too large for a pack
    assert {name for name in listing if not name.startswith("pack-")} == alone

    changed = [f"t1/many/{i}" for i in range(0, MANY, 100)]  # 1 % of them
    for key in changed:
        platform.s3.put_object(Bucket=platform.documents_bucket, Key=key, Body=b"new " + key
                               .encode())
    second = backup.backup_tenant(ctx, wrapper(), "t-1")
    before = {c["blob"] for c in chunks}
    now = index_chunks(ctx, second.snapshot_id)
    rewritten = [c for c in now if c["blob"] not in before]
    assert 1 <= len(rewritten) <= len(changed)  # a change touches its own chunk only
    assert sum(c["ciphertext_bytes"] for c in rewritten) < 0.5 * sum(
        c["ciphertext_bytes"] for c in now)
    listed = {e["storage_key"]: e for e in entries(ctx, second.snapshot_id)}
    keys = ctx.store.data_key(wrapper(), "t-1", create=False)
    for key in changed:  # value by value, through the new index
        plain = b"".join(ctx.store.blob_plaintext(keys, "t-1", listed[key]))
        assert plain == b"new " + key.encode()
        assert listed[key]["sha256"] == hashlib.sha256(plain).hexdigest()
    assert restore.verify_snapshot(ctx, wrapper(), "t-1", second.snapshot_id)["ok"]

    packs = {c["pack"] for c in now}  # the index of night 2 sits in this many packs
    with counting(moto_endpoint, monkeypatch) as proxy:
        counted = RunContext.open(Settings())  # its S3 client goes through the proxy
        try:
            third = backup.backup_tenant(counted, wrapper(), "t-1")  # nothing changed
        finally:
            counted.close()
        requests = chunk_pack_requests(proxy, platform)
    assert requests == {"GetObject": len(packs)}  # one ranged GET per pack, none written
    assert [c["blob"] for c in index_chunks(ctx, third.snapshot_id)] == [
        c["blob"] for c in now]


def test_a_changed_byte_in_an_index_chunk_fails_verify_and_restore(
        sqlite_platform: Platform, ctx: RunContext, tmp_path: Any) -> None:
    platform = sqlite_platform
    add_many(platform, 3 * INDEX_CHUNK_LINES)
    snapshot_id = backup.backup_tenant(ctx, wrapper(), "t-1").snapshot_id
    victim = index_chunks(ctx, snapshot_id)[1]
    key = store.blob_key("t-1", victim["pack"])
    data = bytearray(platform.s3.get_object(Bucket=platform.backup_bucket, Key=key)["Body"]
                     .read())
    data[victim["pack_offset"] + victim["ciphertext_bytes"] // 2] ^= 1
    platform.s3.put_object(Bucket=platform.backup_bucket, Key=key, Body=bytes(data))
    with pytest.raises(VerificationFailed, match=victim["pack"]) as caught:
        restore.verify_snapshot(ctx, wrapper(), "t-1", snapshot_id)
    assert caught.value.tenant_id == "t-1"
    target = tmp_path / "r.sqlite"
    with pytest.raises(VerificationFailed, match=victim["pack"]):
        restore.restore_snapshot(ctx, wrapper(), "t-1", f"sqlite:///{target}",
                                 documents_bucket=platform.documents_bucket)
    assert not target.exists()


def test_format_5_index_chunks_are_read_and_reused(
        sqlite_platform: Platform, ctx: RunContext, monkeypatch: pytest.MonkeyPatch) -> None:
    """A format-5 night (each index chunk an object of its own), then a format-7 night on top
    of it: both restore-check, list the same documents, and the second reuses the first's
    chunks where nothing changed, mixing both kinds in one index."""
    platform = sqlite_platform
    add_many(platform, 4 * INDEX_CHUNK_LINES)

    def store_index_v5(self: TableChunks, pool: Any, pieces: Any) -> list[dict[str, Any]]:
        stored = self.store_pieces(pool, pieces)  # not packed: format 5's index chunks
        for entry in stored:
            entry["compression"] = "zlib"
        return stored

    with monkeypatch.context() as patch:
        patch.setattr(TableChunks, "store_index", store_index_v5)
        old = backup.backup_tenant(ctx, wrapper(), "t-1")
    keys = ctx.store.data_key(wrapper(), "t-1", create=False)
    as_format(ctx.store, keys, "t-1", old.snapshot_id, 5)  # its table chunks listed inline
    assert manifest(ctx, old.snapshot_id)["version"] == 5
    assert not any(c.get("pack") for c in index_chunks(ctx, old.snapshot_id))

    platform.s3.put_object(Bucket=platform.documents_bucket, Key="t1/many/7", Body=b"seven")
    new = backup.backup_tenant(ctx, wrapper(), "t-1")
    assert manifest(ctx, new.snapshot_id)["version"] == FORMAT_VERSION == 7
    kinds = Counter(bool(c.get("pack")) for c in index_chunks(ctx, new.snapshot_id))
    assert kinds[False] >= 1 and kinds[True] >= 1  # reused objects, and the changed chunk
    for snapshot_id in (old.snapshot_id, new.snapshot_id):
        assert restore.verify_snapshot(ctx, wrapper(), "t-1", snapshot_id)["ok"]
    before = {e["storage_key"]: e for e in entries(ctx, old.snapshot_id)}
    after = {e["storage_key"]: e for e in entries(ctx, new.snapshot_id)}
    assert before.keys() == after.keys()
    assert [k for k in before if before[k].get("sha256") != after[k].get("sha256")] == [
        "t1/many/7"]
