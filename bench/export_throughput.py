"""Export throughput and peak memory on a generated tenant, next to ``sqlite3 -csv`` and ``zip``.

A benchmark, not a test: it prints figures and checks nothing beyond each step succeeding.

    .venv/bin/python bench/export_throughput.py                      # ~1 min on 2 cores
    .venv/bin/python bench/export_throughput.py --rows 20000 --documents 10   # a few seconds

The parent process generates a SQLite platform database (tenant ``acme`` with ``--rows`` member
rows and ``--documents`` documents, tenant ``globex`` with a quarter of each, rows interleaved),
uploads the documents to a local S3 emulator (moto, run inside the parent) and then measures
each step in its own fresh child process, so every peak RSS belongs to one measurement only: an
export child reports its own ``VmHWM``; a native tool runs under GNU ``time`` (see
``run_measured`` for why the parent's rusage cannot be used). CPU time comes from ``wait4``.

- ``sqlite3 -csv``: the native tool dumping the tenant's ``tenants`` and ``members`` rows.
- ours, tables: ``flows.packaging.write_package`` then ``verify_package`` on a copy of the
  platform without its ``documents`` table, i.e. the same two tables as CSV on S3 (no Prefect).
- ours, documents: the same with a catalog that skips ``members``: the ZIP parts and index.
- ``zip -0`` / ``zip -1`` of the same blobs from local files (skipped if ``zip`` is missing).
- ours, full package at ``--rows`` and at a quarter of it (tenant ``globex``): peak RSS must not
  grow with the tenant's size.

S3 is a local emulator over HTTP on 127.0.0.1 sharing the machine's CPUs, so wall times of the
S3 steps include the emulator's own work; the ``cpu s`` column counts the export process alone.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sqlite3
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import common
import pyarrow as pa
from common import BIG_TENANT, DOCUMENTS_BUCKET, MIB, SMALL_TENANT, Measured, Platform, Row, ratio

from flows.context import RunContext
from flows.packaging import discard_package, verify_package, write_package
from kernel.ids import new_export_id
from kernel.settings import Settings

EXPORT_BUCKET = "bench-exports"

CATALOG_DOCUMENTS_ONLY = "[tables.members]\nskip = true\n"

SQLITE3_DUMP = """.headers on
.mode csv
.output {out}/tenants.csv
SELECT * FROM tenants WHERE id = '{tenant}' ORDER BY id;
.output {out}/members.csv
SELECT * FROM members WHERE tenant_id = '{tenant}' ORDER BY id;
.output stdout
"""


# -- the export child (runs in a fresh interpreter) --------------------------------------------


def child_export(tenant: str, result_path: Path) -> None:
    """Write, then verify, one package of ``tenant`` exactly as the flow does, minus Prefect."""
    ready = time.time()
    ctx = RunContext.open(Settings())
    try:
        opened, rss_opened = time.time(), common.peak_rss_kib()
        # pyarrow imports pandas on its first pa.array() of Python values: a one-off per process
        # (about 1 s when bytecode is not cached), timed apart from the export itself.
        pa.array([0], type=pa.int64())
        warmed = time.time()
        export_id = new_export_id()
        t0, cpu0, rss0 = common.now()
        records = write_package(ctx, tenant, export_id)
        t1, cpu1, rss1 = common.now()
        verify_package(ctx, tenant, export_id, records)
        t2, cpu2, rss2 = common.now()
        discard_package(ctx, tenant, export_id)  # keeps the emulator's store small; not timed
    finally:
        ctx.close()
    result = {
        "imported_at": ready, "open_s": opened - ready, "warmup_s": warmed - opened,
        "opened_rss_kib": rss_opened,
        "write_s": t1 - t0, "write_cpu_s": cpu1 - cpu0,
        "verify_s": t2 - t1, "verify_cpu_s": cpu2 - cpu1,
        "baseline_rss_kib": rss0, "after_write_rss_kib": rss1, "peak_rss_kib": rss2,
        "files": [{"path": r.path, "bytes": r.bytes, "rows": r.rows, "kind": r.kind}
                  for r in records],
    }
    result_path.write_text(json.dumps(result), encoding="utf-8")


@dataclass(frozen=True)
class ExportRun(common.ChildFigures):
    """What one export child reported, plus its process-level figures."""

    write_s: float
    write_cpu_s: float
    verify_s: float
    verify_cpu_s: float
    opened_rss_kib: int
    files: list[dict[str, Any]]

    def bytes_of(self, kind: str) -> int:
        return sum(int(f["bytes"]) for f in self.files if f["kind"] == kind)

    def rows_of(self, kind: str) -> int:
        return sum(int(f["rows"] or 0) for f in self.files if f["kind"] == kind)


def measure_export(tenant: str, env: dict[str, str], work: Path, name: str) -> ExportRun:
    """Run the export child for ``tenant`` and collect its figures."""
    process, data, spawned = common.run_child(__file__, ["--child-export", tenant], env, work, name)
    return ExportRun(process=process, write_s=data["write_s"], write_cpu_s=data["write_cpu_s"],
                     verify_s=data["verify_s"], verify_cpu_s=data["verify_cpu_s"],
                     baseline_rss_kib=data["baseline_rss_kib"],
                     peak_rss_kib=data["peak_rss_kib"],
                     import_s=data["imported_at"] - spawned, open_s=data["open_s"],
                     warmup_s=data["warmup_s"], opened_rss_kib=data["opened_rss_kib"],
                     files=data["files"])


def _blob_name(index: int, _key: str) -> str:
    """The local copy of a blob (for zip) is named after its position."""
    return f"{index:06d}.pdf"


# -- the benchmark -----------------------------------------------------------------------------


COLUMNS = common.Columns(label=36, seconds=8, cpu=7, rate=11, mibs=8, rss=9)


def run_benchmark(args: argparse.Namespace) -> None:
    """Generate the platform, run every measurement and print the table."""
    zip_tool = shutil.which("zip")
    sqlite_tool = common.require_sqlite3()
    common.in_work_dir("tenant-export-bench-", args.keep,
                lambda work, endpoint: _run(args, work, endpoint, sqlite_tool, zip_tool))


def _run(args: argparse.Namespace, work: Path, endpoint: str, sqlite_tool: str,
         zip_tool: str | None) -> None:
    started = time.perf_counter()
    client = common.s3_client(endpoint)
    buckets = (DOCUMENTS_BUCKET, EXPORT_BUCKET)
    plat = common.generate_platform(args, work, client, buckets, _blob_name, started)
    base_env = common.child_env(work, plat, {"TENANT_EXPORT_EXPORT_BUCKET": EXPORT_BUCKET})
    # Tables only: a copy of the platform without its documents table (a catalog may not skip
    # documents: exports refuse to drop them silently).
    tables_db = work / "tables-only.sqlite"
    shutil.copyfile(plat.db, tables_db)
    with sqlite3.connect(tables_db) as conn:
        conn.execute("DROP TABLE documents")
    catalog = work / "catalog-documents.toml"
    catalog.write_text(CATALOG_DOCUMENTS_ONLY, encoding="utf-8")
    env_for: dict[str, dict[str, str]] = {
        "full": base_env,
        "tables": {**base_env, "TENANT_EXPORT_SOURCE_URL": f"sqlite:///{tables_db}"},
        "documents": {**base_env, "TENANT_EXPORT_CATALOG": str(catalog)},
    }

    # (a) the native tool, same tenant, same tables, same order.
    out = work / "sqlite3-out"
    out.mkdir()
    script = work / "sqlite3-dump.sql"
    script.write_text(SQLITE3_DUMP.format(out=out, tenant=BIG_TENANT), encoding="utf-8")
    native = common.run_measured([sqlite_tool, "-csv", "-header", str(plat.db)], base_env,
                          work / "logs", "sqlite3", stdin=script)
    native_bytes = sum(p.stat().st_size for p in out.iterdir())
    big_rows = plat.rows[BIG_TENANT] + 1  # + its row in tenants

    # (b) our table path, (c) our documents path, then the full package at two sizes.
    tables = measure_export(BIG_TENANT, env_for["tables"], work, "ours-tables")
    docs = measure_export(BIG_TENANT, env_for["documents"], work, "ours-documents")
    full_big = measure_export(BIG_TENANT, env_for["full"], work, "ours-full-big")
    full_small = measure_export(SMALL_TENANT, env_for["full"], work, "ours-full-small")

    zips: list[tuple[str, Measured, int]] = []
    if zip_tool is not None:
        for level in ("-0", "-1"):
            target = work / f"zip{level}.zip"
            measured = common.run_measured(
                [zip_tool, level, "-q", "-r", str(target), str(plat.blobs_dir)], base_env,
                work / "logs", f"zip{level}")
            zips.append((f"zip {level} (local files)", measured, target.stat().st_size))
            target.unlink()

    doc_mib = plat.document_bytes[BIG_TENANT] / MIB
    table_rows = tables.rows_of("table")
    table_mib = tables.bytes_of("table") / MIB
    rows_out = [
        Row("sqlite3 -csv (tenants + members)", native.seconds, native.cpu_seconds, big_rows,
            native_bytes / MIB, native.peak_rss_kib),
        Row("ours tables: write CSV to S3", tables.write_s, tables.write_cpu_s, table_rows,
            table_mib, tables.peak_rss_kib),
        Row("ours tables: verify (read back)", tables.verify_s, tables.verify_cpu_s, None,
            table_mib, None),
        Row("ours documents: write ZIP + index", docs.write_s, docs.write_cpu_s, None, doc_mib,
            docs.peak_rss_kib),
        Row("ours documents: verify (read back)", docs.verify_s, docs.verify_cpu_s, None,
            docs.bytes_of("zip") / MIB, None),
        *[Row(label, m.seconds, m.cpu_seconds, None, doc_mib, m.peak_rss_kib)
          for label, m, _ in zips],
        Row("ours full package: write", full_big.write_s, full_big.write_cpu_s,
            full_big.rows_of("table"), (full_big.bytes_of("table") + full_big.bytes_of("zip")
                                        ) / MIB, full_big.peak_rss_kib),
        Row("ours full package: verify", full_big.verify_s, full_big.verify_cpu_s, None,
            (full_big.bytes_of("table") + full_big.bytes_of("zip")) / MIB, None),
    ]
    _print_report(args, plat, rows_out, native, tables, docs, zips, full_big, full_small,
                  native_bytes, time.perf_counter() - started)


def _print_report(args: argparse.Namespace, plat: Platform, rows_out: list[Row],
                  native: Measured, tables: ExportRun, docs: ExportRun,
                  zips: list[tuple[str, Measured, int]], full_big: ExportRun,
                  full_small: ExportRun, native_bytes: int, total_s: float) -> None:
    common.print_heading("tenant-export throughput", plat)
    print("NOTE: S3 here is a LOCAL EMULATOR (moto ThreadedMotoServer) over HTTP on 127.0.0.1,")
    print("      running in this benchmark's process on the same CPUs: wall times of our S3 writes")
    print("      and read-backs include the emulator's overhead. 'cpu s' counts our process alone.")
    print("      sqlite3 and zip write local files and compute no SHA-256.")
    print()
    print(f"  {'measurement':<36} {'wall s':>8} {'cpu s':>7} {'rows/s':>11} {'MiB/s':>8} "
          f"{'peak RSS':>9}")
    print(f"  {'':<36} {'':>8} {'':>7} {'':>11} {'':>8} {'MiB':>9}")
    for row in rows_out:
        print(common.fmt_row(row, COLUMNS))
    print()
    print("ratios:")
    print(f"  ours tables write / sqlite3 -csv: wall {ratio(tables.write_s, native.seconds)}, "
          f"cpu {ratio(tables.write_cpu_s, native.cpu_seconds)}; with verify: wall "
          f"{ratio(tables.write_s + tables.verify_s, native.seconds)}")
    print(f"  CSV bytes: ours {tables.bytes_of('table') / MIB:.1f} MiB (BLOB as base64), "
          f"sqlite3 -csv {native_bytes / MIB:.1f} MiB (BLOB raw)")
    for label, measured, size in zips:
        print(f"  ours documents write / {label.split(' (')[0]}: wall "
              f"{ratio(docs.write_s, measured.seconds)}, cpu "
              f"{ratio(docs.write_cpu_s, measured.cpu_seconds)} (archive {size / MIB:.1f} MiB, "
              f"ours {docs.bytes_of('zip') / MIB:.1f} MiB)")
    native_rss = ("n/a (GNU time not installed)" if native.peak_rss_kib is None
                  else ratio(tables.peak_rss_kib, native.peak_rss_kib))
    print(f"  ours tables peak RSS: {tables.peak_rss_kib / 1024:.0f} MiB = {native_rss} "
          f"sqlite3's; before the first row (interpreter, imports, RunContext): "
          f"{tables.baseline_rss_kib / 1024:.0f} MiB")
    cache = common.bytecode_note()
    print(f"  per export process, untimed above: start + imports {tables.import_s:.1f} s, "
          f"RunContext.open {tables.open_s:.2f} s, pyarrow's lazy pandas import "
          f"{tables.warmup_s:.1f} s and "
          f"+{(tables.baseline_rss_kib - tables.opened_rss_kib) / 1024:.0f} MiB{cache}")
    print()
    print("bounded memory (full package: every table + documents, write + verify, fresh process):")
    for tenant, run in ((BIG_TENANT, full_big), (SMALL_TENANT, full_small)):
        data_mib = (run.bytes_of("table") + run.bytes_of("zip")) / MIB
        print(f"  {tenant:<7} {plat.rows[tenant]:>10,} rows {plat.documents[tenant]:>5} documents: "
              f"package {data_mib:>7.1f} MiB, peak RSS {run.peak_rss_kib / 1024:>4.0f} MiB "
              f"(baseline {run.baseline_rss_kib / 1024:.0f} MiB, +"
              f"{(run.peak_rss_kib - run.baseline_rss_kib) / 1024:.0f} MiB while exporting), "
              f"write {run.write_s:.1f} s, verify {run.verify_s:.1f} s")
    common.print_growth(plat, full_big.peak_rss_kib, full_small.peak_rss_kib)
    common.print_total(args, total_s)


def main(argv: list[str] | None = None) -> int:
    """Entry point: the benchmark, or one measured child when ``--child-export`` is given."""
    parser = common.size_parser(__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--child-export", metavar="TENANT", help=argparse.SUPPRESS)
    parser.add_argument("--child-result", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child_export:
        child_export(args.child_export, args.child_result)
        return 0
    return common.run_main(parser, args, run_benchmark)


if __name__ == "__main__":
    sys.exit(main())
