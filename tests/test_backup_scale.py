"""Issue 10, backups at platform scale: requests counted, not guessed (DESIGN §6).

- An unchanged night learns what changed from a listing of the tenant's documents prefix and
  costs at most 0.01 S3 requests per document (counted by the proxy of ``tests/s3proxy.py``);
  without a per-tenant prefix it costs one HEAD per document, and nothing more.
- A new small document costs one GET, one PUT at its blob name and one read-back GET: no
  staging, copy or delete round trips; documents are stored concurrently, within the bound.
- The platform's read snapshot is closed before the first document request.
- The document index streams: building and reading it for 200,000 documents keeps the same
  memory peak as for 20,000; the documents held in memory at once are bounded in bytes.
- Snapshots of format 2 (document list inline in the manifest) still verify, restore and feed
  the next backup's reuse.
"""

from __future__ import annotations

import contextlib
import math
import re
import sqlite3
import threading
import time
import tracemalloc
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import IO, Any, cast

import pytest

from flows import backup, backup_documents, restore
from flows.backup_pool import ByteBudget
from flows.backup_scratch import Scratch
from flows.context import RunContext
from kernel.settings import Settings
from sources import documents
from sources.documents import DocumentRef, StoredDocument
from storage import backup_store as store
from storage import objects
from storage.aead import EncryptingWriter, decrypt_stream, object_associated_data
from storage.datakeys import DataKeys
from storage.doc_index import INDEX, IndexWriter, parse
from storage.keys import KeyWrapper, parse_master_key
from storage.snapshots import FORMAT_VERSION
from tests import awkward
from tests.conftest import Platform
from tests.s3proxy import S3Proxy
from tests.snapshot_view import with_table_chunks
from tests.test_key_rotation import restores

PREFIX_CATALOG = awkward.CATALOG.replace("keys_tenant_scoped = false",
                                         'key_prefix = "docs/{tenant_id}/"')
BULK = 6000  # documents of t-1 for the request count (plus the nine of the awkward set)


def wrapper() -> KeyWrapper:
    return parse_master_key(Settings().master_key_value() or "")


def run_backup() -> backup.BackupSummary:
    ctx = RunContext.open(Settings())
    try:
        return backup.backup_tenant(ctx, wrapper(), "t-1")
    finally:
        ctx.close()


def add_bulk(platform: Platform, count: int, prefix: str) -> None:
    """``count`` more documents of t-1 (ten distinct contents), rows and objects."""
    db = platform.source_url.removeprefix("sqlite:///")
    keys = [f"{prefix}bulk/{i:06d}" for i in range(count)]
    with sqlite3.connect(db) as conn:
        conn.executemany("INSERT INTO documents VALUES (?, 't-1', ?, ?)",
                         [(10_000 + i, f"bulk-{i}.txt", k) for i, k in enumerate(keys)])
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda i: platform.s3.put_object(
            Bucket=platform.documents_bucket, Key=keys[i], Body=b"bulk %d\n" % (i % 10)),
            range(count)))


def use_tenant_prefix(platform: Platform, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                      ) -> None:
    """Documents under ``docs/<tenant>/`` and a catalog saying so: backups list the prefix."""
    catalog = tmp_path / "catalog-prefix.toml"
    catalog.write_text(PREFIX_CATALOG)
    monkeypatch.setenv("TENANT_EXPORT_CATALOG", str(catalog))
    db = platform.source_url.removeprefix("sqlite:///")
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE documents SET storage_key = 'docs/' || tenant_id || '/' || "
                     "storage_key")
    for tenant, _, _, key, content in awkward.DOCUMENTS:
        if content is not None:
            platform.s3.put_object(Bucket=platform.documents_bucket, Key=f"docs/{tenant}/{key}",
                                   Body=content)


