"""Small document blobs in packs (format 5): few requests, every member checked, rewritten when
mostly unused, and nothing committed when a pack fails."""

from __future__ import annotations

import re
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from flows import backup, backup_packs, prune, restore
from flows.backup_packs import should_retire
from flows.context import RunContext
from kernel.errors import StorageError, VerificationFailed
from kernel.settings import Settings
from storage import backup_store as store
from storage.keys import KeyWrapper, parse_master_key
from storage.packs import cut
from storage.retention import RetentionPolicy
from tests.conftest import Platform
from tests.test_backup_incremental import DOC_BYTES, DOCS, add_documents
from tests.test_backup_scale import counting, requests_to


def wrapper() -> KeyWrapper:
    return parse_master_key(Settings().master_key_value() or "")


def entries(ctx: RunContext, snapshot_id: str) -> list[dict[str, Any]]:
    keys = ctx.store.data_key(wrapper(), "t-1", create=False)
    return list(ctx.store.documents(keys, "t-1", ctx.store.read_manifest(keys, "t-1",
                                                                         snapshot_id)))


def pack_requests(proxy: Any, platform: Platform, operation: str) -> int:
    """Requests on packs of documents (those of table chunks end in ``-t<n>``, those of the
    table index in ``-x<n>``)."""
    return sum(1 for s in proxy.requests(lambda r: r.bucket == platform.backup_bucket)
               if s.request.operation == operation and "/blobs/pack-" in s.request.path
               and not re.search(r"-[tx]\d+$", s.request.path))


# -- the layout, alone ---------------------------------------------------------------------------


def test_members_are_cut_from_any_chunking_with_gaps_between_them() -> None:
    pack = bytes(range(256)) * 40  # 10,240 bytes
    members = [(0, 100, "a"), (100, 101, "b"), (3_000, 7_000, "c"), (10_000, 10_240, "d")]
    for size in (1, 7, 99, 4_096, 20_000):
        chunks = [pack[i:i + size] for i in range(0, len(pack), size)]
        got = list(cut(chunks, members, "pack-x"))
        assert got == [(m, pack[s:e]) for s, e, m in members]


def test_a_short_pack_or_overlapping_members_are_refused() -> None:
    with pytest.raises(VerificationFailed, match="ends at byte 50"):
        list(cut([b"x" * 50], [(10, 60, "a")], "pack-x"))
    with pytest.raises(VerificationFailed, match="overlap"):
        list(cut([b"x" * 50], [(0, 20, "a"), (10, 30, "b")], "pack-x"))


def test_which_packs_are_rewritten() -> None:
    assert not should_retire(10, 10)  # fully in use
    assert not should_retire(10, 5)  # half in use: kept
    assert should_retire(10, 4)  # less than half in use: rewritten
    assert should_retire(1, 0)


# -- backups of the platform -------------------------------------------------------------------


def test_small_documents_travel_in_few_packs_and_each_is_read_back_whole(
        sqlite_platform: Platform, monkeypatch: pytest.MonkeyPatch, moto_endpoint: str) -> None:
    platform = sqlite_platform
    add_documents(platform)  # 100 documents of 10,000 bytes, besides the awkward ones
    monkeypatch.setattr(backup_packs, "PACK_BYTES", 200_000)
    with counting(moto_endpoint, monkeypatch) as proxy:
        context = RunContext.open(Settings())
        try:
            summary = backup.backup_tenant(context, wrapper(), "t-1")
        finally:
            context.close()
        puts = pack_requests(proxy, platform, "PutObject")
        reads = pack_requests(proxy, platform, "GetObject")
        per_operation = requests_to(proxy, platform.backup_bucket)
    # about DOCS * DOC_BYTES / 200,000 packs: one PUT and one read-back each
    assert summary.packs_uploaded == puts == reads
    assert DOCS * DOC_BYTES // 200_000 <= puts <= DOCS * DOC_BYTES // 200_000 + 2
    assert per_operation["PutObject"] < DOCS / 4, per_operation  # not one per document

    ctx = RunContext.open(Settings())
    try:
        listed = entries(ctx, summary.snapshot_id)
        stored = [e for e in listed if e.get("blob")]
        small = backup_packs.PACKED_BLOB_BYTES
        assert len(stored) >= DOCS  # small blobs packed, a large one (3 MiB) alone
        assert all(bool(e.get("pack")) == (e["ciphertext_bytes"] <= small) for e in stored)
        assert any(not e.get("pack") for e in stored)
        assert len({e["pack"] for e in stored if e.get("pack")}) == puts
        places: dict[str, tuple[str, int]] = {}
        keys = ctx.store.data_key(wrapper(), "t-1", create=False)
        for entry in stored:  # one blob per content: a duplicate shares its place
            place = (entry.get("pack", ""), entry.get("pack_offset", 0))
            assert places.setdefault(entry["blob"], place) == place
            plain = b"".join(ctx.store.blob_plaintext(keys, "t-1", entry))
            source = platform.s3.get_object(Bucket=platform.documents_bucket,
                                            Key=entry["storage_key"])["Body"].read()
            assert plain == source, entry["storage_key"]  # value by value
        with counting(moto_endpoint, monkeypatch) as proxy:
            checked = RunContext.open(Settings())
            try:
                report = restore.verify_snapshot(checked, wrapper(), "t-1",
                                                 summary.snapshot_id)
            finally:
                checked.close()
            assert pack_requests(proxy, platform, "GetObject") == puts  # each pack once
        assert report["ok"] and report["documents"] == len(listed)
    finally:
        ctx.close()


