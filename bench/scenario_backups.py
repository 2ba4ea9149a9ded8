"""3. Backups, three nights: full, unchanged, 1 % of documents and 1 % of rows changed.

Ours: ``tenant-export backup TENANT``. The operator's pair: ``rclone copy --transfers 16`` of
the documents to disk and a ``sqlite3 -csv`` dump of the tenant's tables next to them, then
``restic backup`` of that folder to the same S3 endpoint (through the same proxy). "restic
alone" is the last step by itself: what restic costs once the data is on local disk.
"""

from __future__ import annotations

from dataclasses import dataclass

from bench import pipeline, platforms
from bench.context import Bench, PlatformInfo, Step
from bench.report import Check, Section, ratio_text
from bench.scenario_documents import documents_size, io_line

RESTIC_BUCKET = "restic-nightly"
BACKUP_RUN = "s3-backup"
CHANGED = 0.01


@dataclass
class Night:
    label: str
    ours: Step
    pair: list[tuple[str, Step]]

    @property
    def pair_s(self) -> float:
        return sum(step.wall_s for _, step in self.pair)

    @property
    def pair_requests(self) -> int:
        return sum(step.s3.total for _, step in self.pair)

    @property
    def restic(self) -> Step | None:
        return next((step for what, step in self.pair if what.startswith("restic")), None)


def _pair(bench: Bench, info: PlatformInfo, label: str) -> list[tuple[str, Step]]:
    op = bench.operator
    if op is None or info.db_path is None or not bench.has("rclone", "restic", "sqlite3"):
        return []
    mirror = bench.work / "s3-mirror"
    (mirror / "tables").mkdir(parents=True, exist_ok=True)
    env = bench.op_env(restic_repo=RESTIC_BUCKET, restic_cache=bench.work / "restic-cache")
    script = bench.work / "s3-dump.sql"
    script.write_text(op.sqlite_script(platforms.tenant_queries(info.tenant, "sqlite"),
                                       mirror / "tables"), encoding="utf-8")
    return [
        ("rclone copy --transfers 16", bench.measure(
            f"s3-{label}-rclone", op.rclone_download(info.documents_bucket,
                                                     f"tenants/{info.tenant}/",
                                                     mirror / "documents"), env)),
        ("sqlite3 -csv dump", bench.measure(f"s3-{label}-sqlite3",
                                            op.sqlite_command(info.db_path), env, stdin=script)),
        ("restic backup", bench.measure(f"s3-{label}-restic", op.restic_backup(mirror), env)),
    ]


def _night(bench: Bench, info: PlatformInfo, env: dict[str, str], label: str) -> Night:
    ours = bench.measure(f"s3-{label}-ours", pipeline.backup_command(info.tenant), env)
    return Night(label, ours, _pair(bench, info, label))


def _ours_bytes(step: Step) -> int:
    return step.s3.uploaded(f"bak-{BACKUP_RUN}")