@contextlib.contextmanager
def counting(upstream: str, monkeypatch: pytest.MonkeyPatch, latency_s: float = 0.0
             ) -> Iterator[S3Proxy]:
    """Every S3 request of runs started inside the block goes through a counting proxy."""
    with S3Proxy(upstream, latency_s=latency_s) as proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL_S3", proxy.url)
        try:
            yield proxy
        finally:
            monkeypatch.setenv("AWS_ENDPOINT_URL_S3", upstream)


def requests_to(proxy: S3Proxy, bucket: str) -> dict[str, int]:
    counted: dict[str, int] = {}
    for seen in proxy.requests(lambda r: r.bucket == bucket):
        counted[seen.request.operation] = counted.get(seen.request.operation, 0) + 1
    return counted


# -- 1. an unchanged night -------------------------------------------------------------------


def test_an_unchanged_night_costs_at_most_a_hundredth_of_a_request_per_document(
        sqlite_platform: Platform, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        moto_endpoint: str, capsys: pytest.CaptureFixture[str]) -> None:
    platform = sqlite_platform
    use_tenant_prefix(platform, tmp_path, monkeypatch)
    add_bulk(platform, BULK, "docs/t-1/")
    documents = BULK + 9
    first = run_backup()
    assert first.documents_survey == "listing" and first.documents == documents
    assert first.blobs_uploaded == 8 + 10  # each distinct content once

    with counting(moto_endpoint, monkeypatch) as proxy:
        unchanged = run_backup()
        total, by_operation = proxy.total(), proxy.counts()
        on_documents = requests_to(proxy, platform.documents_bucket)
    assert unchanged.blobs_uploaded == 0 and unchanged.documents == documents
    pages = math.ceil((BULK + 8) / 1000)
    assert on_documents == {"ListObjectsV2": pages}  # no HEAD, no GET of any document
    assert total / documents <= 0.01, by_operation
    with capsys.disabled():
        print(f"\nunchanged night, {documents} documents: {total} requests "
              f"({total / documents:.4f} per document): {dict(sorted(by_operation.items()))}")


