"""Backup, verify and restore throughput and peak memory on a generated tenant, next to sqlite3.

A benchmark, not a test: it prints figures and checks nothing beyond each step succeeding and
the restored row counts matching the source.

    .venv/bin/python bench/backup_throughput.py                      # ~2 min on 2 cores
    .venv/bin/python bench/backup_throughput.py --rows 20000 --documents 10   # ~35 s

The parent process generates a SQLite platform database (tenant ``acme`` with ``--rows`` member
rows and ``--documents`` documents, tenant ``globex`` with a quarter of each, rows interleaved;
the same data set as ``bench/export_throughput.py``), uploads the documents to a local S3
emulator (moto, run inside the parent), generates a master key, and then measures each step in
its own fresh child process, so every peak RSS belongs to one measurement only: our children
report their own ``VmHWM``; a native tool runs under GNU ``time`` (see ``run_measured``).

- ours, full backup: ``flows.backup.backup_tenant`` (no Prefect, no lock), the first snapshot.
- ours, incremental backup after 1 % of the tenant's documents were overwritten in the
  documents bucket: bytes and blobs uploaded against the full backup.
- ours, verify: ``flows.restore.verify_snapshot`` (decrypts every object of the snapshot).
- ours, restore: ``flows.restore.restore_snapshot`` into a fresh SQLite file, tables only, and
  separately tables + documents into a new bucket; restored row counts checked against the
  source database.
- native: a tenant-scoped SQL dump by the ``sqlite3`` shell (``.mode insert``: the INSERT
  statements ``.dump`` writes, limited to the tenant's rows) and its restore with
  ``sqlite3 new.db < dump.sql``; ``tar -cf - | zstd`` of the same blobs and its extraction
  (skipped when ``zstd`` is not installed).
- ours, full backup of ``globex`` (a quarter of the size): peak RSS must not grow with size.

S3 is a local emulator over HTTP on 127.0.0.1 sharing the machine's CPUs, so wall times of the
S3 steps include the emulator's own work; the ``cpu s`` column counts our process alone.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import common
import pyarrow as pa
from common import (
    BIG_TENANT,
    DOCUMENTS_BUCKET,
    MIB,
    SMALL_TENANT,
    BenchError,
    Measured,
    Platform,
    Row,
    ratio,
)
from restored import check_restored, table_counts

from flows.backup import backup_tenant
from flows.context import RunContext, S3Context
from flows.restore import restore_snapshot, verify_snapshot
from kernel.settings import Settings
from storage.keys import KeyWrapper, generate_master_key, parse_master_key

BACKUP_BUCKET = "bench-backups"
RESTORE_BUCKET = "bench-restored-documents"
CHANGED_FRACTION = 0.01  # of the big tenant's documents, overwritten before the incremental

# A tenant-scoped logical dump: what `.dump` writes (CREATE TABLE, then INSERTs in one
# transaction), limited to the tenant's rows; tables only, no indexes, like our restore.
SQLITE3_DUMP = """.output {out}
.print PRAGMA foreign_keys=OFF;
.print BEGIN TRANSACTION;
.mode list
SELECT sql || ';' FROM sqlite_master WHERE type = 'table'
    AND name IN ('tenants', 'members', 'documents') ORDER BY rowid;
