"""2. CSV tables: ``tenant-export export`` of a tenant with many rows and few documents against
"native dump + upload": ``sqlite3 -csv`` or ``psql \\copy (SELECT ...) TO ... CSV`` of the
same tenant's rows (same tables, columns and order) and ``rclone copy`` of the files to S3."""

from __future__ import annotations

from bench import pipeline, platforms
from bench.context import OPERATOR_BUCKET, Bench, PlatformInfo, Step
from bench.platforms import Size
from bench.report import Check, Section, ratio_text
from bench.scenario_documents import io_line

TABLE_DOCUMENTS = 10
"""Documents of the tables tenant: a handful, so the export is about its tables."""
TARGET_RATIO = 1.0  # "at least 1.0x native dump + upload": ours takes at most as long


def tables_size(bench: Bench, rows: int | None = None) -> Size:
    return Size(rows=rows or bench.opts.rows, documents=TABLE_DOCUMENTS, blob_bytes=4096)


def our_export(bench: Bench, info: PlatformInfo, name: str) -> Step:
    target = bench.target(info, name)
    return bench.measure(name, pipeline.export_command(info.tenant), target.env(bench.base_env))


def _native(bench: Bench, info: PlatformInfo, name: str) -> list[tuple[str, Step]]:
    """The native dump of the tenant's tables, then the upload of the files."""
    op = bench.operator
    if op is None:
        return []
    out = bench.work / f"{name}-csv"
    out.mkdir(exist_ok=True)
    queries = list(platforms.tenant_queries(info.tenant, info.backend))
    env = bench.op_env()
    script = bench.work / f"{name}.sql"
    if info.backend == "sqlite":
        if info.db_path is None:
            return []
        script.write_text(op.sqlite_script(queries, out), encoding="utf-8")
        dump = bench.measure(f"{name}-sqlite3", op.sqlite_command(info.db_path), env,
                             stdin=script)
        label = "sqlite3 -csv (tenant's rows, every table)"
    else:
        script.write_text(op.psql_script(queries, out), encoding="utf-8")
        dump = bench.measure(f"{name}-psql", op.psql_command(info.source_url, script), env)
        label = "psql \\copy (SELECT ...) TO ... CSV"
    upload = bench.measure(f"{name}-upload", op.rclone_upload_dir(
        out, OPERATOR_BUCKET, f"{name}/{info.tenant}/"), env)
    return [(label, dump), ("rclone copy --transfers 16 (upload)", upload)]


def _one(bench: Bench, section: Section, info: PlatformInfo, label: str, tool: str) -> None:
    name = f"s2-{info.backend}"
    ours = our_export(bench, info, f"{name}-ours")
    rows: list[list[object]] = [[f"ours: tenant-export export ({label})", ours.wall_s,
                                 ours.measured.cpu_s, ours.measured.peak_rss_mib,
                                 ours.s3.total, None, ours.status()]]
    exported = None
    if ours.ok:
        exported = pipeline.parse_export(ours.measured.output())
        rows[0][5] = exported.bytes / 2**20
    native: list[tuple[str, Step]] = []
    if bench.has(tool, "rclone"):
        native = _native(bench, info, name)
    native_bytes = sum(p.stat().st_size for p in (bench.work / f"{name}-csv").glob("*.csv"))
    for what, step in native:
        rows.append([f"native: {what}", step.wall_s, step.measured.cpu_s,
                     step.measured.peak_rss_mib, step.s3.total,
                     native_bytes / 2**20 if "upload" not in what else None, step.status()])
    native_s = sum(step.wall_s for _, step in native)
    if native:
        rows.append(["native: dump + upload", native_s,
                     sum(step.measured.cpu_s for _, step in native), None,
                     sum(step.s3.total for _, step in native), None,
                     "ok" if all(step.ok for _, step in native) else "FAILED"])
    section.table(["measurement", "wall s", "cpu s", "peak RSS MiB", "S3 requests", "MiB out",
                   "status"], rows)
    section.failures(ours, *(step for _, step in native))
    if exported is not None:
        rate = exported.rows / ours.wall_s if ours.wall_s else 0
        section.say(f"Ours ({label}): {exported.rows:,} rows in CSV, {exported.summary()} "
                    f"(everything the export writes: CSV, any workbook, the documents, the "
                    f"guide, the single-download archive), {rate:,.0f} rows/s end to end; "
                    f"{io_line(ours, None)}.")
    what = f"CSV tables on {label}, {info.rows:,} rows: ours / native dump + upload"
    if not native:
        section.check(Check(what, 0, "x", TARGET_RATIO,
                            skipped=f"{tool} or rclone is not installed"))
        return
    section.say(f"Ratio ours / native dump + upload ({label}): "
                f"{ratio_text(ours.wall_s, native_s, lower_bound=ours.measured.timed_out)}.")
    section.check(Check(what, ours.wall_s / native_s, "x", TARGET_RATIO,
                        target="issue 10: at least the native speed",
                        lower_bound=ours.measured.timed_out,
                        failed=not ours.ok and not ours.measured.timed_out))


def run(bench: Bench) -> Section:
    size = tables_size(bench)
    section = Section("tables", f"2. CSV tables: about {size.rows:,} rows of one tenant, "
                      f"S3 at {bench.opts.latency_ms:g} ms")
    section.say("The reference platform's 20 content tables (awkward values included), two "
                "tenants of the same size with rows interleaved; the benchmarked tenant has "
                f"{TABLE_DOCUMENTS} documents. Native: the tenant's rows of every table (same "
                "columns, the catalog's exclusions applied, primary-key order, one "
                "transaction), then `rclone copy --transfers 16` of the CSV files.")
    _one(bench, section, bench.platform("sqlite", size), "SQLite", "sqlite3")
    if bench.postgres_url() is None:
        section.check(Check(f"CSV tables on PostgreSQL, {size.rows:,} rows", 0, "x",
                            TARGET_RATIO, skipped="no PostgreSQL server here (Debian package "
                            "postgresql) or it could not start"))
        return section
    _one(bench, section, bench.platform("postgresql", size), "PostgreSQL", "psql")
    return section
