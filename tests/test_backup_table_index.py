"""Format 7: a snapshot's table chunks are listed in a streamed table index, not inline in the
manifest, and a backup keeps what it knows of them on disk: its memory does not grow with the
number of chunks. Older snapshots stay readable and feed the next night."""

from __future__ import annotations

import json
import re
import sqlite3
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from flows import backup_packs, backup_tables, prune, restore
from flows.context import RunContext
from kernel.errors import VerificationFailed
from storage import backup_store as store
from storage.retention import RetentionPolicy
from storage.table_index import TableChunkIndex, encode, table_entries
from tests.conftest import Platform
from tests.snapshot_view import as_format, with_table_chunks
from tests.test_backup_chunks import (
    MEMBERS,
    add_members,
    assert_members_restored,
    read_manifest,
    wrapper,
)
from tests.test_backup_scale import run_backup

ROOT = str(Path(__file__).resolve().parent.parent)

# -- the index's lines, checked as they stream --------------------------------------------------


def chunk(blob: str, rows: int) -> dict[str, Any]:
    return {"blob": blob, "rows": rows, "plaintext_bytes": 10 * rows, "plaintext_sha256": "ab"}


TABLES = [{"name": "a", "rows": 5, "chunk_count": 2}, {"name": "empty", "rows": 0,
                                                       "chunk_count": 0},
          {"name": "b", "rows": 1, "chunk_count": 1}]


def numbered(*lines: bytes) -> list[tuple[int, bytes]]:
    return [(i + 1, line.rstrip(b"\n")) for i, line in enumerate(lines)]


def test_lines_come_back_with_their_table_in_order() -> None:
    lines = numbered(encode("a", chunk("1", 2)), encode("a", chunk("2", 3)),
                     encode("b", chunk("3", 1)))
    got = [(t["name"], e["blob"], e["rows"]) for t, e in table_entries(lines, TABLES, "idx")]
    assert got == [("a", "1", 2), ("a", "2", 3), ("b", "3", 1)]


@pytest.mark.parametrize(("lines", "message"), [
    ((encode("a", chunk("1", 2)), encode("b", chunk("3", 1))),
     "table 'a' has 1 chunk\\(s\\) of 2 row\\(s\\) in the index; the manifest says 2 of 5"),
    ((encode("a", chunk("1", 2)), encode("a", chunk("2", 3))),  # b's lines are gone
     "table 'b' has 0 chunk\\(s\\) of 0 row\\(s\\)"),
    ((encode("b", chunk("3", 1)), encode("a", chunk("1", 2)), encode("a", chunk("2", 3))),
     "table 'a' has 0 chunk\\(s\\)"),  # refused at the first line: 'a' was skipped
    ((encode("a", chunk("1", 2)), encode("a", chunk("2", 3)), encode("b", chunk("3", 1)),
      encode("a", chunk("4", 1))),
     "line 4 names table 'a', which the manifest does not list at that place"),
    ((encode("a", chunk("1", 2)), encode("a", chunk("2", 4)), encode("b", chunk("3", 1))),
     "table 'a' has 2 chunk\\(s\\) of 6 row\\(s\\)"),
    ((encode("a", chunk("1", 2)), encode("stranger", chunk("2", 3))),
     "names table 'stranger'"),
    ((b'{"table": "a", "blob": "1", "rows": -2, "plaintext_bytes": 1, '
      b'"plaintext_sha256": "x"}',), "line 1 is not a table chunk entry"),
    ((b'{"table": "a", "blob": "1", "rows": true, "plaintext_bytes": 1, '
      b'"plaintext_sha256": "x"}',), "line 1 is not a table chunk entry"),
    ((b"[1, 2]",), "line 1 is not a table chunk entry"),
    ((b"{not json",), "line 1 is not JSON"),
])
def test_an_index_that_disagrees_with_its_manifest_is_refused(lines: tuple[bytes, ...],
                                                              message: str) -> None:
    with pytest.raises(VerificationFailed, match=message):
        list(table_entries(numbered(*lines), TABLES, "idx"))


