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
import logging
import os
import platform
import resource
import secrets
import shutil
import signal
import socket
import sqlite3
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
import pyarrow as pa
from botocore.config import Config

from flows.backup import backup_tenant, data_key, list_snapshots, read_manifest
from flows.context import RunContext
from flows.restore import S3Context, restore_snapshot, verify_snapshot
from storage.keys import KeyWrapper, generate_master_key, parse_master_key
from storage.s3 import make_client
from tenant_export.settings import Settings

BIG_TENANT = "acme"
SMALL_TENANT = "globex"
DOCUMENTS_BUCKET = "bench-documents"
BACKUP_BUCKET = "bench-backups"
RESTORE_BUCKET = "bench-restored-documents"
CHANGED_FRACTION = 0.01  # of the big tenant's documents, overwritten before the incremental
CHILD_TIMEOUT_S = 900.0
MIB = 1024 * 1024
GNU_TIME = next((p for p in ("/usr/bin/time", "/bin/time") if os.access(p, os.X_OK)), None)
TABLES = ("tenants", "members", "documents")

SCHEMA_SQL = """
CREATE TABLE tenants (id TEXT PRIMARY KEY, name TEXT NOT NULL, created_at TEXT NOT NULL);
CREATE TABLE members (
    id INTEGER PRIMARY KEY,
    tenant_id TEXT NOT NULL REFERENCES tenants(id),
    email TEXT NOT NULL,
    display_name TEXT,
    age INTEGER,
    balance REAL,
    created_at TEXT NOT NULL,
    is_active INTEGER NOT NULL,
    notes TEXT,
    avatar_hash BLOB
);
CREATE INDEX members_tenant ON members(tenant_id);
CREATE TABLE documents (
    id INTEGER PRIMARY KEY,
    tenant_id TEXT NOT NULL REFERENCES tenants(id),
    filename TEXT NOT NULL,
    storage_key TEXT NOT NULL,
    bytes INTEGER NOT NULL,
    uploaded_at TEXT NOT NULL
);
CREATE INDEX documents_tenant ON documents(tenant_id);
"""

# Every fifth row belongs to the small tenant, so the big one's rows are spread over the file
# as in a real platform. Values: quotes, commas, CR/LF, non-ASCII, empty strings and NULLs.
MEMBERS_SQL = """
WITH RECURSIVE seq(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM seq WHERE n < :total)
INSERT INTO members (tenant_id, email, display_name, age, balance, created_at, is_active, notes,
                     avatar_hash)
SELECT
    CASE WHEN n % 5 = 0 THEN :small ELSE :big END,
    'user' || n || '@example.com',
    CASE n % 7
        WHEN 0 THEN 'Müller, Jürgen "JJ" ' || n
        WHEN 1 THEN 'Ana' || char(10) || 'Maria ' || n
        WHEN 2 THEN NULL
        ELSE 'Member ' || n
    END,
    CASE WHEN n % 11 = 0 THEN NULL ELSE 18 + (random() & 1048575) % 70 END,
    CASE WHEN n % 13 = 0 THEN NULL ELSE ((random() & 1073741823) % 100000000) / 100.0 END,
    strftime('%Y-%m-%dT%H:%M:%SZ', 1600000000 + n * 37, 'unixepoch'),
    n % 3 != 0,
    CASE n % 5
        WHEN 1 THEN 'called back, left a message: "later"' || char(13, 10) || 'ok'
        WHEN 2 THEN ''
        ELSE NULL
    END,
    CASE WHEN n % 4 = 0 THEN NULL ELSE randomblob(16) END
FROM seq
"""

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
MEMBERS_FINGERPRINT_SQL = """
SELECT count(*), total(id), total(length(email)), count(display_name),
       total(length(display_name)), total(age), sum(typeof(age) = 'integer'),
       total(CAST(round(balance * 100) AS INTEGER)), sum(typeof(balance) = 'real'),
       total(length(created_at)), total(is_active), count(notes), total(length(notes)),
       sum(typeof(avatar_hash) = 'blob'), total(length(avatar_hash))
FROM members {where}
"""


class BenchError(RuntimeError):
    """A measured step failed; the message says which and why."""


# -- measuring child processes ---------------------------------------------------------------


@dataclass(frozen=True)
class Measured:
    """One child process: wall time, CPU time and peak RSS (None when it cannot be known)."""

    seconds: float
    cpu_seconds: float
    peak_rss_kib: int | None


