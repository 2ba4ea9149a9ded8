"""What every scenario shares: options, the work directory, the services (S3 behind the
latency proxy, a Prefect server, PostgreSQL on demand), the generated platforms and the
measured steps, each with the S3 requests it made."""

from __future__ import annotations

import contextlib
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import harness, pipeline, platforms
from bench.harness import BenchError, Measured
from bench.machine import Machine
from bench.operator_tools import Operator
from bench.platforms import Backend, Size
from bench.s3stack import ProxyStats, S3Stack

ROOT = Path(__file__).resolve().parent.parent
PYCACHE = ROOT / "bench" / "out" / "pycache"
"""Bytecode of the measured processes, kept between runs (bench/out/ is ignored by git)."""
OPERATOR_BUCKET = "exp-operator"
"""Where the operator's scripts upload their files."""


@dataclass
class Options:
    """The command line, resolved to sizes (``--full`` scales the defaults up)."""

    latency_ms: float = 20.0
    full: bool = False
    documents: int = 2_000
    doc_bytes: int = 4096
    doc_rows: int = 50_000
    rows: int = 1_000_000
    rss_small_rows: int = 100_000
    rss_small_documents: int = 200
    rss_large_documents: int = 2_000
    tenants: int = 200
    fanout_latency_ms: float = 0.0
    row_changes: str = "recent"
    step_timeout: float = 300.0
    only: list[str] = field(default_factory=list)
    keep: bool = False
    work_dir: Path | None = None
    install_tools: bool = True
    write_docs: bool = True
    docs_path: Path = ROOT / "docs" / "benchmarks.md"
    profile_dir: Path | None = None
    """Run our commands under ``py-spy record`` and keep their collapsed stacks here."""


@dataclass(frozen=True)
class Step:
    """One measured command and what the proxy saw while it ran."""

    measured: Measured
    s3: ProxyStats
    emulator_cpu_s: float
    latency_s: float

    @property
    def wall_s(self) -> float:
        return self.measured.wall_s

    @property
    def ok(self) -> bool:
        return self.measured.ok

    @property
    def startup_s(self) -> float | None:
        """From the process's start to its first S3 request (imports, settings, catalog)."""
        if self.s3.first_at is None:
            return None
        return max(0.0, self.s3.first_at - self.measured.start)

    @property
    def io_span_s(self) -> float | None:
        """From the first S3 request to the last one."""
        if self.s3.first_at is None or self.s3.last_at is None:
            return None
        return self.s3.last_at - self.s3.first_at

    def in_flight(self) -> float | None:
        """Mean requests in flight while it talked to S3: requests x latency / span. About 1
        means one request at a time."""
        span = self.io_span_s
        if not span or self.latency_s <= 0:
            return None
        return self.s3.total * self.latency_s / span

    def status(self) -> str:
        if self.measured.timed_out:
            return f"stopped at {self.measured.wall_s:.0f} s (time limit)"
        if self.measured.rc != 0:
            return f"FAILED (exit {self.measured.rc}): {self.measured.error_tail(3)}"
        return "ok"


@dataclass
class PlatformInfo:
    """A generated platform: where it is, its documents bucket and catalogs."""

    name: str
    backend: Backend
    size: Size
    platform: Any
    source_url: str
    db_path: Path | None
    documents_bucket: str
    catalogs: dict[str, Path]
    tenant: str
    rows: int
    blobs: int
    blob_bytes: int


