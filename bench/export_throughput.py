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
- ours, tables: ``flows.packaging.write_package`` then ``verify_package`` with a catalog that
  skips ``documents``, i.e. the same two tables as CSV on S3 (no Prefect).
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

from flows.context import RunContext
from flows.packaging import discard_package, verify_package, write_package
from tenant_export.ids import new_export_id
from tenant_export.settings import Settings

BIG_TENANT = "acme"
SMALL_TENANT = "globex"
DOCUMENTS_BUCKET = "bench-documents"
EXPORT_BUCKET = "bench-exports"
CHILD_TIMEOUT_S = 900.0
MIB = 1024 * 1024
GNU_TIME = next((p for p in ("/usr/bin/time", "/bin/time") if os.access(p, os.X_OK)), None)

CATALOG_TABLES_ONLY = "[tables.documents]\nskip = true\n"
CATALOG_DOCUMENTS_ONLY = "[tables.members]\nskip = true\n"

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

SQLITE3_DUMP = """.headers on
.mode csv
.output {out}/tenants.csv
SELECT * FROM tenants WHERE id = '{tenant}' ORDER BY id;
.output {out}/members.csv
SELECT * FROM members WHERE tenant_id = '{tenant}' ORDER BY id;
.output stdout
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
    ``time`` is a small process: what it reports is the tool's own peak (+ about 1 MiB).
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


# -- the export child (runs in a fresh interpreter) --------------------------------------------


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


def child_export(tenant: str, result_path: Path) -> None:
    """Write, then verify, one package of ``tenant`` exactly as the flow does, minus Prefect."""
    ready = time.time()
    ctx = RunContext.open(Settings())
    try:
        opened, rss_opened = time.time(), _peak_rss_kib()
        # pyarrow imports pandas on its first pa.array() of Python values: a one-off per process
        # (about 1 s when bytecode is not cached), timed apart from the export itself.
        pa.array([0], type=pa.int64())
        warmed = time.time()
        export_id = new_export_id()
        t0, cpu0, rss0 = _now()
        records = write_package(ctx, tenant, export_id)
        t1, cpu1, rss1 = _now()
        verify_package(ctx, tenant, export_id, records)
        t2, cpu2, rss2 = _now()
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
class ExportRun:
    """What one export child reported, plus its process-level figures."""

    process: Measured
    write_s: float
    write_cpu_s: float
    verify_s: float
    verify_cpu_s: float
    baseline_rss_kib: int
    peak_rss_kib: int
    import_s: float
    open_s: float
    warmup_s: float
    opened_rss_kib: int
    files: list[dict[str, Any]]

    def bytes_of(self, kind: str) -> int:
        return sum(int(f["bytes"]) for f in self.files if f["kind"] == kind)

    def rows_of(self, kind: str) -> int:
        return sum(int(f["rows"] or 0) for f in self.files if f["kind"] == kind)


def measure_export(tenant: str, env: dict[str, str], work: Path, name: str) -> ExportRun:
    """Run the export child for ``tenant`` and collect its figures."""
    result = work / "logs" / f"{name}.json"
    argv = [sys.executable, str(Path(__file__).resolve()), "--child-export", tenant,
            "--child-result", str(result)]
    spawned = time.time()
    process = run_measured(argv, env, work / "logs", name, rss=False)  # it reports VmHWM
    data = json.loads(result.read_text(encoding="utf-8"))
    return ExportRun(process=process, write_s=data["write_s"], write_cpu_s=data["write_cpu_s"],
                     verify_s=data["verify_s"], verify_cpu_s=data["verify_cpu_s"],
                     baseline_rss_kib=data["baseline_rss_kib"],
                     peak_rss_kib=data["peak_rss_kib"],
                     import_s=data["imported_at"] - spawned, open_s=data["open_s"],
                     warmup_s=data["warmup_s"], opened_rss_kib=data["opened_rss_kib"],
                     files=data["files"])


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
    blobs_dir: Path  # local copies of the big tenant's blobs, for zip
    rows: dict[str, int] = field(default_factory=dict)
    documents: dict[str, int] = field(default_factory=dict)
    document_bytes: dict[str, int] = field(default_factory=dict)


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
        # Every tenth document is a "scan.pdf": duplicate names must be made unique in the ZIP.
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
            (platform_.blobs_dir / f"{index:06d}.pdf").write_bytes(blob)

    with ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(upload, range(len(doc_rows))))
    for tenant, _, _, size, _ in doc_rows:
        platform_.documents[tenant] = platform_.documents.get(tenant, 0) + 1
        platform_.document_bytes[tenant] = platform_.document_bytes.get(tenant, 0) + size
    return platform_


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


def _fmt_row(row: Row) -> str:
    cpu = "" if row.cpu_seconds is None else f"{row.cpu_seconds:.2f}"
    rate = "" if row.rows is None else f"{row.rows / row.seconds:,.0f}"
    mibs = "" if row.mib is None else f"{row.mib / row.seconds:,.1f}"
    rss = "" if row.peak_rss_kib is None else f"{row.peak_rss_kib / 1024:,.0f}"
    return f"  {row.label:<36} {row.seconds:>8.2f} {cpu:>7} {rate:>11} {mibs:>8} {rss:>9}"


def _ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}x" if b > 0 else "n/a"


def run_benchmark(args: argparse.Namespace) -> None:
    """Generate the platform, run every measurement and print the table."""
    zip_tool = shutil.which("zip")
    sqlite_tool = shutil.which("sqlite3")
    if sqlite_tool is None:
        raise BenchError("the sqlite3 command-line tool is not installed (apt-get install sqlite3)")
    work = Path(tempfile.mkdtemp(prefix="tenant-export-bench-"))
    (work / "logs").mkdir()
    try:
        with s3_emulator() as endpoint:
            _run(args, work, endpoint, sqlite_tool, zip_tool)
    finally:
        if args.keep:
            print(f"\nkept the working directory: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


def _run(args: argparse.Namespace, work: Path, endpoint: str, sqlite_tool: str,
         zip_tool: str | None) -> None:
    started = time.perf_counter()
    client = s3_client(endpoint)
    for bucket in (DOCUMENTS_BUCKET, EXPORT_BUCKET):
        client.create_bucket(Bucket=bucket)
    print(f"generating: {args.rows:,} member rows for {BIG_TENANT!r} (+{args.rows // 4:,} for "
          f"{SMALL_TENANT!r}), {args.documents} documents x {args.doc_kb} KiB ...", flush=True)
    plat = create_platform(work, args.rows, args.documents, args.doc_kb, client)
    print(f"generated in {time.perf_counter() - started:.1f} s; measuring ...", flush=True)

    state = work / "state"
    state.mkdir()
    base_env = dict(os.environ)
    base_env.update({
        "TENANT_EXPORT_SOURCE_URL": f"sqlite:///{plat.db}",
        "TENANT_EXPORT_DOCUMENTS_BUCKET": DOCUMENTS_BUCKET,
        "TENANT_EXPORT_EXPORT_BUCKET": EXPORT_BUCKET,
        "TENANT_EXPORT_STATE_DIR": str(state),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    })
    base_env.pop("TENANT_EXPORT_CATALOG", None)
    catalogs = {"tables": CATALOG_TABLES_ONLY, "documents": CATALOG_DOCUMENTS_ONLY}
    env_for: dict[str, dict[str, str]] = {"full": base_env}
    for name, text in catalogs.items():
        path = work / f"catalog-{name}.toml"
        path.write_text(text, encoding="utf-8")
        env_for[name] = {**base_env, "TENANT_EXPORT_CATALOG": str(path)}

    # (a) the native tool, same tenant, same tables, same order.
    out = work / "sqlite3-out"
    out.mkdir()
    script = work / "sqlite3-dump.sql"
    script.write_text(SQLITE3_DUMP.format(out=out, tenant=BIG_TENANT), encoding="utf-8")
    native = run_measured([sqlite_tool, "-csv", "-header", str(plat.db)], base_env,
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
            measured = run_measured([zip_tool, level, "-q", "-r", str(target), str(plat.blobs_dir)],
                                    base_env, work / "logs", f"zip{level}")
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
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print()
    print(f"tenant-export throughput, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {cpus} CPUs, "
          f"Python {platform.python_version()}, SQLite {sqlite3.sqlite_version}")
    print(f"tenant {BIG_TENANT!r}: {plat.rows[BIG_TENANT]:,} member rows (10 columns: INTEGER, "
          f"REAL, TEXT with quotes/commas/newlines, NULLs, 16-byte BLOB), "
          f"{plat.documents[BIG_TENANT]} documents = {plat.document_bytes[BIG_TENANT] / MIB:.1f} "
          f"MiB of random bytes; tenant {SMALL_TENANT!r}: {plat.rows[SMALL_TENANT]:,} rows, "
          f"{plat.documents[SMALL_TENANT]} documents")
    print("NOTE: S3 here is a LOCAL EMULATOR (moto ThreadedMotoServer) over HTTP on 127.0.0.1,")
    print("      running in this benchmark's process on the same CPUs: wall times of our S3 writes")
    print("      and read-backs include the emulator's overhead. 'cpu s' counts our process alone.")
    print("      sqlite3 and zip write local files and compute no SHA-256.")
    print()
    print(f"  {'measurement':<36} {'wall s':>8} {'cpu s':>7} {'rows/s':>11} {'MiB/s':>8} "
          f"{'peak RSS':>9}")
    print(f"  {'':<36} {'':>8} {'':>7} {'':>11} {'':>8} {'MiB':>9}")
    for row in rows_out:
        print(_fmt_row(row))
    print()
    print("ratios:")
    print(f"  ours tables write / sqlite3 -csv: wall {_ratio(tables.write_s, native.seconds)}, "
          f"cpu {_ratio(tables.write_cpu_s, native.cpu_seconds)}; with verify: wall "
          f"{_ratio(tables.write_s + tables.verify_s, native.seconds)}")
    print(f"  CSV bytes: ours {tables.bytes_of('table') / MIB:.1f} MiB (BLOB as base64), "
          f"sqlite3 -csv {native_bytes / MIB:.1f} MiB (BLOB raw)")
    for label, measured, size in zips:
        print(f"  ours documents write / {label.split(' (')[0]}: wall "
              f"{_ratio(docs.write_s, measured.seconds)}, cpu "
              f"{_ratio(docs.write_cpu_s, measured.cpu_seconds)} (archive {size / MIB:.1f} MiB, "
              f"ours {docs.bytes_of('zip') / MIB:.1f} MiB)")
    native_rss = ("n/a (GNU time not installed)" if native.peak_rss_kib is None
                  else _ratio(tables.peak_rss_kib, native.peak_rss_kib))
    print(f"  ours tables peak RSS: {tables.peak_rss_kib / 1024:.0f} MiB = {native_rss} "
          f"sqlite3's; before the first row (interpreter, imports, RunContext): "
          f"{tables.baseline_rss_kib / 1024:.0f} MiB")
    cache = " (PYTHONDONTWRITEBYTECODE is set: every process compiles its imports)" if (
        os.environ.get("PYTHONDONTWRITEBYTECODE")) else ""
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
    growth = full_big.peak_rss_kib / max(full_small.peak_rss_kib, 1)
    size_factor = plat.rows[BIG_TENANT] / max(plat.rows[SMALL_TENANT], 1)
    print(f"  tenant {size_factor:.1f}x larger -> peak RSS {growth:.2f}x")
    print(f"\ntotal {total_s:.0f} s (options: --rows {args.rows} --documents {args.documents} "
          f"--doc-kb {args.doc_kb})")


def main(argv: list[str] | None = None) -> int:
    """Entry point: the benchmark, or one measured child when ``--child-export`` is given."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--rows", type=int, default=1_000_000,
                        help="member rows of the benchmarked tenant (default 1,000,000)")
    parser.add_argument("--documents", type=int, default=200,
                        help="documents of the benchmarked tenant (default 200)")
    parser.add_argument("--doc-kb", type=int, default=256, help="KiB per document (default 256)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    parser.add_argument("--child-export", metavar="TENANT", help=argparse.SUPPRESS)
    parser.add_argument("--child-result", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child_export:
        child_export(args.child_export, args.child_result)
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