def run_measured(argv: list[str], env: dict[str, str], logs: Path, name: str,
                 stdin: Path | None = None, *, rss: bool = True) -> Measured:
    """Spawn ``argv``, wait for it with ``wait4`` and return its wall and CPU time.

    The peak RSS is taken from GNU ``time`` when it is installed: Linux carries the parent's
    high-water mark into a child's ``ru_maxrss`` across ``exec`` (``posix_spawn`` shares the
    parent's memory until then), so rusage from this large process would be meaningless.
    ``time`` is a small process: what it reports is the tool's own peak (+ about 1 MiB); for a
    ``sh -c`` pipeline, the peak of its largest process.
    """
    out, err = logs / f"{name}.stdout", logs / f"{name}.stderr"
    rss_file = logs / f"{name}.maxrss"
    timer = GNU_TIME if rss else None
    if timer is not None:
        argv = [timer, "-f", "%M", "-o", str(rss_file), *argv]
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
    actions: list[tuple[Any, ...]] = [
        (os.POSIX_SPAWN_OPEN, 1, str(out), flags, 0o600),
        (os.POSIX_SPAWN_OPEN, 2, str(err), flags, 0o600),
    ]
    if stdin is not None:
        actions.append((os.POSIX_SPAWN_OPEN, 0, str(stdin), os.O_RDONLY, 0))
    start = time.perf_counter()
    pid = os.posix_spawn(argv[0], argv, env, file_actions=actions)
    while True:
        done, status, usage = os.wait4(pid, os.WNOHANG)
        if done:
            break
        if time.perf_counter() - start > CHILD_TIMEOUT_S:
            os.kill(pid, signal.SIGKILL)
            os.wait4(pid, 0)
            raise BenchError(f"{name}: no result after {CHILD_TIMEOUT_S:.0f} s, killed")
        time.sleep(0.002)
    seconds = time.perf_counter() - start
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        tail = err.read_text(errors="replace").strip().splitlines()[-5:]
        raise BenchError(f"{name}: exit status {code}: " + " | ".join(tail))
    peak = None
    if timer is not None:
        peak = int(rss_file.read_text(encoding="utf-8").split()[-1])
    return Measured(seconds, usage.ru_utime + usage.ru_stime, peak)


# -- the measured children (each runs in a fresh interpreter) ----------------------------------


def _peak_rss_kib() -> int:
    """This process's own high-water RSS since ``exec`` (``VmHWM``), in KiB."""
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise BenchError("no VmHWM in /proc/self/status")


def _now() -> tuple[float, float, int]:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return time.perf_counter(), usage.ru_utime + usage.ru_stime, _peak_rss_kib()


def _plain(info: dict[str, Any] | None) -> int:
    return int((info or {}).get("plaintext_bytes") or 0)


def snapshot_sizes(ctx: Any, wrapper: KeyWrapper, tenant: str, snapshot_id: str
                   ) -> dict[str, int]:
    """Sizes from the snapshot's manifest, and which blobs the snapshot before it lacked."""
    dek = data_key(ctx, wrapper, tenant, create=False)
    complete = list_snapshots(ctx, tenant)
    manifest = read_manifest(ctx, dek, tenant, snapshot_id)
    position = complete.index(snapshot_id)
    before: set[str] = set()
    if position > 0:
        before = set(read_manifest(ctx, dek, tenant, complete[position - 1])["blobs"])
    blobs: dict[str, dict[str, Any]] = manifest["blobs"]
    referenced = {d["blob"] for d in manifest["documents"] if d.get("blob")}
    new = referenced - before
    return {
        "tables_plain": sum(int(t["plaintext_bytes"]) for t in manifest["tables"]),
        "tables_cipher": sum(int(t["ciphertext_bytes"]) for t in manifest["tables"]),
        "blobs_plain": sum(_plain(blobs.get(s)) for s in referenced),
        "new_blobs_plain": sum(_plain(blobs.get(s)) for s in new),
        "blobs": len(referenced),
        "new_blobs": len(new),
        "documents": len(manifest["documents"]),
        "rows": sum(int(t["rows"]) for t in manifest["tables"]),
    }


