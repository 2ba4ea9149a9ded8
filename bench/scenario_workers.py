"""The nightly fan-out across real workers: N tiny tenants through one ``nightly-backup`` run
with ``shards`` = 2 x workers, as production runs it (figures of docs/scaling.md §6).

    .venv/bin/python -m bench.scenario_workers --tenants 1000 --workers 1
    .venv/bin/python -m bench.scenario_workers --tenants 1000 --workers 1,2 --json out.json
    .venv/bin/python -m bench.scenario_workers --tenants 40 --workers 1 --keep   # quick check

Set up once: moto's S3 server (a process, no latency: the overhead is CPU and round trips to the
Prefect server, and S3 waiting would add the same to both sides), a SQLite reference platform
of N tenants of about 30 rows and 2 documents each (blobs uploaded), a bytecode cache.

For each worker count W, two measurements, each on a **fresh** Prefect server (SQLite, own
``PREFECT_HOME``), its own backup bucket and control database, so both back up every tenant
for the first time and both create the per-tenant lock limits on their server:

* **night**: the project's deployments, pool and automations provisioned as ``make serve``
  does; W workers (``python -m deployments.worker --limit L``); one ``nightly-backup`` run with
  ``shards`` = 2W (the parent run waits on a worker slot while its shard runs, each a process
  with a task per tenant, 4 at a time, do the work). Wall = from creating the run to the end
  time the server recorded for it. Also: when the parent and each shard started (worker pick-up
  and process start), which worker ran which run.
* **plain**: the same per-tenant work (``backup_one.fn``: lock on the Prefect server, backup,
  audit, metrics) without flow or task runs: 2W plain processes started at once, each backing
  up its shard (``tenants[i::2W]``) on a thread pool as wide as the flow's task runner. Wall =
  from starting the first to the end of the last (process start and imports included, as a
  cron script would pay them; the part after imports is printed too). Before the clock, one
  process creates the control database's tables (in the night the workers' preflight does so
  before the clock too): several processes creating a fresh SQLite control database at once
  corrupted it.

Overhead per tenant = (night wall - plain wall) / N, and the same with CPU seconds: the night's
workers, their flow-run processes and the Prefect server against the plain processes and their
server (moto's CPU is printed apart: the same S3 work on both sides). On a shared 2-core machine
the CPU figure is the steadier one: wall time moves with what other people run, CPU seconds
hardly do. Printed with each measurement: the load average before and after, and the machine's
busy CPU seconds (``/proc/stat``) minus ours, i.e. what others used meanwhile. At the end the
Prefect database's size after the night (file plus WAL, and rows per table).

Internal: ``python -m bench.scenario_workers plain-shard OUT.json INDEX COUNT`` is one plain
process (the environment names the platform, as for a worker).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import harness, pipeline, platforms
from bench.context import PYCACHE, ROOT
from bench.machine import LoadSampler, busy_cpu_s, cores
from bench.platforms import Size
from bench.s3stack import S3Stack
from bench.workers_report import overhead, report

SIZE = Size(rows=30, documents=2, blob_bytes=1024)
"""A tiny tenant, as in scenario 5 (``bench/scenario_fanout.py``)."""
DOCS_BUCKET = "docs-workers"


# -- the services ------------------------------------------------------------------------------


@dataclass
class Setup:
    """What both sides share: the work directory, moto, the platform and its catalog."""

    work: Path
    tenants: int
    s3: S3Stack
    source_url: str
    catalog: Path
    master_key: str = field(default_factory=pipeline.master_key, repr=False)

    def aws_env(self) -> dict[str, str]:
        """S3 straight to moto (no proxy: nothing to count, one process less on the CPUs)."""
        env = self.s3.aws_env()
        env["AWS_ENDPOINT_URL_S3"] = env["AWS_ENDPOINT_URL"] = self.s3.moto_url
        return env

    def moto_cpu_s(self) -> float:
        return harness.process_cpu_s(self.s3.moto_pid)


def prepare(work: Path, tenants: int) -> Setup:
    """moto, the platform of ``tenants`` tiny tenants with every blob uploaded, warm bytecode."""
    (work / "logs").mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    s3 = S3Stack(work, 0.0).start()
    plat = platforms.build("sqlite", str(work / "platform.sqlite"), SIZE, tenants=tenants)
    s3.create_buckets(DOCS_BUCKET)
    blobs, nbytes = platforms.upload_blobs(s3.client(), DOCS_BUCKET, plat, plat.tenant_ids)
    catalog = work / "catalog.toml"
    catalog.write_text(plat.catalog_toml, encoding="utf-8")
    setup = Setup(work, tenants, s3, f"sqlite:///{work / 'platform.sqlite'}", catalog)
    warm = harness.measure("warm-bytecode", pipeline.warm_command(),
                           pipeline.base_env(setup.aws_env(), "http://127.0.0.1:9/api", PYCACHE,
                                             work / "prefect-client"),
                           work / "logs", timeout=900)
    if not warm.ok:
        raise harness.BenchError(f"importing the project failed: {warm.error_tail()}")
    print(f"setup in {time.monotonic() - t0:.0f} s: {len(plat.tenant_ids):,} tenants of about "
          f"{platforms.tenant_rows(plat)} rows, {blobs:,} blobs ({nbytes / 2**20:.1f} MiB) on "
          f"moto {s3.moto_url}", flush=True)
    return setup


class Side:
    """One measurement's own Prefect server, buckets, state and environment."""

    def __init__(self, setup: Setup, name: str) -> None:
        from deployments.server import LocalServer  # noqa: PLC0415 - the project's own server

        self.setup, self.name = setup, name
        self.home = setup.work / f"prefect-{name}"
        self.server = LocalServer(port=harness.free_port(), home=self.home,
                                  log=setup.work / "logs" / f"prefect-{name}.log")
        self.server.start(timeout=300)
        assert self.server.process is not None
        self.server_pid = self.server.process.pid
        setup.s3.create_buckets(f"exp-{name}", f"bak-{name}")
        target = pipeline.Target(source_url=setup.source_url, catalog=setup.catalog,
                                 state_dir=setup.work / "state" / name,
                                 documents_bucket=DOCS_BUCKET, export_bucket=f"exp-{name}",
                                 backup_bucket=f"bak-{name}", master_key=setup.master_key)
        self.env = target.env(pipeline.base_env(setup.aws_env(), self.server.api_url, PYCACHE,
                                                setup.work / f"client-{name}"))

    def server_cpu_s(self) -> float:
        return harness.tree_cpu_s(self.server_pid)

    def stop(self) -> dict[str, Any]:
        """Stop the server; the size of its database afterwards and its rows per table."""
        wal = sum(p.stat().st_size for p in self.home.glob("*.db-wal"))
        self.server.stop()
        dbs = sorted(self.home.glob("*.db"))
        info: dict[str, Any] = {"db_mib": round(sum(p.stat().st_size for p in dbs) / 2**20, 1),
                                "wal_mib_before_stop": round(wal / 2**20, 1), "rows": {}}
        for db in dbs:
            with sqlite3.connect(db) as conn:
                for table in ("flow_run", "task_run", "flow_run_state", "task_run_state", "log",
                              "events", "event_resources", "artifact",
                              "concurrency_limit_v2"):
                    try:
                        (count,) = conn.execute(f"SELECT count(*) FROM {table}").fetchone()
                    except sqlite3.Error:
                        continue
                    info["rows"][table] = int(count)
        return info