def run(bench: Bench) -> Section:
    size = documents_size(bench)
    info = bench.platform("sqlite", size)
    n = size.documents
    section = Section("backups", f"3. Backups of {n:,} documents and {info.rows:,} rows: "
                      f"full, unchanged and 1 % night, S3 at {bench.opts.latency_ms:g} ms")
    section.say(f"Tenant `{info.tenant}` (SQLite reference platform): {n:,} documents "
                f"({info.blob_bytes / 2**20:.1f} MiB) and {info.rows:,} rows. The changed "
                f"night: {CHANGED:.0%} of the tenant's documents overwritten with new bytes, and "
                f"{CHANGED:.0%} of the rows of every table with an editable text column updated "
                f"({bench.opts.row_changes}: "
                + ("the newest rows by primary key" if bench.opts.row_changes == "recent"
                   else "rows spread over each table") + ").")
    env = bench.target(info, BACKUP_RUN).env(bench.base_env)
    if bench.operator is not None and bench.has("restic"):
        bench.s3.create_buckets(RESTIC_BUCKET)
        bench.measure("s3-restic-init", bench.operator.restic_init(), bench.op_env(
            restic_repo=RESTIC_BUCKET, restic_cache=bench.work / "restic-cache"))

    nights = [_night(bench, info, env, "full")]
    full_bytes_step = nights[0].ours
    if not nights[0].ours.ok:  # later nights need a full snapshot: make one without latency
        section.say(f"Ours, full night: {nights[0].ours.status()}; a full snapshot was then "
                    "made with the proxy's latency at 0 ms (not timed) so the next nights "
                    "could be measured; its bytes are the full night's below.")
        bench.set_latency(0)
        full_bytes_step = bench.measure("s3-full-ours-setup", pipeline.backup_command(
            info.tenant), env, timeout=max(bench.opts.step_timeout, 1800))
        bench.set_latency(bench.opts.latency_ms)
    nights.append(_night(bench, info, env, "unchanged"))
    rows_changed = platforms.change_rows(info.db_path, info.tenant, CHANGED,
                                         bench.opts.row_changes) if info.db_path else {}
    docs_changed, docs_bytes = platforms.change_documents(
        bench.s3.client(), info.documents_bucket, info.platform, info.tenant, CHANGED)
    nights.append(_night(bench, info, env, "changed"))
    section.say(f"Changed for the third night: {docs_changed} document(s) "
                f"({docs_bytes / 1024:.0f} KiB) and {sum(rows_changed.values()):,} rows in "
                f"{len(rows_changed)} tables.")

    full_ours = _ours_bytes(full_bytes_step) or 1
    full_restic = nights[0].restic.s3.uploaded(RESTIC_BUCKET) if nights[0].restic else 0
    rows: list[list[object]] = []
    for night in nights:
        ours_b = _ours_bytes(night.ours)
        rows.append([f"{night.label}: ours", night.ours.wall_s, night.ours.measured.cpu_s,
                     night.ours.measured.peak_rss_mib, night.ours.s3.total,
                     night.ours.s3.total / n, ours_b / 2**20, f"{ours_b / full_ours:.1%}",
                     night.ours.status()])
        for what, step in night.pair:
            up = step.s3.uploaded(RESTIC_BUCKET)
            share = f"{up / full_restic:.1%}" if what.startswith("restic") and full_restic else ""
            rows.append([f"{night.label}: {what}", step.wall_s, step.measured.cpu_s,
                         step.measured.peak_rss_mib, step.s3.total, step.s3.total / n,
                         up / 2**20 if what.startswith("restic") else None, share,
                         step.status()])
        if night.pair:
            rows.append([f"{night.label}: operator's pair (total)", night.pair_s, None, None,
                         night.pair_requests, night.pair_requests / n, None, "",
                         "ok" if all(s.ok for _, s in night.pair) else "FAILED"])
    section.table(["night: who", "wall s", "cpu s", "peak RSS MiB", "S3 requests",
                   "requests/doc", "MiB uploaded", "of full night", "status"], rows)
    for night in nights:
        section.failures(night.ours, *(step for _, step in night.pair))
        section.say(f"Ours, {night.label} night: {io_line(night.ours, n)}.")
        if night.pair:
            restic_s = night.restic.wall_s if night.restic else 0.0
            section.say(f"  ratio ours / operator's pair: "
                        f"{ratio_text(night.ours.wall_s, night.pair_s)}; ours / restic alone: "
                        f"{ratio_text(night.ours.wall_s, restic_s)}")
    _checks(section, nights, n, full_ours)
    return section


def _checks(section: Section, nights: list[Night], n: int, full_ours: int) -> None:
    full, unchanged, changed = nights
    at = f"issue 10; measured at {n:,} documents"
    if full.pair:
        section.check(Check("full backup, ours / operator's pair (rclone copy + dump + restic)",
                            full.ours.wall_s / full.pair_s, "x", 1.0, target=at,
                            lower_bound=full.ours.measured.timed_out,
                            failed=not full.ours.ok and not full.ours.measured.timed_out))
    else:
        section.check(Check("full backup vs the operator's pair", 0, "x", 1.0,
                            skipped="rclone, restic or sqlite3 is not installed"))
    section.check(Check("unchanged night, ours: S3 requests per document",
                        unchanged.ours.s3.total / n, " req/doc", 0.01, target=at,
                        failed=not unchanged.ours.ok))
    if unchanged.restic is not None:
        section.check(Check("unchanged night, ours / restic backup alone",
                            unchanged.ours.wall_s / unchanged.restic.wall_s, "x", 1.0,
                            target=at, lower_bound=unchanged.ours.measured.timed_out,
                            failed=not unchanged.ours.ok
                            and not unchanged.ours.measured.timed_out))
    else:
        section.check(Check("unchanged night vs restic", 0, "x", 1.0,
                            skipped="restic is not installed"))
    section.check(Check("1 % night, ours: bytes uploaded / full night's",
                        _ours_bytes(changed.ours) / full_ours * 100, " %", 5.0, target=at,
                        failed=not changed.ours.ok))