def child_run(kind: str, tenant: str, result_path: Path, target: str | None,
              bucket: str | None) -> None:
    """One backup, verify or restore, exactly as the flows do it minus Prefect and the lock."""
    ready = time.time()
    settings = Settings()
    wrapper = parse_master_key(settings.master_key or "")
    # verify and restore never touch the platform database (as in the flows)
    ctx: Any = RunContext.open(settings) if kind == "backup" else S3Context(settings,
                                                                             make_client())
    result: dict[str, Any] = {}
    try:
        opened, rss_opened = time.time(), _peak_rss_kib()
        if kind == "backup":
            # pyarrow imports pandas on its first pa.array() of Python values: a one-off per
            # process (about 1 s without a bytecode cache), timed apart from the backup itself.
            pa.array([0], type=pa.int64())
        warmed = time.time()
        t0, cpu0, rss0 = _now()
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
        t1, cpu1, rss1 = _now()
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
class ChildRun:
    """What one of our children reported, plus its process-level figures."""

    process: Measured
    seconds: float
    cpu_seconds: float
    baseline_rss_kib: int
    peak_rss_kib: int
    import_s: float
    open_s: float
    warmup_s: float
    data: dict[str, Any]

    @property
    def sizes(self) -> dict[str, int]:
        sizes: dict[str, int] = self.data["sizes"]
        return sizes


def measure_child(kind: str, tenant: str, env: dict[str, str], work: Path, name: str,
                  target: str | None = None, bucket: str | None = None) -> ChildRun:
    """Run one child and collect its figures."""
    result = work / "logs" / f"{name}.json"
    argv = [sys.executable, str(Path(__file__).resolve()), "--child", kind,
            "--child-tenant", tenant, "--child-result", str(result)]
    if target is not None:
        argv += ["--child-target", target]
    if bucket is not None:
        argv += ["--child-bucket", bucket]
    print(f"  {name} ...", end="", flush=True)
    spawned = time.time()
    process = run_measured(argv, env, work / "logs", name, rss=False)  # it reports VmHWM
    data = json.loads(result.read_text(encoding="utf-8"))
    print(f" {data['op_s']:.1f} s", flush=True)
    return ChildRun(process=process, seconds=data["op_s"], cpu_seconds=data["op_cpu_s"],
                    baseline_rss_kib=data["baseline_rss_kib"], peak_rss_kib=data["peak_rss_kib"],
                    import_s=data["imported_at"] - spawned, open_s=data["open_s"],
                    warmup_s=data["warmup_s"], data=data)


# -- the platform: S3 emulator, database, documents ------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def s3_emulator() -> Iterator[str]:
    """moto's threaded S3 server on 127.0.0.1, with throwaway credentials in the environment."""
    from moto.server import ThreadedMotoServer  # noqa: PLC0415 - never loaded by the children

    # The emulator logs every request line, signed query strings included: links are secrets.
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    for variable in ("AWS_ENDPOINT_URL", "AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_REGION"):
        os.environ.pop(variable, None)
    os.environ["AWS_ENDPOINT_URL_S3"] = endpoint
    os.environ["AWS_ACCESS_KEY_ID"] = "bench" + secrets.token_hex(8)
    os.environ["AWS_SECRET_ACCESS_KEY"] = secrets.token_urlsafe(30)
    os.environ["AWS_DEFAULT_REGION"] = "us-east-1"
    try:
        yield endpoint
    finally:
        server.stop()


def s3_client(endpoint: str) -> Any:
    """A plain boto3 client for setting up the emulator."""
    config = Config(signature_version="s3v4", s3={"addressing_style": "path"},
                    max_pool_connections=8)
    return boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", config=config)


@dataclass
class Platform:
    """The generated data set, as counted back from the database."""

    db: Path
    blobs_dir: Path  # local copies of the big tenant's blobs, for tar | zstd
    rows: dict[str, int] = field(default_factory=dict)
    documents: dict[str, int] = field(default_factory=dict)
    document_bytes: dict[str, int] = field(default_factory=dict)
    big_keys: list[str] = field(default_factory=list)  # storage keys of the big tenant's blobs


