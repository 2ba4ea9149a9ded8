"""4. Peak RSS of our export and backup processes at two sizes of a tenant, along two axes:
rows (few documents) and documents (the same rows). Runs already measured by scenarios 1-3
at a size are reused; the others are measured here, each in a fresh process (the CLI, end to
end: its peak includes the interpreter, Prefect and every library it loads)."""

from __future__ import annotations

from bench import pipeline
from bench.context import Bench, Step
from bench.platforms import Size
from bench.report import Check, Section
from bench.scenario_documents import documents_size
from bench.scenario_tables import tables_size

LIMIT_MIB = 256.0
GROWTH = 1.10


def _reuse(bench: Bench, *names: str) -> Step | None:
    for name in names:
        step = bench.results.get(name)
        if step is not None and step.ok:
            return step
    return None


def _export(bench: Bench, size: Size, catalog: str, name: str) -> Step:
    info = bench.platform("sqlite", size)
    target = bench.target(info, name, catalog=catalog)
    return bench.measure(name, pipeline.export_command(info.tenant), target.env(bench.base_env),
                         timeout=max(bench.opts.step_timeout, 900))


def _backup(bench: Bench, size: Size, name: str) -> Step:
    info = bench.platform("sqlite", size)
    target = bench.target(info, name)
    return bench.measure(name, pipeline.backup_command(info.tenant), target.env(bench.base_env),
                         timeout=max(bench.opts.step_timeout, 900))


def run(bench: Bench) -> Section:
    opts = bench.opts
    rows_small, rows_large = tables_size(bench, opts.rss_small_rows), tables_size(bench)
    docs_large = Size(opts.doc_rows, opts.rss_large_documents, opts.doc_bytes)
    docs_small = Size(opts.doc_rows, opts.rss_small_documents, opts.doc_bytes)
    s1_size = documents_size(bench)
    section = Section("memory", "4. Peak RSS of our processes at two tenant sizes")
    section.say("Peak RSS of the whole `tenant-export` process (`wait4`'s `ru_maxrss` under a "
                "small wrapper, so the benchmark's own memory is not inherited). Rows axis: "
                "the tables tenant of scenario 2 (few documents); documents axis: the "
                f"documents tenant of scenarios 1 and 3 ({opts.doc_rows:,} rows), export with "
                "the documents-only catalog. A backup here is a tenant's first (full) one.")
    cases = {
        ("export", "rows", rows_small): lambda: _export(bench, rows_small, "full",
                                                       "s4-export-rows-small"),
        ("export", "rows", rows_large): lambda: _reuse(bench, "s2-sqlite-ours") or _export(
            bench, rows_large, "full", "s4-export-rows-large"),
        ("backup", "rows", rows_small): lambda: _backup(bench, rows_small,
                                                       "s4-backup-rows-small"),
        ("backup", "rows", rows_large): lambda: _backup(bench, rows_large,
                                                       "s4-backup-rows-large"),
        ("export", "documents", docs_small): lambda: _export(bench, docs_small, "documents",
                                                            "s4-export-docs-small"),
        ("export", "documents", docs_large): lambda: (
            _reuse(bench, "s1-ours-export") if docs_large == s1_size else None) or _export(
            bench, docs_large, "documents", "s4-export-docs-large"),
        ("backup", "documents", docs_small): lambda: _backup(bench, docs_small,
                                                            "s4-backup-docs-small"),
        ("backup", "documents", docs_large): lambda: (
            _reuse(bench, "s3-full-ours", "s3-full-ours-setup") if docs_large == s1_size
            else None) or _backup(bench, docs_large, "s4-backup-docs-large"),
    }
    peaks: dict[tuple[str, str, Size], Step] = {key: make() for key, make in cases.items()}
    rows: list[list[object]] = []
    for (kind, axis, size), step in peaks.items():
        rows.append([f"{kind}, {axis} axis", f"{bench.platform('sqlite', size).rows:,}",
                     f"{size.documents:,}", step.measured.peak_rss_mib, step.wall_s,
                     step.measured.name, step.status()])
    section.table(["process", "rows", "documents", "peak RSS MiB", "wall s", "run", "status"],
                  rows)
    section.failures(*peaks.values())
    for kind in ("export", "backup"):
        for axis, small, large, unit in (("rows", rows_small, rows_large, "rows"),
                                         ("documents", docs_small, docs_large, "documents")):
            a, b = peaks[(kind, axis, small)], peaks[(kind, axis, large)]
            n_small = small.rows if axis == "rows" else small.documents
            n_large = large.rows if axis == "rows" else large.documents
            at = (f"issue 10: at 10,000,000 rows and 100,000 documents; measured at "
                  f"{n_large:,} {unit}")
            failed = not (a.measured.peak_rss_kib and b.measured.peak_rss_kib)
            stopped = a.measured.timed_out or b.measured.timed_out  # peaks not reached
            section.check(Check(f"{kind} peak RSS at {n_large:,} {unit}",
                                b.measured.peak_rss_mib, " MiB", LIMIT_MIB, target=at,
                                failed=failed, lower_bound=b.measured.timed_out))
            section.check(Check(
                f"{kind} peak RSS growth {n_small:,} -> {n_large:,} {unit}",
                b.measured.peak_rss_mib / max(a.measured.peak_rss_mib, 1), "x", GROWTH,
                target="issue 10: within 10 % of the 1M-row figure",
                failed=failed or stopped))
    return section
