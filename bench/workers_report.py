"""The figures of ``bench/scenario_workers.py``: orchestration overhead per tenant (the night
through workers against the same work in plain processes) and the table printed for
docs/scaling.md §6."""

from __future__ import annotations

from typing import Any

TARGET_MS = 50.0
"""Issue 10: at most 50 ms of orchestration per tenant at 1,000 tenants."""


def overhead(nightly: dict[str, Any], baseline: dict[str, Any]) -> dict[str, float]:
    n = nightly["tenants"]
    night_cpu = nightly["cpu_workers_and_runs_s"] + nightly["cpu_server_s"]
    plain_cpu = baseline["cpu_processes_s"] + baseline["cpu_server_s"]
    failed = int(nightly.get("failed_tenants") or 0) + int(baseline.get("failed_tenants") or 0)
    return {"valid": failed <= n // 100,  # a side whose tenants failed fast did less work
            "wall_ms_per_tenant": round((nightly["wall_s"] - baseline["wall_s"]) / n * 1000, 1),
            "cpu_ms_per_tenant": round((night_cpu - plain_cpu) / n * 1000, 1),
            "server_cpu_ms_per_tenant": round(
                (nightly["cpu_server_s"] - baseline["cpu_server_s"]) / n * 1000, 1),
            "night_cpu_s": round(night_cpu, 1), "plain_cpu_s": round(plain_cpu, 1)}


def report(results: list[dict[str, Any]]) -> None:
    print("\n| | " + " | ".join(f"{r['night']['workers']} worker(s)" for r in results) + " |")
    print("|---|" + "---|" * len(results))

    def row(label: str, cells: list[str]) -> None:
        print(f"| {label} | " + " | ".join(cells) + " |")

    row("night wall (shards)", [f"{r['night']['wall_s']:.0f} s ({r['night']['shards']})"
                                for r in results])
    row("plain wall (processes)", [f"{r['plain']['wall_s']:.0f} s ({r['plain']['processes']})"
                                   for r in results])
    row("failed tenants (night / plain)", [
        f"{r['night']['failed_tenants']} / {r['plain']['failed_tenants']}"
        + ("" if r["overhead"]["valid"] else " INVALID") for r in results])
    row("overhead per tenant, wall", [f"{r['overhead']['wall_ms_per_tenant']:.0f} ms"
                                      for r in results])
    row("overhead per tenant, CPU", [f"{r['overhead']['cpu_ms_per_tenant']:.0f} ms"
                                     for r in results])
    row("overhead per tenant, Prefect server CPU alone", [
        f"{r['overhead']['server_cpu_ms_per_tenant']:.0f} ms" for r in results])
    row("server CPU (night / plain)", [
        f"{r['night']['cpu_server_s']:.0f} s / {r['plain']['cpu_server_s']:.0f} s"
        for r in results])
    row("Prefect DB after the night", [f"{r['night']['prefect_db']['db_mib']:.1f} MiB"
                                       for r in results])
    row("load mean (night / plain)", [
        f"{r['night']['load_mean']:.1f} / {r['plain']['load_mean']:.1f}" for r in results])
    row("others' CPU s (night / plain)", [
        f"{r['night']['cpu_others_s']:.0f} / {r['plain']['cpu_others_s']:.0f}"
        for r in results])
    print(f"\ntarget (issue 10): at most {TARGET_MS:g} ms of orchestration per tenant")