.mode insert tenants
SELECT * FROM tenants WHERE id = '{tenant}' ORDER BY id;
.mode insert members
SELECT * FROM members WHERE tenant_id = '{tenant}' ORDER BY id;
.mode insert documents
SELECT * FROM documents WHERE tenant_id = '{tenant}' ORDER BY id;
.print COMMIT;
.output stdout
"""

# Cheap content check of a restored members table against the source (exact integer sums;
# a BLOB restored as base64 text, or a number restored as text, changes the result).
# -- the measured children (each runs in a fresh interpreter) ----------------------------------


def snapshot_sizes(ctx: Any, wrapper: KeyWrapper, tenant: str, snapshot_id: str
                   ) -> dict[str, int]:
    """Sizes from the snapshot's manifest, and which blobs the snapshot before it lacked."""
    dek = ctx.store.data_key(wrapper, tenant, create=False)
    complete = ctx.store.list_snapshots(tenant)
    manifest = ctx.store.read_manifest(dek, tenant, snapshot_id)
    position = complete.index(snapshot_id)
    before: set[str] = set()
    if position > 0:
        older = ctx.store.read_manifest(dek, tenant, complete[position - 1])
        before = {d["blob"] for d in ctx.store.documents(dek, tenant, older) if d.get("blob")}
    entries = list(ctx.store.documents(dek, tenant, manifest))  # every format's index
    plain = {d["blob"]: int(d.get("plaintext_bytes") or 0) for d in entries if d.get("blob")}
    referenced = set(plain)
    new = referenced - before
    return {
        "tables_plain": sum(int(t["plaintext_bytes"]) for t in manifest["tables"]),
        "tables_cipher": sum(int(t["ciphertext_bytes"]) for t in manifest["tables"]),
        "blobs_plain": sum(plain[s] for s in referenced),
        "new_blobs_plain": sum(plain[s] for s in new),
        "blobs": len(referenced),
        "new_blobs": len(new),
        "documents": len(entries),
        "rows": sum(int(t["rows"]) for t in manifest["tables"]),
    }


def child_run(kind: str, tenant: str, result_path: Path, target: str | None,
              bucket: str | None) -> None:
    """One backup, verify or restore, exactly as the flows do it minus Prefect and the lock."""
    ready = time.time()
    settings = Settings()
    wrapper = parse_master_key(settings.master_key_value() or "")
    # verify and restore never touch the platform database (as in the flows)
    ctx: Any = RunContext.open(settings) if kind == "backup" else S3Context.open(settings)
    result: dict[str, Any] = {}
    try:
        opened, rss_opened = time.time(), common.peak_rss_kib()
        if kind == "backup":
            # pyarrow imports pandas on its first pa.array() of Python values: a one-off per
            # process (about 1 s without a bytecode cache), timed apart from the backup itself.
            pa.array([0], type=pa.int64())
        warmed = time.time()
        t0, cpu0, rss0 = common.now()
        if kind == "backup":
            summary = backup_tenant(ctx, wrapper, tenant)
            snapshot_id = summary.snapshot_id
            result.update(rows=summary.rows, documents=summary.documents,
                          documents_missing=summary.documents_missing,
                          blobs_uploaded=summary.blobs_uploaded,
                          bytes_uploaded=summary.bytes_uploaded, tables=summary.tables,
                          summary_seconds=summary.seconds)
        elif kind == "verify":
            report = verify_snapshot(ctx, wrapper, tenant)
            snapshot_id = report["snapshot_id"]
            result.update(objects=report["objects"], documents=report["documents"])
        elif kind == "restore":
            if target is None:
                raise BenchError("restore needs --child-target")
            report = restore_snapshot(ctx, wrapper, tenant, target, documents_bucket=bucket)
            snapshot_id = report["snapshot_id"]
            result.update(restored_rows=report["rows"],
                          documents_restored=report["documents_restored"])
        else:
            raise BenchError(f"unknown child kind {kind!r}")
        t1, cpu1, rss1 = common.now()
        result["sizes"] = snapshot_sizes(ctx, wrapper, tenant, snapshot_id)  # untimed
    finally:
        if isinstance(ctx, RunContext):
            ctx.close()
    result.update({
        "imported_at": ready, "open_s": opened - ready, "warmup_s": warmed - opened,
        "opened_rss_kib": rss_opened, "snapshot_id": snapshot_id,
        "op_s": t1 - t0, "op_cpu_s": cpu1 - cpu0,
        "baseline_rss_kib": rss0, "peak_rss_kib": rss1,
    })
    result_path.write_text(json.dumps(result), encoding="utf-8")


@dataclass(frozen=True)
class ChildRun(common.ChildFigures):
    """What one of our children reported, plus its process-level figures."""

    seconds: float
    cpu_seconds: float
    data: dict[str, Any]

    @property
    def sizes(self) -> dict[str, int]:
        sizes: dict[str, int] = self.data["sizes"]
        return sizes