def test_without_a_tenant_prefix_an_unchanged_document_costs_one_head(
        sqlite_platform: Platform, moto_endpoint: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """``keys_tenant_scoped = false`` (the awkward catalog): a listing would cover other
    tenants' files, so each document's key gets one HEAD, and that is all."""
    platform = sqlite_platform
    add_bulk(platform, 200, "t1/")
    run_backup()
    with counting(moto_endpoint, monkeypatch) as proxy:
        unchanged = run_backup()
        on_documents = requests_to(proxy, platform.documents_bucket)
    assert unchanged.documents_survey == "head" and unchanged.blobs_uploaded == 0
    assert on_documents == {"HeadObject": 200 + 9}  # one per key, the missing one included


# -- 2. new documents: read concurrently, small ones packed -------------------------------------


def test_new_small_documents_cost_a_get_each_and_one_pack_put_and_read_back(
        sqlite_platform: Platform, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        moto_endpoint: str) -> None:
    platform = sqlite_platform
    use_tenant_prefix(platform, tmp_path, monkeypatch)
    add_bulk(platform, 50, "docs/t-1/")
    run_backup()
    changed = [f"docs/t-1/bulk/{i:06d}" for i in range(0, 50, 5)]
    for i, key in enumerate(changed):
        platform.s3.put_object(Bucket=platform.documents_bucket, Key=key,
                               Body=b"new content %d" % i)
    with counting(moto_endpoint, monkeypatch) as proxy:
        summary = run_backup()
        on_documents = requests_to(proxy, platform.documents_bucket)
        on_backups = requests_to(proxy, platform.backup_bucket)
        blob_requests = proxy.requests(lambda r: r.bucket == platform.backup_bucket
                                       and "/blobs/" in r.path)
        staged = proxy.requests(lambda r: "/staging/" in r.path)
    assert summary.blobs_uploaded == len(changed)
    assert on_documents == {"ListObjectsV2": 1, "GetObject": len(changed)}
    ctx = RunContext.open(Settings())
    try:
        restore.verify_snapshot(ctx, wrapper(), "t-1", summary.snapshot_id)
    finally:
        ctx.close()

    def is_chunk_pack(seen: Any) -> bool:  # packs of table and index chunks: pack-<id>-t<n>,
        return bool(re.search(r"/blobs/pack-[^/]*-[tx]\d+$", seen.request.path))  # -x<n>

    documents = [s for s in blob_requests if not is_chunk_pack(s)]
    puts = [s for s in documents if s.request.operation == "PutObject"]
    reads = [s for s in documents if s.request.operation == "GetObject"]
    # format 5: the ten small blobs travel in one pack, written once and read back once
    assert len(puts) == len(reads) == summary.packs_uploaded == 1 == len(documents) / 2
    assert "/blobs/pack-" in puts[0].request.path
    # format 6: the index chunks the change touched travel in one pack of chunks (written and
    # read back); the previous index came from its pack with one ranged GET, and (format 7)
    # the previous table index from its own, with one more; the table index is unchanged
    chunk_packs = Counter(s.request.operation for s in blob_requests if is_chunk_pack(s))
    assert chunk_packs == {"PutObject": 1, "GetObject": 3} and summary.table_packs_uploaded == 1
    assert not staged and "CopyObject" not in on_backups, on_backups  # no staging round trips


def test_documents_are_stored_concurrently_within_the_bound(
        sqlite_platform: Platform, moto_endpoint: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    platform = sqlite_platform
    add_bulk(platform, 60, "t1/")
    monkeypatch.setenv("TENANT_EXPORT_FETCH_CONCURRENCY", "6")
    active, peak, lock = [0], [0], threading.Lock()
    real = documents.open_document

    def counted(client: Any, bucket: str, key: str) -> Any:
        with lock:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
        try:
            opened = real(client, bucket, key)
            time.sleep(0.05)  # a document read takes a while on real S3
            return opened
        finally:
            with lock:
                active[0] -= 1

    monkeypatch.setattr(backup_documents, "open_document", counted)
    with counting(moto_endpoint, monkeypatch, 0.01):
        summary = run_backup()
    assert summary.documents == 69 and summary.blobs_uploaded == 8 + 10
    assert 3 <= peak[0] <= 6, peak[0]


# -- 3. the read snapshot ends before documents are read -------------------------------------


@pytest.mark.parametrize("prefixed", [True, False], ids=["listing", "head"])
def test_the_database_snapshot_is_closed_before_the_first_document_request(
        sqlite_platform: Platform, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        prefixed: bool) -> None:
    platform = sqlite_platform
    if prefixed:
        use_tenant_prefix(platform, tmp_path, monkeypatch)
    events: list[str] = []
    ctx = RunContext.open(Settings())
    real_snapshot = ctx.snapshot

    class Recorded:
        def __init__(self) -> None:
            self.inner = real_snapshot()

        def __enter__(self) -> Any:
            events.append("snapshot opened")
            return self.inner.__enter__()

        def __exit__(self, *exc: Any) -> None:
            self.inner.__exit__(*exc)
            events.append("snapshot closed")

    def request(params: dict[str, Any], model: Any, **_: Any) -> None:
        if params.get("Bucket") == platform.documents_bucket:
            events.append(f"{model.name} documents")

    monkeypatch.setattr(ctx, "snapshot", Recorded)
    ctx.s3.meta.events.register("before-parameter-build.s3", request)
    try:
        summary = backup.backup_tenant(ctx, wrapper(), "t-1")
    finally:
        ctx.close()
    assert summary.blobs_uploaded == 8
    assert events.count("snapshot opened") == events.count("snapshot closed") == 1
    closed = events.index("snapshot closed")
    document_requests = [i for i, e in enumerate(events) if e.endswith(" documents")]
    first_get = events.index("GetObject documents")
    assert document_requests and min(document_requests) > closed and first_get > closed, events


# -- 4. memory does not grow with the number of documents ------------------------------------


def fake_entry(i: int) -> dict[str, Any]:
    digest = f"{i:064x}"
    return {"document_id": str(i), "storage_key": f"docs/t-1/{i:09d}.pdf", "status": "ok",
            "etag": digest[:32], "size": 1000 + i, "blob": digest, "sha256": digest,
            "ciphertext_bytes": 1068 + i, "ciphertext_sha256": digest, "listed": True}


def index_roundtrip(count: int, path: Path) -> int:
    """Peak traced memory of an unchanged night's index path for ``count`` documents, without
    S3: the previous index, the rows and the listing spooled and joined, every document found
    unchanged (its blob reused), the new index written and sealed, then read back and parsed."""
    keys = DataKeys({1: bytes(range(32))}, 1)
    ad = object_associated_data("t-1", "snapshots/x/documents.jsonl")
    tracemalloc.start()
    tracemalloc.reset_peak()
    try:
        with Scratch() as scratch:
            scratch.add_previous(fake_entry(i) for i in range(count))
            scratch.add_rows(DocumentRef(str(i), "", fake_entry(i)["storage_key"])
                             for i in range(count))
            scratch.add_objects(StoredDocument(e["storage_key"], e["etag"], e["size"])
                                for e in map(fake_entry, range(count)))
            reused: list[tuple[int, dict[str, Any]]] = []
            for planned in scratch.plan():
                assert planned.blob and planned.info, planned  # unchanged: nothing to read
                reused.append((planned.seq, {
                    "document_id": planned.document_id, "storage_key": planned.storage_key,
                    "status": "ok", "etag": planned.etag, "size": planned.size,
                    "blob": planned.blob, "sha256": planned.sha256, "info": planned.info}))
                if len(reused) == 1000:  # as the backup does: a page at a time
                    scratch.adopt((e["blob"], e.pop("info")) for _, e in reused)
                    scratch.add_entries(reused)
                    reused.clear()
            scratch.adopt((e["blob"], e.pop("info")) for _, e in reused)
            scratch.add_entries(reused)
            with path.open("wb") as out, EncryptingWriter(out, keys, ad) as sealed:
                writer = IndexWriter(cast(IO[bytes], sealed))
                writer.write_all(scratch.entries())
        plain_bytes, plain_sha = sealed.plaintext_bytes, sealed.plaintext_sha256

        def chunks() -> Iterator[bytes]:
            with path.open("rb") as source:
                while chunk := source.read(1024 * 1024):
                    yield chunk

        expected = {"count": count, "plaintext_bytes": plain_bytes,
                    "plaintext_sha256": plain_sha}
        read = 0
        for entry in parse(decrypt_stream(chunks(), keys, ad), "index", expected):
            read += 1
            if read == count:  # the last one went through the join like every other
                assert entry == {**fake_entry(count - 1), "plaintext_bytes": entry["size"]}
        assert read == writer.count == count and writer.missing == 0
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
        path.unlink(missing_ok=True)


def test_the_document_index_streams_in_bounded_memory(tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    small = index_roundtrip(20_000, tmp_path / "small")
    large = index_roundtrip(200_000, tmp_path / "large")
    with capsys.disabled():
        print(f"\nindex peak: 20k documents {small / 2**20:.1f} MiB, "
              f"200k documents {large / 2**20:.1f} MiB")
    assert large < 1.5 * small + 2**20, (small, large)
    assert large < 16 * 2**20  # a few 1 MiB segments and chunks, whatever the count


def test_a_large_document_still_streams_through_a_multipart_upload(
        sqlite_platform: Platform, monkeypatch: pytest.MonkeyPatch, moto_endpoint: str) -> None:
    """Above ``SMALL_BLOB_BYTES`` a blob is never held whole: staging upload, then copy."""
    monkeypatch.setattr(backup_documents, "SMALL_BLOB_BYTES", 1024 * 1024)
    monkeypatch.setattr(objects, "SINGLE_PUT_BYTES", 1024 * 1024)  # and multipart past 1 MiB
    with counting(moto_endpoint, monkeypatch) as proxy:
        summary = run_backup()
        staged = proxy.requests(lambda r: "/staging/" in r.path)
        copies = proxy.requests(lambda r: r.operation == "CopyObject")
    assert summary.blobs_uploaded == 8
    assert {s.request.operation for s in staged} >= {"CreateMultipartUpload", "UploadPart",
                                                     "CompleteMultipartUpload", "DeleteObject"}
    assert len(copies) == 1  # only the 3 MiB report


def test_the_byte_budget_bounds_documents_held_in_memory(
        sqlite_platform: Platform, monkeypatch: pytest.MonkeyPatch) -> None:
    """Workers wait for the budget before reading: with room for two documents' buffers,
    never more than two are read at once, whatever the pool's size."""
    add_bulk(sqlite_platform, 30, "t1/")
    budget = ByteBudget(2 * (backup_documents.BUFFER_SLACK + 100))
    monkeypatch.setattr(backup_documents, "BUFFERS", budget)
    active, peak, lock = [0], [0], threading.Lock()
    real = documents.open_document

    def counted(client: Any, bucket: str, key: str) -> Any:
        with lock:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
        try:
            time.sleep(0.02)
            return real(client, bucket, key)
        finally:
            with lock:
                active[0] -= 1

    monkeypatch.setattr(backup_documents, "open_document", counted)
    summary = run_backup()
    assert summary.blobs_uploaded == 8 + 10
    assert peak[0] <= 2 and budget.peak <= budget.total, (peak[0], budget.peak)


# -- 5. snapshots of format 2 (inline document list) stay readable ---------------------------


def as_format_2(ctx: RunContext, snapshot_id: str) -> None:
    """Rewrite a snapshot of t-1 as format 2 wrote it: the documents and their blobs inline
    in the manifest, no index object."""
    keys = ctx.store.data_key(wrapper(), "t-1", create=False)
    manifest = ctx.store.read_manifest(keys, "t-1", snapshot_id)
    entries = list(ctx.store.documents(keys, "t-1", manifest))
    fields = ("document_id", "storage_key", "etag", "size", "status", "blob", "sha256")
    blobs = {e["blob"]: {k: e[k] for k in ("plaintext_bytes", "ciphertext_bytes",
                                           "ciphertext_sha256")}
             for e in entries if e.get("blob")}
    manifest = with_table_chunks(ctx.store, keys, "t-1", manifest)  # inline, as before format 7
    del manifest["table_index"]
    for table in manifest["tables"]:
        del table["chunk_count"]
    manifest.update(version=2, documents=[{k: e[k] for k in fields if k in e} for e in entries],
                    blobs=blobs)
    ctx.store.write_manifest(keys, "t-1", snapshot_id, manifest)
    ctx.s3.delete_object(Bucket=ctx.store.bucket,
                         Key=store.snapshot_prefix("t-1", snapshot_id) + INDEX)


@pytest.mark.usefixtures("unpacked")  # one object per blob, as format 4
def test_a_format_2_snapshot_still_restores_and_feeds_the_next_backup(
        sqlite_platform: Platform, tmp_path: Path) -> None:
    old = run_backup().snapshot_id
    ctx = RunContext.open(Settings())
    try:
        as_format_2(ctx, old)
        keys = ctx.store.data_key(wrapper(), "t-1", create=False)
        assert ctx.store.read_manifest(keys, "t-1", old)["version"] == 2
        restores(sqlite_platform, ctx, tmp_path, old)  # verify, then tables and documents
        new = run_backup()  # unchanged documents: reused through the inline list
        assert new.blobs_uploaded == 0 and new.documents == 9
        assert ctx.store.read_manifest(keys, "t-1", new.snapshot_id)["version"] == (
            FORMAT_VERSION)
        restores(sqlite_platform, ctx, tmp_path, new.snapshot_id)
        restores(sqlite_platform, ctx, tmp_path, old)
    finally:
        ctx.close()