@pytest.mark.parametrize(("tables", "message"), [
    ([*TABLES, {"name": "a", "rows": 0, "chunk_count": 0}], "lists a table name twice"),
    ([{**TABLES[0], "chunk_count": True}, *TABLES[1:]], "table 'a' has"),
])
def test_a_manifest_that_is_not_a_plain_table_list_is_refused(tables: list[dict[str, Any]],
                                                              message: str) -> None:
    lines = numbered(encode("a", chunk("1", 2)), encode("a", chunk("2", 3)),
                     encode("b", chunk("3", 1)))
    with pytest.raises(VerificationFailed, match=message):
        list(table_entries(lines, tables, "idx"))


def test_tables_are_served_in_any_order_and_interleaved() -> None:
    pairs = [(TABLES[0], chunk(f"a{i}", 1)) for i in range(3000)] + [
        (TABLES[2], {**chunk("b0", 1), "note": "é" * 100})]
    with TableChunkIndex(pairs) as index:
        b, a = index.chunks("b"), index.chunks("a")
        assert next(a)["blob"] == "a0"
        assert [e["blob"] for e in b] == ["b0"]
        assert [e["blob"] for e in a] == [f"a{i}" for i in range(1, 3000)]
        assert list(index.chunks("empty")) == [] == list(index.chunks("absent"))


# -- a backup's memory does not grow with its chunks --------------------------------------------


MEASURED_BACKUP = """
import json, tracemalloc
from flows import backup, backup_packs, backup_tables
from flows.context import RunContext
from kernel.settings import Settings
from storage.keys import parse_master_key

backup_tables.MAX_CHUNK_ROWS = 2  # many chunks from few rows
backup_packs.PACK_BYTES = 256 * 1024  # both nights fill their packs: the bound, not the size
held = []
backup.checkpoint = lambda name: (held.append(tracemalloc.get_traced_memory()[0])
                                  if name == "before-manifest" else None)
ctx = RunContext.open(Settings())
try:
    tracemalloc.start()  # after the imports: what the backup itself allocates
    summary = backup.backup_tenant(ctx, parse_master_key(Settings().master_key_value()), "t-1")
    peak = tracemalloc.get_traced_memory()[1]
finally:
    tracemalloc.stop()
    ctx.close()
print(json.dumps({"held": held[0], "peak": peak, "members": summary.tables["members"],
                  "snapshot_id": summary.snapshot_id}))
"""


