"""The nightly cost grows with what changed: unchanged documents are never uploaded again.
And retention on real storage: forgotten snapshots go, referenced blobs stay."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from flows import backup, prune, restore
from flows.context import RunContext, S3Context
from kernel.settings import Settings
from storage import backup_store as store
from storage.aead import ciphertext_size
from storage.keys import parse_master_key
from storage.retention import RetentionPolicy
from tests.conftest import Platform

DOCS = 100
DOC_BYTES = 10_000


def add_documents(platform: Platform) -> None:
    db = platform.source_url.removeprefix("sqlite:///")
    with sqlite3.connect(db) as conn:
        for i in range(DOCS):
            conn.execute("INSERT INTO documents VALUES (?, 't-1', ?, ?)",
                         (500 + i, f"bulk-{i}.bin", f"t1/bulk/{i}"))
    for i in range(DOCS):
        platform.s3.put_object(Bucket=platform.documents_bucket, Key=f"t1/bulk/{i}",
                               Body=bytes([i % 251]) * DOC_BYTES)


def run_backup() -> backup.BackupSummary:
    ctx = RunContext.open(Settings())
    try:
        return backup.backup_tenant(ctx, parse_master_key(Settings().master_key_value() or ""), "t-1")
    finally:
        ctx.close()


def fixed_cost(platform: Platform, summary: backup.BackupSummary) -> int:
    """Bytes a night writes besides documents: the manifest, and the chunks of the tables and
    of the document index that the previous snapshot did not hold (format 4: nothing more on
    a night on which nothing changed)."""
    ctx = RunContext.open(Settings())
    try:
        dek = ctx.store.data_key(parse_master_key(Settings().master_key_value() or ""), "t-1",
                              create=False)
        ids = ctx.store.list_snapshots("t-1")
        manifest = ctx.store.read_manifest(dek, "t-1", summary.snapshot_id)
        before = ctx.store.read_manifest(dek, "t-1", ids[ids.index(summary.snapshot_id) - 1])
    finally:
        ctx.close()
    key = store.snapshot_prefix("t-1", summary.snapshot_id) + store.MANIFEST
    head = platform.s3.head_object(Bucket=platform.backup_bucket, Key=key)
    indexes = ("documents", "table_index")  # format 7: the table chunks' list is an index too
    held = {c["blob"] for name in indexes for c in before[name]["chunks"]}
    index = sum(c["ciphertext_bytes"] for name in indexes for c in manifest[name]["chunks"]
                if c["blob"] not in held)
    return sum(t["uploaded_bytes"] for t in manifest["tables"]) + index + int(
        head["ContentLength"])


def test_second_backup_uploads_only_changed_documents(sqlite_platform: Platform) -> None:
    add_documents(sqlite_platform)
    first = run_backup()
    assert first.blobs_uploaded == 8 + DOCS  # every present document once (one is missing)
    unchanged = run_backup()
    assert unchanged.blobs_uploaded == 0
    assert unchanged.bytes_uploaded == fixed_cost(sqlite_platform, unchanged)
    assert unchanged.bytes_uploaded < 20_000  # the manifest alone
    sqlite_platform.s3.put_object(Bucket=sqlite_platform.documents_bucket, Key="t1/bulk/42",
                                  Body=b"changed" * 1000)  # 1 % of the bulk documents
    changed = run_backup()
    assert changed.blobs_uploaded == 1
    assert changed.bytes_uploaded - fixed_cost(sqlite_platform, changed) == ciphertext_size(7000)
    ctx = RunContext.open(Settings())
    try:
        report = restore.verify_snapshot(ctx, parse_master_key(Settings().master_key_value() or ""),
                                         "t-1", changed.snapshot_id)
    finally:
        ctx.close()
    assert report["documents"] == 9 + DOCS


def test_prune_keeps_what_the_policy_says_and_every_referenced_blob(
        sqlite_platform: Platform, monkeypatch: pytest.MonkeyPatch) -> None:
    days = [datetime(2026, 11, 1, 2, 30, tzinfo=UTC) + timedelta(days=d) for d in range(12)]
    ids = iter(f"{d:%Y%m%dT%H%M%SZ}-{i:08x}" for i, d in enumerate(days))
    monkeypatch.setattr(backup, "new_snapshot_id", lambda now=None: next(ids))
    for day in range(12):  # a document changes every night
        sqlite_platform.s3.put_object(Bucket=sqlite_platform.documents_bucket, Key="t1/dup-a",
                                      Body=f"night {day}".encode())
        run_backup()
    settings = Settings()
    ctx: Any = S3Context.open(settings)
    wrapper = parse_master_key(settings.master_key_value() or "")
    policy = RetentionPolicy(daily=3, weekly=1, monthly=1)
    later = datetime.now(UTC) + timedelta(days=2)  # past the blobs' grace period
    dry = prune.prune_tenant(ctx, wrapper, "t-1", policy, dry_run=True, now=later)
    assert len(ctx.store.list_snapshots("t-1")) == 12  # a dry run deletes nothing
    report = prune.prune_tenant(ctx, wrapper, "t-1", policy, dry_run=False, now=later)
    assert report["keep"] == dry["keep"] and report["forget"] == dry["forget"]
    kept = ctx.store.list_snapshots("t-1")
    # daily=3 keeps Nov 12, 11, 10; the newest of the newest week (W46) and of the newest
    # month are Nov 12 again, so nothing else survives
    assert [k[:8] for k in kept] == ["20261110", "20261111", "20261112"]
    # the nightly versions of dup-a no one needs (each night's alone in that night's pack),
    # and of the index chunk that lists it (format 6: alone in that night's pack of index
    # chunks, the first night's too); the first night's version of dup-a stays in the first
    # night's pack, with every other document (flows/backup_packs.py says when a pack is
    # rewritten)
    assert len(report["blobs_deleted"]) == 8 + 9
    assert sum("-t" in name for name in report["blobs_deleted"]) == 9
    for snapshot_id in kept:
        restore.verify_snapshot(ctx, wrapper, "t-1", snapshot_id)  # every blob still there