def measure_child(kind: str, tenant: str, env: dict[str, str], work: Path, name: str,
                  target: str | None = None, bucket: str | None = None) -> ChildRun:
    """Run one child and collect its figures."""
    argv = ["--child", kind, "--child-tenant", tenant]
    if target is not None:
        argv += ["--child-target", target]
    if bucket is not None:
        argv += ["--child-bucket", bucket]
    print(f"  {name} ...", end="", flush=True)
    process, data, spawned = common.run_child(__file__, argv, env, work, name)
    print(f" {data['op_s']:.1f} s", flush=True)
    return ChildRun(process=process, seconds=data["op_s"], cpu_seconds=data["op_cpu_s"],
                    baseline_rss_kib=data["baseline_rss_kib"], peak_rss_kib=data["peak_rss_kib"],
                    import_s=data["imported_at"] - spawned, open_s=data["open_s"],
                    warmup_s=data["warmup_s"], data=data)


# -- the platform: documents, restored databases ---------------------------------------------


def local_name(storage_key: str) -> str:
    """The local copy of a blob (for tar) is named after its storage key."""
    return storage_key.replace("/", "_")


def _blob_name(_index: int, storage_key: str) -> str:
    return local_name(storage_key)


def change_documents(plat: Platform, client: Any) -> int:
    """Overwrite 1 % (at least one) of the big tenant's blobs with new bytes of the same size."""
    count = max(1, round(len(plat.big_keys) * CHANGED_FRACTION))
    step = len(plat.big_keys) / count
    for i in range(count):
        key = plat.big_keys[int(i * step)]
        path = plat.blobs_dir / local_name(key)
        blob = os.urandom(path.stat().st_size)
        client.put_object(Bucket=DOCUMENTS_BUCKET, Key=key, Body=blob)
        path.write_bytes(blob)
    return count


# -- the benchmark -----------------------------------------------------------------------------


COLUMNS = common.Columns(label=44, seconds=7, cpu=7, rate=10, mibs=7, rss=6, out=8)


@dataclass
class Results:
    """Everything measured, for the report."""

    full: ChildRun
    incremental: ChildRun
    verify: ChildRun
    restore_tables: ChildRun
    restore_all: ChildRun
    small: ChildRun
    changed: int
    restored_rows: int
    restored_docs: int
    dump: Measured
    dump_bytes: int
    dump_restore: Measured
    tar: Measured | None = None
    tar_bytes: int = 0
    untar: Measured | None = None
    warnings: list[str] = field(default_factory=list)


def run_benchmark(args: argparse.Namespace) -> None:
    """Generate the platform, run every measurement and print the table."""
    sqlite_tool = common.require_sqlite3()
    common.in_work_dir("tenant-backup-bench-", args.keep,
                lambda work, endpoint: _run(args, work, endpoint, sqlite_tool))