def create_platform(work: Path, rows: int, documents: int, doc_kib: int, client: Any) -> Platform:
    """The SQLite platform database, the blobs in the documents bucket and local copies."""
    db = work / "platform.sqlite"
    platform_ = Platform(db=db, blobs_dir=work / "blobs" / BIG_TENANT)
    platform_.blobs_dir.mkdir(parents=True)
    small_docs = max(1, documents // 4)
    doc_specs = [(BIG_TENANT, i) for i in range(documents)] + [
        (SMALL_TENANT, i) for i in range(small_docs)]
    doc_rows: list[tuple[str, str, str, int, str]] = []
    for tenant, i in doc_specs:
        name = "scan.pdf" if i % 10 == 9 else f"Rechnung {i:05d} \u2013 Müller, \"final\".pdf"
        doc_rows.append((tenant, name, f"{tenant}/{secrets.token_hex(12)}", doc_kib * 1024,
                         f"2026-{1 + i % 12:02d}-{1 + i % 28:02d}T08:00:00Z"))

    conn = sqlite3.connect(db)
    try:
        conn.execute("PRAGMA journal_mode = OFF")
        conn.execute("PRAGMA synchronous = OFF")
        conn.executescript(SCHEMA_SQL)
        with conn:
            conn.executemany("INSERT INTO tenants VALUES (?, ?, ?)", [
                (BIG_TENANT, "ACME Corp, \"the big one\"", "2020-01-01T00:00:00Z"),
                (SMALL_TENANT, "Globex GmbH", "2021-06-15T00:00:00Z")])
            conn.execute(MEMBERS_SQL, {"total": rows + rows // 4, "small": SMALL_TENANT,
                                       "big": BIG_TENANT})
            conn.executemany("INSERT INTO documents (tenant_id, filename, storage_key, bytes, "
                             "uploaded_at) VALUES (?, ?, ?, ?, ?)", doc_rows)
        conn.execute("ANALYZE")
        for tenant, count in conn.execute("SELECT tenant_id, count(*) FROM members GROUP BY 1"):
            platform_.rows[tenant] = count
    finally:
        conn.close()

    def upload(index: int) -> None:
        tenant, _, key, size, _ = doc_rows[index]
        blob = os.urandom(size)  # like PDFs and JPEGs: incompressible
        client.put_object(Bucket=DOCUMENTS_BUCKET, Key=key, Body=blob)
        if tenant == BIG_TENANT:
            (platform_.blobs_dir / local_name(key)).write_bytes(blob)

    with ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(upload, range(len(doc_rows))))
    for tenant, _, key, size, _ in doc_rows:
        platform_.documents[tenant] = platform_.documents.get(tenant, 0) + 1
        platform_.document_bytes[tenant] = platform_.document_bytes.get(tenant, 0) + size
        if tenant == BIG_TENANT:
            platform_.big_keys.append(key)
    return platform_


def local_name(storage_key: str) -> str:
    """The local copy of a blob (for tar) is named after its storage key."""
    return storage_key.replace("/", "_")


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


