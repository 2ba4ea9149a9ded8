"""Orchestration cost of the process work pool: runs/second and CPU seconds per flow run with
a trivial flow, for 1 and 2 workers (figures in ``docs/scaling.md``).

    .venv/bin/python -m tests.pool_bench [--runs 40] [--limit 4]

A local Prefect server (SQLite) on a free port; workers are Prefect's own process workers; each
flow run is a process of its own. CPU seconds per run are read from the workers' reaped
children (``/proc/<pid>/stat`` cutime + cstime), so they do not depend on how busy the machine
is, unlike runs/second.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import signal
import tempfile
import time
from pathlib import Path
from typing import Any

from prefect import flow

from deployments import processes
from deployments.server import LocalServer
from tests.services import ROOT, free_port

POOL = "bench"


@flow(name="trivial", flow_run_name="trivial-{n}", persist_result=False)
def trivial(n: int = 0) -> int:
    """Nothing but the orchestration around it."""
    return n


def _children_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[13]) + int(fields[14])) / os.sysconf("SC_CLK_TCK")


def measure(api_url: str, home: Path, workers: int, runs: int, limit: int) -> dict[str, Any]:
    """Start ``workers`` workers, run ``runs`` trivial flow runs at once, stop the workers."""
    from prefect.client.orchestration import get_client

    env = {**os.environ, "PREFECT_API_URL": api_url, "PREFECT_HOME": str(home / "workers"),
           "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
           "PYTHONPATH": str(ROOT)}  # flow runs start in a temporary folder: find `tests`
    names = [f"bench-{workers}-{i}" for i in range(workers)]
    procs = [processes.start(processes.python("prefect", "worker", "start", "--pool", POOL,
                                              "--name", name, "--limit", str(limit)),
                             env, log=home / f"{name}.log", cwd=ROOT) for name in names]
    try:
        with get_client(sync_client=True) as client:
            deadline = time.monotonic() + 180
            while {w.name for w in client.read_workers_for_work_pool(POOL)
                   if w.status == "ONLINE"} < set(names):
                if time.monotonic() > deadline:
                    raise RuntimeError("workers did not come online")
                time.sleep(0.5)
            deployment = client.read_deployment_by_name("trivial/bench").id
            load = os.getloadavg()[0]
            started = time.monotonic()
            ids = [client.create_flow_run_from_deployment(deployment, parameters={"n": i}).id
                   for i in range(runs)]
            while True:
                done = [client.read_flow_run(i) for i in ids]
                if all(r.state is not None and r.state.is_final() for r in done):
                    break
                time.sleep(1)
            seconds = time.monotonic() - started
            cpu = sum(_children_cpu(p.pid) for p in procs)
    finally:
        for proc in procs:
            processes.stop(proc, signal.SIGINT, 30)
    return {"workers": workers, "limit_per_worker": limit, "runs": runs,
            "completed": sum(bool(r.state and r.state.is_completed()) for r in done),
            "states": sorted({r.state.name for r in done if r.state}),
            "seconds": round(seconds, 1), "runs_per_second": round(runs / seconds, 3),
            "cpu_seconds_per_run": round(cpu / runs, 2), "load_before": round(load, 2),
            "cores": os.cpu_count()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=40)
    parser.add_argument("--limit", type=int, default=4)
    args = parser.parse_args()
    from prefect.settings import PREFECT_API_URL, temporary_settings
    from prefect.types.entrypoint import EntrypointType

    from deployments.pool import ensure_process_pool

    with tempfile.TemporaryDirectory(prefix="pool-bench-") as tmp:
        home = Path(tmp)
        server = LocalServer(port=free_port(), home=home, log=home / "server.log")
        server.start(timeout=300)
        try:
            with temporary_settings(updates={PREFECT_API_URL: server.api_url}):
                ensure_process_pool(POOL)
                # imported by its module name: run as __main__, its entrypoint would be wrong
                bench_flow = importlib.import_module("tests.pool_bench").trivial
                bench_flow.to_deployment(name="bench", entrypoint_type=EntrypointType.MODULE_PATH
                                         ).apply(work_pool_name=POOL)
                results = [measure(server.api_url, home, n, args.runs, args.limit)
                           for n in (1, 2)]
        finally:
            server.stop()
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