def measured_backup() -> dict[str, Any]:
    """One backup in a process of its own (the S3 emulator runs in the test's): the Python
    objects it allocated and still holds just before it writes its manifest, and its peak."""
    done = subprocess.run([sys.executable, "-c", MEASURED_BACKUP], cwd=ROOT, check=False,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def test_a_backup_holds_no_entry_per_table_chunk(sqlite_platform: Platform, ctx: RunContext,
                                                 tmp_path: Path) -> None:
    """Chunks of two rows: 500 then 2,500 chunks of members. Until format 6 the backup held an
    entry per chunk (about 1.3 KiB each) until it wrote the manifest; now they wait on disk,
    and what the manifest lists grows by one index chunk per ~32 table chunks only."""
    add_members(sqlite_platform, 1_000)
    first = measured_backup()
    add_members(sqlite_platform, 4_000, start=1_000)
    second = measured_backup()
    print(f"\nPython objects held before the manifest / peak: {first['members']} members "
          f"{first['held'] / 1024:.0f} / {first['peak'] / 1024:.0f} KiB, {second['members']} "
          f"members {second['held'] / 1024:.0f} / {second['peak'] / 1024:.0f} KiB")
    assert second["members"] >= 5 * first["members"] - 100
    for figure in ("held", "peak"):  # format 6: 1.3 KiB more per chunk, both figures
        assert second[figure] < first[figure] + 1024 * 1024, (figure, first, second)
    described = read_manifest(ctx, second["snapshot_id"])
    (members,) = [t for t in described["tables"] if t["name"] == "members"]
    assert len(members["chunks"]) == members["chunk_count"] >= second["members"] / 2
    assert_members_restored(ctx, second["snapshot_id"], members["rows"],
                            sqlite_platform.source_url.removeprefix("sqlite:///"),
                            tmp_path / "restored.sqlite")


# -- older snapshots ------------------------------------------------------------------------------


def test_a_format_6_snapshot_restores_and_the_next_night_reuses_its_chunks(
        sqlite_platform: Platform, ctx: RunContext, tmp_path: Path) -> None:
    add_members(sqlite_platform, MEMBERS // 4)
    old = run_backup()
    keys = ctx.store.data_key(wrapper(), "t-1", create=False)
    inline = as_format(ctx.store, keys, "t-1", old.snapshot_id, 6)
    assert "table_index" not in ctx.store.read_manifest(keys, "t-1", old.snapshot_id)
    db = sqlite_platform.source_url.removeprefix("sqlite:///")
    rows = old.tables["members"]
    assert_members_restored(ctx, old.snapshot_id, rows, db, tmp_path / "old.sqlite")

    new = run_backup()  # nothing changed: every table chunk is the format-6 snapshot's
    described = ctx.store.read_manifest(keys, "t-1", new.snapshot_id)
    assert described["version"] == 7 and all(t["uploaded_bytes"] == 0
                                             for t in described["tables"])
    now = with_table_chunks(ctx.store, keys, "t-1", described)["tables"]
    assert [t["chunks"] for t in now] == [t["chunks"] for t in inline["tables"]]
    assert [t["chunk_count"] for t in now] == [len(t["chunks"]) for t in inline["tables"]]
    for snapshot_id in (old.snapshot_id, new.snapshot_id):
        assert restore.verify_snapshot(ctx, wrapper(), "t-1", snapshot_id)["ok"]
        assert_members_restored(ctx, snapshot_id, rows, db,
                                tmp_path / f"{uuid.uuid4().hex[:6]}.sqlite")


def test_a_manifest_whose_counts_disagree_with_its_table_index_is_refused(
        sqlite_platform: Platform, ctx: RunContext, tmp_path: Path) -> None:
    add_members(sqlite_platform, 500)
    snapshot_id = run_backup().snapshot_id
    keys = ctx.store.data_key(wrapper(), "t-1", create=False)
    described = ctx.store.read_manifest(keys, "t-1", snapshot_id)
    (members,) = [t for t in described["tables"] if t["name"] == "members"]
    members["chunk_count"] -= 1  # a manifest that lost a chunk: its rows would be missing
    ctx.store.write_manifest(keys, "t-1", snapshot_id, described)
    target = tmp_path / "r.sqlite"
    with pytest.raises(VerificationFailed, match=r"table 'members' has .* chunk"):
        restore.restore_snapshot(ctx, wrapper(), "t-1", f"sqlite:///{target}")
    assert not target.exists()


# -- a damaged or missing table index ------------------------------------------------------------


def flip_a_byte(platform: Platform, entry: dict[str, Any]) -> None:
    """One byte of an index chunk's sealed bytes changed where it is stored (its pack)."""
    key = store.blob_key("t-1", entry.get("pack") or entry["blob"])
    body = bytearray(platform.s3.get_object(Bucket=platform.backup_bucket, Key=key)["Body"]
                     .read())
    body[(entry.get("pack_offset") or 0) + 60] ^= 1
    platform.s3.put_object(Bucket=platform.backup_bucket, Key=key, Body=bytes(body))


def test_a_damaged_table_index_fails_verify_and_restore_before_anything_is_written(
        sqlite_platform: Platform, ctx: RunContext, tmp_path: Path) -> None:
    add_members(sqlite_platform, 500)
    snapshot_id = run_backup().snapshot_id
    keys = ctx.store.data_key(wrapper(), "t-1", create=False)
    flip_a_byte(sqlite_platform,
                ctx.store.read_manifest(keys, "t-1", snapshot_id)["table_index"]["chunks"][0])
    with pytest.raises(VerificationFailed, match="x00000"):
        restore.verify_snapshot(ctx, wrapper(), "t-1", snapshot_id)
    target = tmp_path / "r.sqlite"
    with pytest.raises(VerificationFailed, match="x00000"):
        restore.restore_snapshot(ctx, wrapper(), "t-1", f"sqlite:///{target}")
    assert not target.exists()


def test_a_version_7_manifest_without_its_table_index_is_refused(
        sqlite_platform: Platform, ctx: RunContext) -> None:
    snapshot_id = run_backup().snapshot_id
    keys = ctx.store.data_key(wrapper(), "t-1", create=False)
    described = ctx.store.read_manifest(keys, "t-1", snapshot_id)
    del described["table_index"]
    ctx.store.write_manifest(keys, "t-1", snapshot_id, described)
    with pytest.raises(VerificationFailed, match=f"the table index of snapshot {snapshot_id}: "
                                                 "the manifest does not describe it"):
        restore.verify_snapshot(ctx, wrapper(), "t-1", snapshot_id)


@pytest.mark.parametrize("index", ["table_index", "documents"])
def test_a_damaged_previous_index_costs_a_full_night_not_every_later_backup(
        index: str, sqlite_platform: Platform, ctx: RunContext, tmp_path: Path) -> None:
    """The previous snapshot's index fails its checks: the next night says so, reuses nothing
    (what the index vouched for is not trusted), and its own snapshot is whole."""
    add_members(sqlite_platform, 500)
    first = run_backup()
    keys = ctx.store.data_key(wrapper(), "t-1", create=False)
    flip_a_byte(sqlite_platform,
                ctx.store.read_manifest(keys, "t-1", first.snapshot_id)[index]["chunks"][0])
    second = run_backup()
    assert any(first.snapshot_id in w and "stores every chunk and document again" in w
               for w in second.warnings), second.warnings
    described = ctx.store.read_manifest(keys, "t-1", second.snapshot_id)
    assert all(t["uploaded_bytes"] > 0 for t in described["tables"] if t["rows"])
    assert second.blobs_uploaded == first.blobs_uploaded > 0  # every document read again
    assert restore.verify_snapshot(ctx, wrapper(), "t-1", second.snapshot_id)["ok"]
    assert_members_restored(ctx, second.snapshot_id, second.tables["members"],
                            sqlite_platform.source_url.removeprefix("sqlite:///"),
                            tmp_path / "restored.sqlite")
    third = run_backup()  # and the night after reuses the second's as usual
    assert not third.warnings and third.blobs_uploaded == 0


def test_packs_of_the_table_index_mostly_unused_are_rewritten(
        sqlite_platform: Platform, ctx: RunContext, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Small packs, two-row chunks: deleting most rows leaves the first night's index packs
    mostly unused; the second night rewrites them (its own series), and the snapshot still
    verifies, restores and feeds a third night after prune."""
    monkeypatch.setattr(backup_tables, "MAX_CHUNK_ROWS", 2)
    monkeypatch.setattr(backup_packs, "PACK_BYTES", 48 * 1024)
    add_members(sqlite_platform, 3_000)
    db = sqlite_platform.source_url.removeprefix("sqlite:///")
    first = run_backup()
    keys = ctx.store.data_key(wrapper(), "t-1", create=False)
    old = {c["pack"] for c in ctx.store.read_manifest(keys, "t-1", first.snapshot_id)[
        "table_index"]["chunks"]}
    assert len(old) >= 2 and all(re.search(r"-x\d+$", p) for p in old)
    with sqlite3.connect(db) as conn:
        conn.execute("DELETE FROM members WHERE id >= ?", (100_000 + 1_200,))
    second = run_backup()
    assert second.table_packs_retired >= 1
    now = {c["pack"] for c in ctx.store.read_manifest(keys, "t-1", second.snapshot_id)[
        "table_index"]["chunks"]}
    assert len(now & old) < len(old)  # some of the first night's index packs left behind
    prune.prune_tenant(ctx, wrapper(), "t-1", RetentionPolicy(daily=1, weekly=0, monthly=0),
                       dry_run=False, now=datetime.now(UTC) + timedelta(days=2))
    assert restore.verify_snapshot(ctx, wrapper(), "t-1", second.snapshot_id)["ok"]
    assert_members_restored(ctx, second.snapshot_id, second.tables["members"], db,
                            tmp_path / "restored.sqlite")
    third = run_backup()
    assert third.blobs_uploaded == 0 and restore.verify_snapshot(
        ctx, wrapper(), "t-1", third.snapshot_id)["ok"]