class Bench:
    """The run: work directory, services, platforms, and the measuring of steps."""

    def __init__(self, options: Options, machine: Machine, missing_tools: list[str]) -> None:
        self.opts = options
        self.machine = machine
        self.missing = set(missing_tools)
        self.stack_exit = contextlib.ExitStack()
        self.work = options.work_dir or Path(
            __import__("tempfile").mkdtemp(prefix="tenant-export-bench-"))
        self.work.mkdir(parents=True, exist_ok=True)
        self.logs = self.work / "logs"
        self.logs.mkdir(exist_ok=True)
        self.s3 = S3Stack(self.work, options.latency_ms / 1000)
        self.platforms: dict[tuple[str, str, int], PlatformInfo] = {}
        self.results: dict[str, Step] = {}
        self.master_key = pipeline.master_key()
        self.prefect_server: Any = None
        self._postgres_url: str | None = None
        self._postgres_failed = ""
        self.base_env: dict[str, str] = {}
        self.operator: Operator | None = None
        self.started = time.monotonic()

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self) -> None:
        print(f"work directory: {self.work}", flush=True)
        t0 = time.monotonic()
        self.s3.start()
        self.s3.create_buckets(OPERATOR_BUCKET)
        from deployments.server import LocalServer  # noqa: PLC0415 - the project's own server

        server = LocalServer(port=harness.free_port(), home=self.work / "prefect-server",
                             log=self.logs / "prefect-server.log")
        server.start(timeout=300)
        self.prefect_server = server
        self.stack_exit.callback(server.stop)
        self.base_env = pipeline.base_env(self.s3.aws_env(), server.api_url, PYCACHE,
                                          self.work / "prefect-client")
        warm = harness.measure("warm-bytecode", pipeline.warm_command(), self.base_env,
                               self.logs, timeout=600)
        if not warm.ok:
            raise BenchError(f"importing the project failed: {warm.error_tail()}")
        self.operator = Operator(self.s3.proxy_url, self.s3.access_key, self.s3.secret_key)
        print(f"services up in {time.monotonic() - t0:.0f} s: moto {self.s3.moto_url}, "
              f"latency proxy {self.s3.proxy_url} ({self.opts.latency_ms:g} ms per request), "
              f"Prefect server {server.api_url}", flush=True)

    def close(self) -> None:
        try:
            self.stack_exit.close()
        finally:
            harness.PROCESSES.stop_all()
            if self.opts.keep:
                print(f"\nkept the work directory: {self.work}")
            else:
                shutil.rmtree(self.work, ignore_errors=True)

    # -- services on demand -------------------------------------------------------------------

    @property
    def postgres_started(self) -> str | None:
        """The PostgreSQL server's URL if a scenario started it."""
        return self._postgres_url

    def postgres_url(self) -> str | None:
        """A throwaway PostgreSQL server (started once), or None when it cannot run here."""
        if self._postgres_url is None:
            sys.path.insert(0, str(ROOT))
            from tests.services import postgres_bindir, postgres_server  # noqa: PLC0415

            if postgres_bindir() is None or self._postgres_failed:
                return None
            try:
                self._postgres_url = self.stack_exit.enter_context(postgres_server())
            except Exception as err:  # noqa: BLE001 - its cases are skipped, and say why
                self._postgres_failed = f"{type(err).__name__}: {err}"
                print(f"  PostgreSQL could not start: {self._postgres_failed}", flush=True)
                return None
        return self._postgres_url

    def fresh_postgres_database(self, name: str) -> str | None:
        url = self.postgres_url()
        if url is None:
            return None
        from tests.services import fresh_database  # noqa: PLC0415

        return fresh_database(url, name)

    # -- platforms ----------------------------------------------------------------------------

    def platform(self, backend: Backend, size: Size, *, tenants: int = 2,
                 upload_all: bool = False) -> PlatformInfo:
        """The platform of that size (generated once per run), its blobs in their bucket."""
        key = (backend, size.slug, tenants)
        if key in self.platforms:
            return self.platforms[key]
        name = f"{'pg' if backend == 'postgresql' else 'sq'}-{len(self.platforms) + 1}"
        t0 = time.monotonic()
        print(f"  generating platform {name}: {backend}, {tenants} tenants of about "
              f"{size.rows:,} rows and {size.documents:,} documents "
              f"(mean {size.doc_kib_text}) ...", flush=True)
        db_path: Path | None = None
        if backend == "sqlite":
            db_path = self.work / f"{name}.sqlite"
            plat = platforms.build("sqlite", str(db_path), size, tenants=tenants)
            source_url = f"sqlite:///{db_path}"
        else:
            url = self.fresh_postgres_database(f"bench_{name.replace('-', '_')}")
            if url is None:
                raise BenchError("PostgreSQL server binaries not found")
            plat = platforms.build("postgresql", url, size, tenants=tenants)
            source_url = url
        bucket = f"docs-{name}"
        self.s3.create_buckets(bucket)
        tenant = plat.tenant_ids[0]
        blobs, blob_bytes = platforms.upload_blobs(
            self.s3.client(), bucket, plat, plat.tenant_ids if upload_all else [tenant])
        catalogs = {"full": self.work / f"{name}-catalog.toml",
                    "documents": self.work / f"{name}-catalog-documents.toml"}
        catalogs["full"].write_text(plat.catalog_toml, encoding="utf-8")
        catalogs["documents"].write_text(platforms.documents_only_catalog(plat), encoding="utf-8")
        info = PlatformInfo(name, backend, size, plat, source_url, db_path, bucket, catalogs,
                            tenant, platforms.tenant_rows(plat), blobs, blob_bytes)
        self.platforms[key] = info
        print(f"  platform {name} ready in {time.monotonic() - t0:.0f} s: tenant {tenant!r} "
              f"holds {info.rows:,} rows, {size.documents:,} documents ({blobs:,} blobs "
              f"uploaded, {blob_bytes / 2**20:.1f} MiB)", flush=True)
        return info

    def target(self, info: PlatformInfo, run: str, catalog: str = "full") -> pipeline.Target:
        """Our pipeline on ``info`` with buckets and state of its own (named ``run``)."""
        export_bucket, backup_bucket = f"exp-{run}", f"bak-{run}"
        self.s3.create_buckets(export_bucket, backup_bucket)
        return pipeline.Target(source_url=info.source_url, catalog=info.catalogs[catalog],
                               state_dir=self.work / "state" / run,
                               documents_bucket=info.documents_bucket,
                               export_bucket=export_bucket, backup_bucket=backup_bucket,
                               master_key=self.master_key)

    # -- measuring ----------------------------------------------------------------------------

    def measure(self, name: str, args: list[str], env: dict[str, str], *,
                stdin: Path | None = None, cwd: Path | None = None,
                timeout: float | None = None) -> Step:
        """Run one command with the proxy's counts reset before and read after."""
        if self.opts.profile_dir is not None and _is_ours(args):
            args = _under_py_spy(args, self.opts.profile_dir / f"{name}.collapsed.txt")
        self.s3.reset()
        cpu0 = self.s3.emulator_cpu_s()
        measured = harness.measure(name, args, env, self.logs,
                                   timeout=timeout or self.opts.step_timeout, stdin=stdin,
                                   cwd=cwd)
        step = Step(measured, self.s3.stats(), self.s3.emulator_cpu_s() - cpu0,
                    self.s3.latency_s)
        tenant = pipeline.tenant_of(args[args.index("--") + 1:] if "--" in args else args)
        if measured.timed_out and tenant is not None:
            harness.measure(f"{name}-release-lock", pipeline.release_lock_command(tenant),
                            self.base_env, self.logs, timeout=120)
        self.machine.sample()
        self.results[name] = step
        rss = f", peak RSS {measured.peak_rss_mib:.0f} MiB" if measured.peak_rss_kib else ""
        print(f"    {name}: {measured.wall_s:.1f} s{rss}, {step.s3.total:,} S3 requests"
              f"{'' if step.ok else ' — ' + step.status()}", flush=True)
        return step

    def set_latency(self, ms: float) -> None:
        self.s3.set_latency(ms / 1000)
        self.s3.latency_s = ms / 1000

    def has(self, *tools: str) -> bool:
        return not (set(tools) & self.missing)

    def op_env(self, **kwargs: Any) -> dict[str, str]:
        if self.operator is None:
            raise BenchError("the services are not started")
        return self.operator.env(self.base_env, **kwargs)


def _is_ours(args: list[str]) -> bool:
    return args[0] == str(pipeline.CLI) or "bench.fanout_child" in args


def _under_py_spy(args: list[str], out: Path) -> list[str]:
    """``args`` sampled by py-spy (wall-clock samples, waiting included: ``--idle``)."""
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    out.parent.mkdir(parents=True, exist_ok=True)
    return [py_spy, "record", "--rate", "50", "--idle", "--subprocesses", "--format", "raw",
            "--output", str(out), "--", *args]