def _run(args: argparse.Namespace, work: Path, endpoint: str, sqlite_tool: str) -> None:
    started = time.perf_counter()
    client = common.s3_client(endpoint)
    buckets = (DOCUMENTS_BUCKET, BACKUP_BUCKET, RESTORE_BUCKET)
    plat = common.generate_platform(args, work, client, buckets, _blob_name, started)
    env = common.child_env(work, plat, {
        "TENANT_EXPORT_BACKUP_BUCKET": BACKUP_BUCKET,
        "TENANT_EXPORT_MASTER_KEY": generate_master_key(),  # this run's only, never stored
    })
    expected = table_counts(plat.db, BIG_TENANT)

    # ours: full backup, 1 % of the documents change, incremental, verify, restores.
    full = measure_child("backup", BIG_TENANT, env, work, "backup-full")
    changed = change_documents(plat, client)
    incremental = measure_child("backup", BIG_TENANT, env, work, "backup-incremental")
    verify = measure_child("verify", BIG_TENANT, env, work, "verify")
    warnings: list[str] = []
    target_tables = work / "restored-tables.sqlite"
    restore_tables = measure_child("restore", BIG_TENANT, env, work, "restore-tables",
                                   target=f"sqlite:///{target_tables}")
    restored_rows = check_restored("restore (tables)", target_tables, plat, expected, warnings)
    target_all = work / "restored-all.sqlite"
    restore_all = measure_child("restore", BIG_TENANT, env, work, "restore-all",
                                target=f"sqlite:///{target_all}", bucket=RESTORE_BUCKET)
    check_restored("restore (tables + documents)", target_all, plat, expected, warnings)
    restored = client.list_objects_v2(Bucket=RESTORE_BUCKET).get("Contents", [])
    restored_docs = len(restored)
    restored_bytes = sum(int(o["Size"]) for o in restored)
    if (restored_docs, restored_bytes) != (plat.documents[BIG_TENANT],
                                           plat.document_bytes[BIG_TENANT]):
        raise BenchError(f"restore (tables + documents): {restored_docs} objects, "
                         f"{restored_bytes} bytes in {RESTORE_BUCKET}; the source has "
                         f"{plat.documents[BIG_TENANT]}, {plat.document_bytes[BIG_TENANT]}")
    small = measure_child("backup", SMALL_TENANT, env, work, "backup-small")

    # native: tenant-scoped SQL dump and its restore; tar | zstd of the blobs and back.
    print("  native tools ...", flush=True)
    dump = work / "dump.sql"
    script = work / "sqlite3-dump.cmd"
    script.write_text(SQLITE3_DUMP.format(out=dump, tenant=BIG_TENANT), encoding="utf-8")
    dumped = common.run_measured([sqlite_tool, str(plat.db)], env, work / "logs", "sqlite3-dump",
                          stdin=script)
    native_db = work / "native-restored.sqlite"
    dump_restore = common.run_measured([sqlite_tool, str(native_db)], env, work / "logs",
                                "sqlite3-restore", stdin=dump)
    check_restored("sqlite3 < dump.sql", native_db, plat, expected, warnings)
    results = Results(full=full, incremental=incremental, verify=verify,
                      restore_tables=restore_tables, restore_all=restore_all, small=small,
                      changed=changed, restored_rows=restored_rows, restored_docs=restored_docs,
                      dump=dumped, dump_bytes=dump.stat().st_size, dump_restore=dump_restore,
                      warnings=warnings)
    zstd_tool, tar_tool = shutil.which("zstd"), shutil.which("tar")
    if zstd_tool is not None and tar_tool is not None:
        archive = work / "blobs.tar.zst"
        results.tar = common.run_measured(
            ["/bin/sh", "-c", f'"{tar_tool}" -cf - -C "{plat.blobs_dir}" . | "{zstd_tool}" -q '
             f'-o "{archive}"'], env, work / "logs", "tar-zstd")
        results.tar_bytes = archive.stat().st_size
        extracted = work / "native-restored-blobs"
        extracted.mkdir()
        results.untar = common.run_measured(
            ["/bin/sh", "-c", f'"{zstd_tool}" -q -d -c "{archive}" | "{tar_tool}" -xf - -C '
             f'"{extracted}"'], env, work / "logs", "zstd-untar")
    _print_report(args, plat, results, time.perf_counter() - started)


def _table(plat: Platform, r: Results) -> list[Row]:
    doc_mib = plat.document_bytes[BIG_TENANT] / MIB
    full, inc, ver = r.full, r.incremental, r.verify

    def backup_row(label: str, run: ChildRun) -> Row:
        s = run.sizes
        return Row(label, run.seconds, run.cpu_seconds, int(run.data["rows"]),
                   (s["tables_plain"] + s["new_blobs_plain"]) / MIB, run.peak_rss_kib,
                   int(run.data["bytes_uploaded"]) / MIB)

    def restore_row(label: str, run: ChildRun, with_docs: bool) -> Row:
        s = run.sizes
        plain = s["tables_plain"] + (s["blobs_plain"] if with_docs else 0)
        return Row(label, run.seconds, run.cpu_seconds, r.restored_rows, plain / MIB,
                   run.peak_rss_kib)

    rows = [
        backup_row("ours backup: full (first snapshot)", full),
        backup_row(f"ours backup: incremental ({r.changed} docs changed)", inc),
        Row("ours verify (decrypt every object)", ver.seconds, ver.cpu_seconds, None,
            (ver.sizes["tables_plain"] + ver.sizes["blobs_plain"]) / MIB, ver.peak_rss_kib),
        restore_row("ours restore: tables -> new SQLite", r.restore_tables, with_docs=False),
        restore_row("ours restore: tables + documents", r.restore_all, with_docs=True),
        Row("sqlite3 tenant dump (.mode insert)", r.dump.seconds, r.dump.cpu_seconds,
            r.restored_rows, r.dump_bytes / MIB, r.dump.peak_rss_kib, r.dump_bytes / MIB),
        Row("sqlite3 new.db < dump.sql", r.dump_restore.seconds, r.dump_restore.cpu_seconds,
            r.restored_rows, r.dump_bytes / MIB, r.dump_restore.peak_rss_kib),
    ]
    if r.tar is not None and r.untar is not None:
        rows += [
            Row("tar -cf - blobs | zstd (local files)", r.tar.seconds, r.tar.cpu_seconds, None,
                doc_mib, r.tar.peak_rss_kib, r.tar_bytes / MIB),
            Row("zstd -d | tar -x (local files)", r.untar.seconds, r.untar.cpu_seconds, None,
                doc_mib, r.untar.peak_rss_kib),
        ]
    return rows