def test_a_changed_byte_in_a_pack_fails_verification_and_restore(
        sqlite_platform: Platform, ctx: RunContext) -> None:
    platform = sqlite_platform
    add_documents(platform)
    snapshot_id = backup.backup_tenant(ctx, wrapper(), "t-1").snapshot_id
    victim = next(e for e in entries(ctx, snapshot_id) if e.get("pack"))
    key = store.blob_key("t-1", victim["pack"])
    data = bytearray(platform.s3.get_object(Bucket=platform.backup_bucket, Key=key)["Body"]
                     .read())
    data[victim["pack_offset"] + 40] ^= 1
    platform.s3.put_object(Bucket=platform.backup_bucket, Key=key, Body=bytes(data))
    with pytest.raises(VerificationFailed, match=victim["blob"]) as caught:
        restore.verify_snapshot(ctx, wrapper(), "t-1", snapshot_id)
    assert victim["pack"] in str(caught.value) and caught.value.tenant_id == "t-1"
    keys = ctx.store.data_key(wrapper(), "t-1", create=False)
    with pytest.raises(VerificationFailed, match="sealed bytes"):
        list(ctx.store.blob_plaintext(keys, "t-1", victim))


def test_a_member_moved_within_its_pack_fails_its_name_check(
        sqlite_platform: Platform, ctx: RunContext) -> None:
    """Two members of equal length swapped, and the index's hashes updated to match: the
    sealed bytes still decrypt, but not to the content their name says."""
    platform = sqlite_platform
    add_documents(platform)
    snapshot_id = backup.backup_tenant(ctx, wrapper(), "t-1").snapshot_id
    listed = [e for e in entries(ctx, snapshot_id) if e.get("pack")]
    first, second = next((a, b) for a in listed for b in listed
                         if a["pack"] == b["pack"] and a["blob"] != b["blob"]
                         and a["ciphertext_bytes"] == b["ciphertext_bytes"])
    moved = {**first, "pack_offset": second["pack_offset"],
             "ciphertext_sha256": second["ciphertext_sha256"]}
    keys = ctx.store.data_key(wrapper(), "t-1", create=False)
    with pytest.raises(VerificationFailed, match="does not match its name"):
        list(ctx.store.blob_plaintext(keys, "t-1", moved))


def test_a_mostly_unused_pack_is_rewritten_then_pruned(
        sqlite_platform: Platform, ctx: RunContext) -> None:
    platform = sqlite_platform
    add_documents(platform)
    first = backup.backup_tenant(ctx, wrapper(), "t-1")
    old_packs = {e["pack"] for e in entries(ctx, first.snapshot_id) if e.get("pack")}
    assert first.packs_uploaded == len(old_packs) == 1
    db = platform.source_url.removeprefix("sqlite:///")
    with sqlite3.connect(db) as conn:  # 70 of the 100 bulk documents deleted by the client
        conn.execute("DELETE FROM documents WHERE id >= 500 AND id < 570")
    second = backup.backup_tenant(ctx, wrapper(), "t-1")
    assert second.packs_retired == 1 and second.packs_uploaded == 1
    now = entries(ctx, second.snapshot_id)
    assert not {e.get("pack") for e in now} & old_packs
    assert restore.verify_snapshot(ctx, wrapper(), "t-1", second.snapshot_id)["ok"]

    later = datetime.now(UTC) + timedelta(days=2)  # past the blobs' grace period
    report = prune.prune_tenant(ctx, wrapper(), "t-1",
                                RetentionPolicy(daily=1, weekly=0, monthly=0),
                                dry_run=False, now=later)
    assert report["keep"] == [second.snapshot_id]
    assert old_packs <= set(report["blobs_deleted"])  # the deleted documents' bytes are gone
    listing = {o["Key"] for o in platform.s3.list_objects_v2(
        Bucket=platform.backup_bucket, Prefix="backups/t-1/blobs/").get("Contents", [])}
    assert not {store.blob_key("t-1", p) for p in old_packs} & listing
    assert restore.verify_snapshot(ctx, wrapper(), "t-1", second.snapshot_id)["ok"]


