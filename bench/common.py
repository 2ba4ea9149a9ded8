"""What ``export_throughput.py`` and ``backup_throughput.py`` share.

The generated platform (SQLite database, blobs in a local S3 emulator, local copies of the big
tenant's blobs), measuring a child process (wall and CPU time, peak RSS), the figures a measured
child takes of itself, the table's row format and the parts of the report and of the command
line that both benchmarks print or accept alike.
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
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config

BIG_TENANT = "acme"
SMALL_TENANT = "globex"
DOCUMENTS_BUCKET = "bench-documents"
CHILD_TIMEOUT_S = 900.0
MIB = 1024 * 1024
GNU_TIME = next((p for p in ("/usr/bin/time", "/bin/time") if os.access(p, os.X_OK)), None)

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


@dataclass(frozen=True)
class ChildFigures:
    """What every one of our measured children reports, plus its process-level figures."""

    process: Measured
    baseline_rss_kib: int  # before the measured step: interpreter, imports, context
    peak_rss_kib: int
    import_s: float  # from spawn to the end of the imports
    open_s: float
    warmup_s: float


def run_child(script: str, child_argv: list[str], env: dict[str, str], work: Path,
              name: str) -> tuple[Measured, dict[str, Any], float]:
    """Run ``script`` as one of our measured children; it writes its figures as JSON.

    Returns the process's figures, what the child reported and the ``time.time()`` at which it
    was spawned (the child's ``imported_at`` minus this is its start-up and import time).
    """
    result = work / "logs" / f"{name}.json"
    argv = [sys.executable, str(Path(script).resolve()), *child_argv,
            "--child-result", str(result)]
    spawned = time.time()
    process = run_measured(argv, env, work / "logs", name, rss=False)  # it reports VmHWM
    data: dict[str, Any] = json.loads(result.read_text(encoding="utf-8"))
    return process, data, spawned


# -- inside a measured child (runs in a fresh interpreter) -------------------------------------


def peak_rss_kib() -> int:
    """This process's own high-water RSS since ``exec`` (``VmHWM``), in KiB."""
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise BenchError("no VmHWM in /proc/self/status")


def now() -> tuple[float, float, int]:
    """Wall clock, this process's CPU time and its peak RSS in KiB."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return time.perf_counter(), usage.ru_utime + usage.ru_stime, peak_rss_kib()


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
    blobs_dir: Path  # local copies of the big tenant's blobs, for the native archivers
    rows: dict[str, int] = field(default_factory=dict)
    documents: dict[str, int] = field(default_factory=dict)
    document_bytes: dict[str, int] = field(default_factory=dict)
    big_keys: list[str] = field(default_factory=list)  # storage keys of the big tenant's blobs


# How the local copy of the big tenant's blob number ``index`` with ``storage_key`` is named.
BlobName = Callable[[int, str], str]


def create_platform(work: Path, rows: int, documents: int, doc_kib: int, client: Any,
                    blob_name: BlobName) -> Platform:
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
            (platform_.blobs_dir / blob_name(index, key)).write_bytes(blob)

    with ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(upload, range(len(doc_rows))))
    for tenant, _, key, size, _ in doc_rows:
        platform_.documents[tenant] = platform_.documents.get(tenant, 0) + 1
        platform_.document_bytes[tenant] = platform_.document_bytes.get(tenant, 0) + size
        if tenant == BIG_TENANT:
            platform_.big_keys.append(key)
    return platform_


def generate_platform(args: argparse.Namespace, work: Path, client: Any, buckets: tuple[str, ...],
                      blob_name: BlobName, started: float) -> Platform:
    """Create ``buckets`` and the platform, saying what and how long."""
    for bucket in buckets:
        client.create_bucket(Bucket=bucket)
    print(f"generating: {args.rows:,} member rows for {BIG_TENANT!r} (+{args.rows // 4:,} for "
          f"{SMALL_TENANT!r}), {args.documents} documents x {args.doc_kb} KiB ...", flush=True)
    plat = create_platform(work, args.rows, args.documents, args.doc_kb, client, blob_name)
    print(f"generated in {time.perf_counter() - started:.1f} s; measuring ...", flush=True)
    return plat


def child_env(work: Path, plat: Platform, settings: dict[str, str]) -> dict[str, str]:
    """This environment for our children, on the generated platform, plus ``settings``."""
    state = work / "state"
    state.mkdir()
    env = dict(os.environ)
    env.update({
        "TENANT_EXPORT_SOURCE_URL": f"sqlite:///{plat.db}",
        "TENANT_EXPORT_DOCUMENTS_BUCKET": DOCUMENTS_BUCKET,
        **settings,
        "TENANT_EXPORT_STATE_DIR": str(state),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    })
    env.pop("TENANT_EXPORT_CATALOG", None)
    return env


# -- the benchmark: working directory, command line ------------------------------------------


def require_sqlite3() -> str:
    """The ``sqlite3`` command-line tool, which both benchmarks need."""
    sqlite_tool = shutil.which("sqlite3")
    if sqlite_tool is None:
        raise BenchError("the sqlite3 command-line tool is not installed (apt-get install sqlite3)")
    return sqlite_tool


def in_work_dir(prefix: str, keep: bool, body: Callable[[Path, str], None]) -> None:
    """Run ``body(work, endpoint)`` in a new temporary directory, with the S3 emulator up."""
    work = Path(tempfile.mkdtemp(prefix=prefix))
    (work / "logs").mkdir()
    try:
        with s3_emulator() as endpoint:
            body(work, endpoint)
    finally:
        if keep:
            print(f"\nkept the working directory: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


def size_parser(description: str | None) -> argparse.ArgumentParser:
    """The options both benchmarks take; each adds its hidden child options."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--rows", type=int, default=1_000_000,
                        help="member rows of the benchmarked tenant (default 1,000,000)")
    parser.add_argument("--documents", type=int, default=200,
                        help="documents of the benchmarked tenant (default 200)")
    parser.add_argument("--doc-kb", type=int, default=256, help="KiB per document (default 256)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    return parser


def run_main(parser: argparse.ArgumentParser, args: argparse.Namespace,
             benchmark: Callable[[argparse.Namespace], None]) -> int:
    """Check the sizes, run ``benchmark`` and turn a BenchError into exit status 1."""
    if args.rows < 4 or args.documents < 1 or args.doc_kb < 1:
        parser.error("--rows must be at least 4, --documents and --doc-kb at least 1")
    try:
        benchmark(args)
    except BenchError as err:
        print(f"benchmark failed: {err}", file=sys.stderr)
        return 1
    return 0


# -- the report ---------------------------------------------------------------------------------


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


@dataclass(frozen=True)
class Columns:
    """The widths of the table's columns; no ``out`` column when its width is None."""

    label: int
    seconds: int
    cpu: int
    rate: int
    mibs: int
    rss: int
    out: int | None = None


def fmt_row(row: Row, widths: Columns) -> str:
    """One row of the table, in columns of ``widths``."""
    cpu = "" if row.cpu_seconds is None else f"{row.cpu_seconds:.2f}"
    rate = "" if row.rows is None else f"{row.rows / row.seconds:,.0f}"
    mibs = "" if row.mib is None else f"{row.mib / row.seconds:,.1f}"
    rss = "" if row.peak_rss_kib is None else f"{row.peak_rss_kib / 1024:,.0f}"
    line = (f"  {row.label:<{widths.label}} {row.seconds:>{widths.seconds}.2f} "
            f"{cpu:>{widths.cpu}} {rate:>{widths.rate}} {mibs:>{widths.mibs}} "
            f"{rss:>{widths.rss}}")
    if widths.out is not None:
        out = "" if row.out_mib is None else f"{row.out_mib:,.1f}"
        line += f" {out:>{widths.out}}"
    return line


def ratio(a: float, b: float) -> str:
    """``a / b`` as ``1.23x``, or ``n/a`` when ``b`` is not positive."""
    return f"{a / b:.2f}x" if b > 0 else "n/a"


def print_heading(title: str, plat: Platform) -> None:
    """The report's first lines: what ran where, and the generated data set."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print()
    print(f"{title}, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {cpus} CPUs, "
          f"Python {platform.python_version()}, SQLite {sqlite3.sqlite_version}")
    print(f"tenant {BIG_TENANT!r}: {plat.rows[BIG_TENANT]:,} member rows (10 columns: INTEGER, "
          f"REAL, TEXT with quotes/commas/newlines, NULLs, 16-byte BLOB), "
          f"{plat.documents[BIG_TENANT]} documents = {plat.document_bytes[BIG_TENANT] / MIB:.1f} "
          f"MiB of random bytes; tenant {SMALL_TENANT!r}: {plat.rows[SMALL_TENANT]:,} rows, "
          f"{plat.documents[SMALL_TENANT]} documents")


def bytecode_note() -> str:
    """Said after the one-off costs per process when no bytecode cache is written."""
    if os.environ.get("PYTHONDONTWRITEBYTECODE"):
        return " (PYTHONDONTWRITEBYTECODE is set: every process compiles its imports)"
    return ""


def print_growth(plat: Platform, big_peak_rss_kib: int, small_peak_rss_kib: int) -> None:
    """How much the peak RSS grew from the small tenant to the big one."""
    growth = big_peak_rss_kib / max(small_peak_rss_kib, 1)
    size_factor = plat.rows[BIG_TENANT] / max(plat.rows[SMALL_TENANT], 1)
    print(f"  tenant {size_factor:.1f}x larger -> peak RSS {growth:.2f}x")


def print_total(args: argparse.Namespace, total_s: float) -> None:
    """The report's last line: the run's wall time and options."""
    print(f"\ntotal {total_s:.0f} s (options: --rows {args.rows} --documents {args.documents} "
          f"--doc-kb {args.doc_kb})")