def _print_report(args: argparse.Namespace, plat: Platform, r: Results, total_s: float) -> None:
    full, inc, ver = r.full, r.incremental, r.verify
    common.print_heading("tenant-export backup/restore", plat)
    print("NOTE: S3 here is a LOCAL EMULATOR (moto ThreadedMotoServer) over HTTP on 127.0.0.1,")
    print("      running in this benchmark's process on the same CPUs: wall times of our backups,")
    print("      verify and restores include the emulator's overhead; 'cpu s' counts our process")
    print("      alone. sqlite3, tar and zstd read and write local files; they encrypt, hash and")
    print("      read back nothing. Real S3 adds network latency per request (one HEAD per")
    print("      document per backup, one GET per 1 MiB segment of a restored table).")
    print()
    print(f"  {'measurement':<44} {'wall s':>7} {'cpu s':>7} {'rows/s':>10} {'MiB/s':>7} "
          f"{'RSS':>6} {'out MiB':>8}")
    for row in _table(plat, r):
        print(common.fmt_row(row, COLUMNS))
    print("  MiB/s: plaintext our process encrypted or decrypted (Parquet + document bytes; an")
    print("  incremental encrypts the tables and the changed documents only), the dump file's")
    print("  size for sqlite3, the blobs' size for tar/zstd. RSS: peak MiB of the process.")
    print("  out MiB: bytes uploaded (BackupSummary.bytes_uploaded) or written to a local file.")
    print("  Our restores verify the whole snapshot first (every object decrypted) and check")
    print("  counts and hashes after; 'rows' counts the three tables tenants+members+documents.")
    print("  Our restore creates bare columns (no PRIMARY KEY, NOT NULL, REFERENCES); the dump")
    print("  creates the tables as declared (no indexes in either).")
    print()
    fs, ins = full.sizes, inc.sizes
    print("incremental vs full backup:")
    print(f"  changed {r.changed} of {plat.documents[BIG_TENANT]} documents; blobs uploaded: "
          f"full {full.data['blobs_uploaded']}, incremental {inc.data['blobs_uploaded']}")
    print(f"  bytes uploaded: full {full.data['bytes_uploaded'] / MIB:.1f} MiB, incremental "
          f"{inc.data['bytes_uploaded'] / MIB:.1f} MiB = "
          f"{inc.data['bytes_uploaded'] / full.data['bytes_uploaded']:.1%} of the full; of which "
          f"tables (re-written every snapshot) {ins['tables_cipher'] / MIB:.1f} MiB, changed "
          f"documents {ins['new_blobs_plain'] / MIB:.1f} MiB")
    print(f"  wall: incremental {ratio(inc.seconds, full.seconds)} of the full; Parquet of "
          f"the tables {fs['tables_plain'] / MIB:.1f} MiB")
    print()
    print("ratios ours / native (wall, cpu):")
    print("  backup tables+documents / (sqlite3 dump + tar|zstd): ", end="")
    if r.tar is not None:
        print(f"{ratio(full.seconds, r.dump.seconds + r.tar.seconds)}, "
              f"{ratio(full.cpu_seconds, r.dump.cpu_seconds + r.tar.cpu_seconds)}")
    else:
        print("n/a (zstd not installed)")
    print(f"  backup / sqlite3 dump alone: {ratio(full.seconds, r.dump.seconds)}, "
          f"{ratio(full.cpu_seconds, r.dump.cpu_seconds)}; sizes: our tables "
          f"{fs['tables_cipher'] / MIB:.1f} MiB (Parquet zstd, encrypted), dump.sql "
          f"{r.dump_bytes / MIB:.1f} MiB"
          + (f", blobs.tar.zst {r.tar_bytes / MIB:.1f} MiB" if r.tar is not None else ""))
    print(f"  restore tables / sqlite3 < dump.sql: "
          f"{ratio(r.restore_tables.seconds, r.dump_restore.seconds)}, "
          f"{ratio(r.restore_tables.cpu_seconds, r.dump_restore.cpu_seconds)}")
    if r.untar is not None:
        native_cpu = r.dump_restore.cpu_seconds + r.untar.cpu_seconds
        print(f"  restore tables+documents / (sqlite3 < dump.sql + zstd -d | tar -x): "
              f"{ratio(r.restore_all.seconds, r.dump_restore.seconds + r.untar.seconds)}, "
              f"{ratio(r.restore_all.cpu_seconds, native_cpu)}")
    print(f"  verify: {ratio(ver.seconds, full.seconds)} of the full backup's wall")
    print()
    print(f"restore check: {r.restored_rows:,} rows restored = the source's "
          f"{BIG_TENANT!r} rows (tenants + members + documents), in both restores and the native "
          f"one; {r.restored_docs} documents in {RESTORE_BUCKET} (count and bytes as the source)")
    for warning in r.warnings:
        print(f"WARNING: {warning}")
    print(f"RTO input: restore of {BIG_TENANT!r} (tables + documents) {r.restore_all.seconds:.1f} s"
          f" in the process, {r.restore_all.process.seconds:.1f} s with process start; tables "
          f"only {r.restore_tables.seconds:.1f} s ({r.restore_tables.process.seconds:.1f} s)")
    cache = common.bytecode_note()
    print(f"per process, untimed above: start + imports {full.import_s:.1f} s (backup), "
          f"{r.restore_all.import_s:.1f} s (restore); RunContext.open {full.open_s:.2f} s; "
          f"pyarrow's lazy pandas import {full.warmup_s:.1f} s (backup only){cache}")
    print()
    print("bounded memory (full backup, first snapshot of each tenant, fresh process):")
    for tenant, run in ((BIG_TENANT, full), (SMALL_TENANT, r.small)):
        s = run.sizes
        data_mib = (s["tables_plain"] + s["blobs_plain"]) / MIB
        print(f"  {tenant:<7} {plat.rows[tenant]:>10,} rows {plat.documents[tenant]:>5} documents: "
              f"snapshot {data_mib:>7.1f} MiB plaintext, peak RSS {run.peak_rss_kib / 1024:>4.0f}"
              f" MiB (baseline {run.baseline_rss_kib / 1024:.0f} MiB, +"
              f"{(run.peak_rss_kib - run.baseline_rss_kib) / 1024:.0f} MiB while backing up), "
              f"backup {run.seconds:.1f} s")
    common.print_growth(plat, full.peak_rss_kib, r.small.peak_rss_kib)
    print(f"  verify peak RSS {ver.peak_rss_kib / 1024:.0f} MiB, restore "
          f"{r.restore_tables.peak_rss_kib / 1024:.0f} MiB (tables), "
          f"{r.restore_all.peak_rss_kib / 1024:.0f} MiB (tables + documents)")
    common.print_total(args, total_s)


def main(argv: list[str] | None = None) -> int:
    """Entry point: the benchmark, or one measured child when ``--child`` is given."""
    parser = common.size_parser(__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--child", choices=("backup", "verify", "restore"),
                        help=argparse.SUPPRESS)
    parser.add_argument("--child-tenant", help=argparse.SUPPRESS)
    parser.add_argument("--child-result", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--child-target", help=argparse.SUPPRESS)
    parser.add_argument("--child-bucket", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child_run(args.child, args.child_tenant, args.child_result, args.child_target,
                  args.child_bucket)
        return 0
    return common.run_main(parser, args, run_benchmark)


if __name__ == "__main__":
    sys.exit(main())