def table_counts(db: Path, tenant: str | None) -> dict[str, int]:
    """Rows per table; only the tenant's when ``tenant`` is given (the source database)."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        counts: dict[str, int] = {}
        for table in TABLES:
            column = "id" if table == "tenants" else "tenant_id"
            where = f" WHERE {column} = ?" if tenant else ""
            row = conn.execute(f"SELECT count(*) FROM {table}{where}",
                               (tenant,) if tenant else ()).fetchone()
            counts[table] = int(row[0])
        return counts
    finally:
        conn.close()


def members_fingerprint(db: Path, tenant: str | None) -> tuple[Any, ...]:
    """Aggregates over every column of ``members`` (the tenant's rows only in the source)."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        where = "WHERE tenant_id = ?" if tenant else ""
        row = conn.execute(MEMBERS_FINGERPRINT_SQL.format(where=where),
                           (tenant,) if tenant else ()).fetchone()
        return tuple(row)
    finally:
        conn.close()


def check_restored(name: str, db: Path, plat: Platform, expected: dict[str, int],
                   warnings: list[str]) -> int:
    """Row counts must equal the source's (else BenchError); content differences are noted."""
    counts = table_counts(db, None)
    if counts != expected:
        raise BenchError(f"{name}: restored row counts {counts}, the source has {expected}")
    if members_fingerprint(db, None) != members_fingerprint(plat.db, BIG_TENANT):
        warnings.append(f"{name}: restored members differ from the source in content "
                        "(counts, lengths, sums or storage classes of some column)")
    return sum(counts.values())


# -- the benchmark -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    """One line of the printed table."""

    label: str
    seconds: float
    cpu_seconds: float | None
    rows: int | None
    mib: float | None
    peak_rss_kib: int | None
    out_mib: float | None = None


def _fmt_row(row: Row) -> str:
    cpu = "" if row.cpu_seconds is None else f"{row.cpu_seconds:.2f}"
    rate = "" if row.rows is None else f"{row.rows / row.seconds:,.0f}"
    mibs = "" if row.mib is None else f"{row.mib / row.seconds:,.1f}"
    rss = "" if row.peak_rss_kib is None else f"{row.peak_rss_kib / 1024:,.0f}"
    out = "" if row.out_mib is None else f"{row.out_mib:,.1f}"
    return (f"  {row.label:<44} {row.seconds:>7.2f} {cpu:>7} {rate:>10} {mibs:>7} {rss:>6} "
            f"{out:>8}")


def _ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}x" if b > 0 else "n/a"


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
    sqlite_tool = shutil.which("sqlite3")
    if sqlite_tool is None:
        raise BenchError("the sqlite3 command-line tool is not installed (apt-get install sqlite3)")
    work = Path(tempfile.mkdtemp(prefix="tenant-backup-bench-"))
    (work / "logs").mkdir()
    try:
        with s3_emulator() as endpoint:
            _run(args, work, endpoint, sqlite_tool)
    finally:
        if args.keep:
            print(f"\nkept the working directory: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


def _run(args: argparse.Namespace, work: Path, endpoint: str, sqlite_tool: str) -> None:
    started = time.perf_counter()
    client = s3_client(endpoint)
    for bucket in (DOCUMENTS_BUCKET, BACKUP_BUCKET, RESTORE_BUCKET):
        client.create_bucket(Bucket=bucket)
    print(f"generating: {args.rows:,} member rows for {BIG_TENANT!r} (+{args.rows // 4:,} for "
          f"{SMALL_TENANT!r}), {args.documents} documents x {args.doc_kb} KiB ...", flush=True)
    plat = create_platform(work, args.rows, args.documents, args.doc_kb, client)
    print(f"generated in {time.perf_counter() - started:.1f} s; measuring ...", flush=True)

    state = work / "state"
    state.mkdir()
    env = dict(os.environ)
    env.update({
        "TENANT_EXPORT_SOURCE_URL": f"sqlite:///{plat.db}",
        "TENANT_EXPORT_DOCUMENTS_BUCKET": DOCUMENTS_BUCKET,
        "TENANT_EXPORT_BACKUP_BUCKET": BACKUP_BUCKET,
        "TENANT_EXPORT_STATE_DIR": str(state),
        "TENANT_EXPORT_MASTER_KEY": generate_master_key(),  # this run's only, never stored
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    })
    env.pop("TENANT_EXPORT_CATALOG", None)
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
    dumped = run_measured([sqlite_tool, str(plat.db)], env, work / "logs", "sqlite3-dump",
                          stdin=script)
    native_db = work / "native-restored.sqlite"
    dump_restore = run_measured([sqlite_tool, str(native_db)], env, work / "logs",
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
        results.tar = run_measured(
            ["/bin/sh", "-c", f'"{tar_tool}" -cf - -C "{plat.blobs_dir}" . | "{zstd_tool}" -q '
             f'-o "{archive}"'], env, work / "logs", "tar-zstd")
        results.tar_bytes = archive.stat().st_size
        extracted = work / "native-restored-blobs"
        extracted.mkdir()
        results.untar = run_measured(
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
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    full, inc, ver = r.full, r.incremental, r.verify
    print()
    print(f"tenant-export backup/restore, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {cpus} CPUs, "
          f"Python {platform.python_version()}, SQLite {sqlite3.sqlite_version}")
    print(f"tenant {BIG_TENANT!r}: {plat.rows[BIG_TENANT]:,} member rows (10 columns: INTEGER, "
          f"REAL, TEXT with quotes/commas/newlines, NULLs, 16-byte BLOB), "
          f"{plat.documents[BIG_TENANT]} documents = {plat.document_bytes[BIG_TENANT] / MIB:.1f} "
          f"MiB of random bytes; tenant {SMALL_TENANT!r}: {plat.rows[SMALL_TENANT]:,} rows, "
          f"{plat.documents[SMALL_TENANT]} documents")
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
        print(_fmt_row(row))
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
    print(f"  wall: incremental {_ratio(inc.seconds, full.seconds)} of the full; Parquet of "
          f"the tables {fs['tables_plain'] / MIB:.1f} MiB")
    print()
    print("ratios ours / native (wall, cpu):")
    print("  backup tables+documents / (sqlite3 dump + tar|zstd): ", end="")
    if r.tar is not None:
        print(f"{_ratio(full.seconds, r.dump.seconds + r.tar.seconds)}, "
              f"{_ratio(full.cpu_seconds, r.dump.cpu_seconds + r.tar.cpu_seconds)}")
    else:
        print("n/a (zstd not installed)")
    print(f"  backup / sqlite3 dump alone: {_ratio(full.seconds, r.dump.seconds)}, "
          f"{_ratio(full.cpu_seconds, r.dump.cpu_seconds)}; sizes: our tables "
          f"{fs['tables_cipher'] / MIB:.1f} MiB (Parquet zstd, encrypted), dump.sql "
          f"{r.dump_bytes / MIB:.1f} MiB"
          + (f", blobs.tar.zst {r.tar_bytes / MIB:.1f} MiB" if r.tar is not None else ""))
    print(f"  restore tables / sqlite3 < dump.sql: "
          f"{_ratio(r.restore_tables.seconds, r.dump_restore.seconds)}, "
          f"{_ratio(r.restore_tables.cpu_seconds, r.dump_restore.cpu_seconds)}")
    if r.untar is not None:
        native_cpu = r.dump_restore.cpu_seconds + r.untar.cpu_seconds
        print(f"  restore tables+documents / (sqlite3 < dump.sql + zstd -d | tar -x): "
              f"{_ratio(r.restore_all.seconds, r.dump_restore.seconds + r.untar.seconds)}, "
              f"{_ratio(r.restore_all.cpu_seconds, native_cpu)}")
    print(f"  verify: {_ratio(ver.seconds, full.seconds)} of the full backup's wall")
    print()
    print(f"restore check: {r.restored_rows:,} rows restored = the source's "
          f"{BIG_TENANT!r} rows (tenants + members + documents), in both restores and the native "
          f"one; {r.restored_docs} documents in {RESTORE_BUCKET} (count and bytes as the source)")
    for warning in r.warnings:
        print(f"WARNING: {warning}")
    print(f"RTO input: restore of {BIG_TENANT!r} (tables + documents) {r.restore_all.seconds:.1f} s"
          f" in the process, {r.restore_all.process.seconds:.1f} s with process start; tables "
          f"only {r.restore_tables.seconds:.1f} s ({r.restore_tables.process.seconds:.1f} s)")
    cache = " (PYTHONDONTWRITEBYTECODE is set: every process compiles its imports)" if (
        os.environ.get("PYTHONDONTWRITEBYTECODE")) else ""
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
    growth = full.peak_rss_kib / max(r.small.peak_rss_kib, 1)
    size_factor = plat.rows[BIG_TENANT] / max(plat.rows[SMALL_TENANT], 1)
    print(f"  tenant {size_factor:.1f}x larger -> peak RSS {growth:.2f}x")
    print(f"  verify peak RSS {ver.peak_rss_kib / 1024:.0f} MiB, restore "
          f"{r.restore_tables.peak_rss_kib / 1024:.0f} MiB (tables), "
          f"{r.restore_all.peak_rss_kib / 1024:.0f} MiB (tables + documents)")
    print(f"\ntotal {total_s:.0f} s (options: --rows {args.rows} --documents {args.documents} "
          f"--doc-kb {args.doc_kb})")


def main(argv: list[str] | None = None) -> int:
    """Entry point: the benchmark, or one measured child when ``--child`` is given."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--rows", type=int, default=1_000_000,
                        help="member rows of the benchmarked tenant (default 1,000,000)")
    parser.add_argument("--documents", type=int, default=200,
                        help="documents of the benchmarked tenant (default 200)")
    parser.add_argument("--doc-kb", type=int, default=256, help="KiB per document (default 256)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
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
    if args.rows < 4 or args.documents < 1 or args.doc_kb < 1:
        parser.error("--rows must be at least 4, --documents and --doc-kb at least 1")
    try:
        run_benchmark(args)
    except BenchError as err:
        print(f"benchmark failed: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