# -- the night on workers ------------------------------------------------------------------------


def _environ_of(pid: int) -> dict[str, str]:
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return {}
    pairs = (item.partition(b"=") for item in raw.split(b"\0") if item)
    return {k.decode(errors="replace"): v.decode(errors="replace") for k, _, v in pairs}


def _seconds(start: datetime | None, end: datetime | None) -> float | None:
    return None if start is None or end is None else round((end - start).total_seconds(), 1)


def night(setup: Setup, workers: int, shards: int, limit: int, timeout: float) -> dict[str, Any]:
    """W workers, one nightly-backup run with ``shards`` shards; its figures."""
    from prefect.client.orchestration import get_client  # noqa: PLC0415
    from prefect.client.schemas.filters import (  # noqa: PLC0415
        ArtifactFilter,
        ArtifactFilterFlowRunId,
        ArtifactFilterKey,
    )
    from prefect.settings import PREFECT_API_URL, temporary_settings  # noqa: PLC0415

    from deployments.automations import AlertTarget  # noqa: PLC0415
    from deployments.definitions import WORK_POOL  # noqa: PLC0415
    from deployments.serve import provision  # noqa: PLC0415

    side = Side(setup, f"night-{workers}w")
    procs = []
    try:
        provision(side.server.api_url, WORK_POOL, AlertTarget())
        names = [f"w{i + 1}" for i in range(workers)]
        procs = [harness.PROCESSES.start(
            [sys.executable, "-m", "deployments.worker", "--name", name, "--limit", str(limit)],
            side.env, log=setup.work / "logs" / f"{side.name}-{name}.log", cwd=ROOT)
            for name in names]
        with temporary_settings(updates={PREFECT_API_URL: side.server.api_url}), \
                get_client(sync_client=True) as client:
            deadline = time.monotonic() + 300
            while {w.name for w in client.read_workers_for_work_pool(WORK_POOL)
                   if w.status == "ONLINE"} < set(names):
                if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
                    raise harness.BenchError(f"workers did not come online (see {setup.work}"
                                             "/logs)")
                time.sleep(0.5)
            time.sleep(2)  # the workers' first poll done: idle from here
            deployment = client.read_deployment_by_name("nightly_backup/nightly-backup")
            ran_on: dict[str, str] = {}
            peak = 0
            with LoadSampler() as load:
                busy0, moto0 = busy_cpu_s(), setup.moto_cpu_s()
                server0 = side.server_cpu_s()
                workers0 = sum(harness.tree_cpu_s(p.pid) for p in procs)
                t0_wall, t0 = time.time(), time.monotonic()
                t0_dt = datetime.fromtimestamp(t0_wall, tz=UTC)
                run = client.create_flow_run_from_deployment(deployment.id,
                                                             parameters={"shards": shards})
                while True:
                    running = 0
                    for name, proc in zip(names, procs, strict=True):
                        for child in harness.children_of(proc.pid):
                            for pid in harness.children_of(child):
                                running += 1
                                run_id = _environ_of(pid).get("PREFECT__FLOW_RUN_ID")
                                if run_id:
                                    ran_on[run_id] = name
                    peak = max(peak, running)
                    state = client.read_flow_run(run.id).state
                    if state is not None and state.is_final():
                        break
                    if time.monotonic() - t0 > timeout:
                        raise harness.BenchError(f"the night did not end in {timeout:g} s")
                    time.sleep(1.0)
                seen_at = time.monotonic()
                # the flow-run processes end (and are reaped) just after their final state
                end = time.monotonic() + 60
                while time.monotonic() < end and any(
                        harness.children_of(c) for p in procs
                        for c in harness.children_of(p.pid)):
                    time.sleep(0.2)
                workers_cpu = sum(harness.tree_cpu_s(p.pid) for p in procs) - workers0
                server_cpu = side.server_cpu_s() - server0
                moto_cpu = setup.moto_cpu_s() - moto0
                busy = busy_cpu_s() - busy0
                measured_s = time.monotonic() - t0
            runs = client.read_flow_runs()
            parent = next(r for r in runs if r.id == run.id)
            shard_deployment = client.read_deployment_by_name(
                "nightly_backup/nightly-backup-shard").id
            shard_runs = sorted((r for r in runs if r.deployment_id == shard_deployment),
                                key=lambda r: (r.start_time or r.created or t0_dt).timestamp())
            artifacts = client.read_artifacts(artifact_filter=ArtifactFilter(
                flow_run_id=ArtifactFilterFlowRunId(any_=[run.id]),
                key=ArtifactFilterKey(any_=["nightly-backup"])))
        rows: list[dict[str, Any]] = []
        if artifacts:
            data: Any = artifacts[0].data
            loaded = json.loads(data) if isinstance(data, str) else data
            rows = [dict(r) for r in loaded] if isinstance(loaded, list) else []
        started = t0_dt
        wall = ((parent.end_time.timestamp() - t0_wall) if parent.end_time
                else seen_at - t0)
        ours = workers_cpu + server_cpu + moto_cpu
        result: dict[str, Any] = {
            "side": "night", "workers": workers, "shards": shards, "limit": limit,
            "tenants": setup.tenants, "state": parent.state.name if parent.state else None,
            "message": (parent.state.message or "")[:300] if parent.state else "",
            "ok_tenants": sum(1 for r in rows if r.get("status") == "ok"),
            "failed_tenants": sum(1 for r in rows if r.get("status") == "failed"),
            "wall_s": round(wall, 1),
            "parent_picked_up_s": _seconds(started, parent.start_time),
            "shards_detail": [{
                "name": r.name, "worker": ran_on.get(str(r.id), "?"),
                "state": r.state.name if r.state else None,
                "created_after_s": _seconds(started, r.created),
                "pickup_s": _seconds(r.created, r.start_time),
                "run_s": _seconds(r.start_time, r.end_time)} for r in shard_runs],
            "parent_on": ran_on.get(str(run.id), "?"),
            "after_last_shard_s": _seconds(max((r.end_time for r in shard_runs if r.end_time),
                                               default=None), parent.end_time),
            "peak_flow_run_processes": peak,
            "cpu_workers_and_runs_s": round(workers_cpu, 1),
            "cpu_server_s": round(server_cpu, 1), "cpu_moto_s": round(moto_cpu, 1),
            "cpu_others_s": round(busy - ours, 1), "cpu_available_s": round(
                measured_s * cores(), 1),
            **load.summary()}
    finally:
        for proc in procs:
            harness.PROCESSES.stop(proc, grace=60.0)  # SIGTERM: the worker's own clean stop
        result_db = side.stop()
    result["prefect_db"] = result_db
    return result


