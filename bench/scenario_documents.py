"""1. Export of N small documents: ``tenant-export export`` against the operator's script
(``rclone copy --transfers 16`` to local disk, ``zip -0``, ``rclone copyto`` of the ZIP)."""

from __future__ import annotations

from bench import pipeline
from bench.context import OPERATOR_BUCKET, Bench, Step
from bench.platforms import Size
from bench.report import Check, Section, ratio_text

TARGET_RATIO = 1.2
TARGET_AT = 10_000


def documents_size(bench: Bench) -> Size:
    """The documents tenant of scenarios 1 and 3 (and the large end of the memory axis)."""
    return Size(rows=bench.opts.doc_rows, documents=bench.opts.documents,
                blob_bytes=bench.opts.doc_bytes)


def our_export(bench: Bench, size: Size, name: str) -> Step:
    """Our export of the documents tenant (catalog: every table skipped but tenants and
    documents), end to end through the CLI."""
    info = bench.platform("sqlite", size)
    target = bench.target(info, name, catalog="documents")
    return bench.measure(name, pipeline.export_command(info.tenant), target.env(bench.base_env))


def io_line(step: Step, documents: int | None) -> str:
    """Where the time of one of our runs went, from the proxy's view of it."""
    per = (f" = {step.s3.total / max(documents, 1):.2f} per document"
           if documents is not None else "")
    parts = [f"{step.s3.total:,} requests{per} ({step.s3.top_ops()})"]
    if step.startup_s is not None:
        parts.append(f"start-up to the first S3 request {step.startup_s:.1f} s")
    inflight = step.in_flight()
    if inflight is not None and step.io_span_s:
        parts.append(f"first to last request {step.io_span_s:.1f} s, "
                     f"{inflight:.1f} requests in flight on average")
    parts.append(f"CPU {step.measured.cpu_s:.1f} s (emulator + proxy {step.emulator_cpu_s:.1f} s)")
    return "; ".join(parts)


def run(bench: Bench) -> Section:
    size = documents_size(bench)
    n = size.documents
    section = Section("documents", f"1. Export of {n:,} small documents "
                      f"(mean {size.doc_kib_text}), S3 at {bench.opts.latency_ms:g} ms")
    info = bench.platform("sqlite", size)
    ours = our_export(bench, size, "s1-ours-export")
    section.say(f"Tenant `{info.tenant}` of the reference platform (SQLite): {n:,} documents, "
                f"{info.blobs:,} blobs ({info.blob_bytes / 2**20:.1f} MiB; one document's blob "
                "is missing on purpose, one is empty). Ours: `tenant-export export` (CLI, end "
                "to end, Prefect server running) with a catalog that skips every table but "
                "`tenants` and `documents`.")
    rows: list[list[object]] = [["ours: tenant-export export", ours.wall_s, ours.measured.cpu_s,
                                 ours.measured.peak_rss_mib, ours.s3.total,
                                 ours.s3.total / n, ours.status()]]
    operator_s = None
    op = bench.operator
    if op is not None and bench.has("rclone", "zip"):
        mirror, archive = bench.work / "s1-mirror", bench.work / "s1-documents.zip"
        env = bench.op_env()
        steps = [bench.measure("s1-op-rclone-copy", op.rclone_download(
            info.documents_bucket, f"tenants/{info.tenant}/", mirror), env)]
        mirror.mkdir(exist_ok=True)
        steps.append(bench.measure("s1-op-zip", op.zip_stored(archive), env, cwd=mirror))
        steps.append(bench.measure("s1-op-upload", op.rclone_upload_file(
            archive, OPERATOR_BUCKET, f"s1/{info.tenant}/documents.zip"), env))
        labels = ["rclone copy --transfers 16 (to disk)", "zip -0", "rclone copyto (upload)"]
        for label, step in zip(labels, steps, strict=True):
            rows.append([f"operator: {label}", step.wall_s, step.measured.cpu_s,
                         step.measured.peak_rss_mib, step.s3.total, step.s3.total / n,
                         step.status()])
        operator_s = sum(s.wall_s for s in steps)
        requests = sum(s.s3.total for s in steps)
        rows.append(["operator: script total", operator_s,
                     sum(s.measured.cpu_s for s in steps), None, requests, requests / n,
                     "ok" if all(s.ok for s in steps) else "FAILED"])
    section.table(["measurement", "wall s", "cpu s", "peak RSS MiB", "S3 requests",
                   "requests/doc", "status"], rows)
    section.failures(ours)
    section.say(f"Ours: {io_line(ours, n)}.")
    if ours.ok:
        result = pipeline.parse_export(ours.measured.output())
        section.say(f"Ours wrote {result.summary()}.")
    if operator_s is None:
        section.check(Check(f"export of {n:,} documents vs the operator's script", 0, "x",
                            TARGET_RATIO, skipped="rclone or zip is not installed"))
        return section
    section.say(f"Ratio ours / operator's script: "
                f"{ratio_text(ours.wall_s, operator_s, lower_bound=ours.measured.timed_out)}.")
    section.check(Check(f"export of {n:,} documents, ours / operator's script",
                        ours.wall_s / operator_s, "x", TARGET_RATIO,
                        target=f"issue 10, at {TARGET_AT:,} documents; measured at {n:,}",
                        lower_bound=ours.measured.timed_out, failed=not ours.ok and
                        not ours.measured.timed_out))
    return section