def test_a_pack_that_fails_to_upload_commits_nothing(
        sqlite_platform: Platform, ctx: RunContext, monkeypatch: pytest.MonkeyPatch) -> None:
    add_documents(sqlite_platform)
    monkeypatch.setattr(backup_packs, "PACK_BYTES", 100_000)
    real_put, sent = backup_packs.layout.put, []

    def flaky_put(client: Any, bucket: str, key: str, *args: Any, **kwargs: Any) -> Any:
        sent.extend([key] if "/blobs/pack-" in key else [])
        if len(sent) == 3 and sent[-1] == key:
            raise StorageError(f"writing {key!r}: connection reset", tenant_id="t-1")
        return real_put(client, bucket, key, *args, **kwargs)

    monkeypatch.setattr(backup_packs.layout, "put", flaky_put)
    with pytest.raises(StorageError, match="connection reset"):
        backup.backup_tenant(ctx, wrapper(), "t-1")
    assert ctx.store.list_snapshots("t-1") == []  # no manifest: no snapshot
    monkeypatch.setattr(backup_packs.layout, "put", real_put)
    again = backup.backup_tenant(ctx, wrapper(), "t-1")  # the next run completes
    assert restore.verify_snapshot(ctx, wrapper(), "t-1", again.snapshot_id)["ok"]


@pytest.mark.parametrize("which", [0, -1], ids=["first", "last"])  # of the packed documents
def test_a_pack_changed_after_verify_restores_nothing(
        sqlite_platform: Platform, ctx: RunContext, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch, which: int) -> None:
    from tests.test_hardening_restore import restore_refused_at

    platform = sqlite_platform
    snapshot_id = backup.backup_tenant(ctx, wrapper(), "t-1").snapshot_id
    entry = [e for e in entries(ctx, snapshot_id) if e.get("pack")][which]
    victim = entry["storage_key"]
    real_verify = restore.verify_snapshot

    def verify_then_change(*args: Any, **kwargs: Any) -> dict[str, Any]:
        report = real_verify(*args, **kwargs)
        key = store.blob_key("t-1", entry["pack"])  # between the check and the use
        data = bytearray(platform.s3.get_object(Bucket=platform.backup_bucket, Key=key)[
            "Body"].read())
        data[entry["pack_offset"] + entry["ciphertext_bytes"] - 1] ^= 1  # its last byte
        platform.s3.put_object(Bucket=platform.backup_bucket, Key=key, Body=bytes(data))
        return report

    monkeypatch.setattr(restore, "verify_snapshot", verify_then_change)
    restore_refused_at(platform, ctx, tmp_path, victim)


def test_packs_of_a_run_killed_before_its_manifest_are_pruned(
        sqlite_platform: Platform, ctx: RunContext, monkeypatch: pytest.MonkeyPatch) -> None:
    platform = sqlite_platform
    add_documents(platform)
    monkeypatch.setattr(backup_packs, "PACK_BYTES", 300_000)

    def killed(name: str) -> None:
        if name == "before-manifest":
            raise KeyboardInterrupt("killed")  # as a process stopped there

    monkeypatch.setattr(backup, "checkpoint", killed)
    with pytest.raises(KeyboardInterrupt):
        backup.backup_tenant(ctx, wrapper(), "t-1")
    prefix = "backups/t-1/blobs/pack-"
    left = [o["Key"] for o in platform.s3.list_objects_v2(
        Bucket=platform.backup_bucket, Prefix=prefix).get("Contents", [])]
    assert len(left) >= 3 and ctx.store.list_snapshots("t-1") == []
    monkeypatch.setattr(backup, "checkpoint", lambda name: None)
    done = backup.backup_tenant(ctx, wrapper(), "t-1")  # the next night trusts none of them
    assert done.packs_uploaded >= 3
    later = datetime.now(UTC) + timedelta(days=2)
    report = prune.prune_tenant(ctx, wrapper(), "t-1",
                                RetentionPolicy(daily=1, weekly=0, monthly=0),
                                dry_run=False, now=later)
    assert {k.rsplit("/", 1)[-1] for k in left} <= set(report["blobs_deleted"])
    kept = {e["pack"] for e in entries(ctx, done.snapshot_id) if e.get("pack")}
    assert not kept & set(report["blobs_deleted"])
    assert restore.verify_snapshot(ctx, wrapper(), "t-1", done.snapshot_id)["ok"]