# -- the plain baseline ---------------------------------------------------------------------------


def plain(setup: Setup, count: int, timeout: float) -> dict[str, Any]:
    """``count`` plain processes at once, each backing up its shard without Prefect's runs."""
    side = Side(setup, f"plain-{count}p")
    logs = setup.work / "logs"
    init = harness.measure(f"{side.name}-init", [sys.executable, "-m", "bench.scenario_workers",
                                                  "plain-init"], side.env, logs, timeout=600,
                           cwd=ROOT)
    if not init.ok:
        side.stop()
        raise harness.BenchError(f"preparing the control database failed: {init.error_tail()}")
    try:
        with LoadSampler() as load:
            busy0, moto0 = busy_cpu_s(), setup.moto_cpu_s()
            server0 = side.server_cpu_s()
            t0 = time.monotonic()

            def one(index: int) -> harness.Measured:
                return harness.measure(
                    f"{side.name}-{index}",
                    [sys.executable, "-m", "bench.scenario_workers", "plain-shard",
                     str(logs / f"{side.name}-{index}.json"), str(index), str(count)],
                    side.env, logs, timeout=timeout, cwd=ROOT)

            with ThreadPoolExecutor(max_workers=count) as pool:
                measured = list(pool.map(one, range(count)))
            measured_s = time.monotonic() - t0
            server_cpu = side.server_cpu_s() - server0
            moto_cpu = setup.moto_cpu_s() - moto0
            busy = busy_cpu_s() - busy0
    finally:
        db = side.stop()
    parts = [json.loads((logs / f"{side.name}-{i}.json").read_text(encoding="utf-8"))
             if (logs / f"{side.name}-{i}.json").exists() else {} for i in range(count)]
    processes_cpu = sum(m.cpu_s for m in measured)
    return {
        "side": "plain", "processes": count, "tenants": setup.tenants,
        "parallelism": parts[0].get("parallelism") if parts else None,
        "ok": all(m.ok for m in measured) and all(p.get("failed") == 0 for p in parts),
        "failed_tenants": sum(int(p.get("failed", 0)) for p in parts),
        "wall_s": round(max(m.start + m.wall_s for m in measured)
                        - min(m.start for m in measured), 1),
        "wall_after_imports_s": round(max(p.get("end", 0.0) for p in parts)
                                      - min(p.get("start", 0.0) for p in parts), 1)
        if all(parts) else None,
        "cpu_processes_s": round(processes_cpu, 1), "cpu_server_s": round(server_cpu, 1),
        "cpu_moto_s": round(moto_cpu, 1),
        "cpu_others_s": round(busy - processes_cpu - server_cpu - moto_cpu, 1),
        "cpu_available_s": round(measured_s * cores(), 1),
        "errors": [m.error_tail(2) for m in measured if not m.ok],
        **load.summary(), "prefect_db": db}


CONTROL_STORES = ("storage.ledger", "storage.cases", "storage.audit", "storage.registry",
                  "storage.key_registry", "storage.tokens", "monitoring.store")


def plain_init() -> int:
    """Before the plain processes start: the control database's tables, made by one process.

    In the night the workers' preflight (``doctor``) and the parent run open the control
    database before any shard does; several plain processes creating a fresh SQLite control
    database at the same instant corrupted it here ("database disk image is malformed")."""
    import importlib  # noqa: PLC0415

    from sqlalchemy import MetaData  # noqa: PLC0415

    from deployments.doctor import run_checks  # noqa: PLC0415
    from kernel.settings import Settings  # noqa: PLC0415
    from storage.control import open_control  # noqa: PLC0415

    settings = Settings()
    refused = [c.line() for c in run_checks(settings) if c.required and not c.ok]
    for name in CONTROL_STORES:
        module = importlib.import_module(name)
        for metadata in {id(v): v for v in vars(module).values()
                         if isinstance(v, MetaData)}.values():
            open_control(settings.resolved_control_url(), metadata).dispose()
    print("\n".join(refused), file=sys.stderr)
    return 1 if refused else 0


def plain_shard(out: Path, index: int, count: int) -> int:
    """One plain process: its shard of the platform's tenants, the task's plain function on a
    thread pool of the flow's width (``bench.pipeline.backup_alone``)."""
    tenants = pipeline.tenants_of_platform()[index::count]
    parallelism = pipeline.nightly_parallelism()
    t0 = time.monotonic()
    failed = pipeline.backup_alone(tenants, parallelism)
    out.write_text(json.dumps({"tenants": len(tenants), "parallelism": parallelism,
                               "failed": failed, "start": t0, "end": time.monotonic()}),
                   encoding="utf-8")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["plain-shard"]:
        return plain_shard(Path(argv[1]), int(argv[2]), int(argv[3]))
    if argv[:1] == ["plain-init"]:
        return plain_init()
    parser = argparse.ArgumentParser(prog="python -m bench.scenario_workers", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tenants", type=int, default=1000)
    parser.add_argument("--workers", default="1",
                        help="worker counts, comma-separated (1,2: both, one after the other)")
    parser.add_argument("--shards-per-worker", type=int, default=2,
                        help="shards of the night = this x workers (default 2)")
    parser.add_argument("--limit", type=int, default=4,
                        help="flow runs at once per worker (default 4, as `make worker`)")
    parser.add_argument("--timeout", type=float, default=3600,
                        help="seconds one night or baseline may take (default 3600)")
    parser.add_argument("--sides", default="night,plain",
                        help="night, plain or both (default; overhead needs both)")
    parser.add_argument("--json", type=Path, help="also write every figure here")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    parser.add_argument("--work-dir", type=Path)
    args = parser.parse_args(argv)
    counts = [int(w) for w in args.workers.split(",") if w.strip()]
    sides = {s.strip() for s in args.sides.split(",")}
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="scenario-workers-"))
    work.mkdir(parents=True, exist_ok=True)
    # this process's own Prefect client (provisioning, polling) keeps its files in the run
    os.environ["PREFECT_HOME"] = str(work / "prefect-bench")
    os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    load = os.getloadavg()
    print(f"machine: {cores()} cores, load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; "
          f"{args.tenants:,} tenants, workers {counts}; work directory {work}", flush=True)
    results: list[dict[str, Any]] = []
    try:
        with harness.interrupts_as_exceptions():
            setup = prepare(work, args.tenants)
            for workers in counts:
                shards = args.shards_per_worker * workers
                entry: dict[str, Any] = {}
                if "night" in sides:
                    entry["night"] = night(setup, workers, shards, args.limit, args.timeout)
                    print(json.dumps(entry["night"], indent=1, default=str), flush=True)
                if "plain" in sides:
                    entry["plain"] = plain(setup, shards, args.timeout)
                    print(json.dumps(entry["plain"], indent=1, default=str), flush=True)
                if len(entry) == 2:
                    entry["overhead"] = overhead(entry["night"], entry["plain"])
                    print(json.dumps(entry["overhead"]), flush=True)
                results.append(entry)
                if args.json:
                    args.json.write_text(json.dumps(results, indent=1, default=str),
                                         encoding="utf-8")
    finally:
        harness.PROCESSES.stop_all()
        if args.keep:
            print(f"kept the work directory: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    load = os.getloadavg()
    print(f"\nmachine: {cores()} cores, load average at the end {load[0]:.2f} {load[1]:.2f} "
          f"{load[2]:.2f}")
    if results and all(len(r) == 3 for r in results):
        report(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
