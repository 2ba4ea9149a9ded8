"""``make bench``: this project next to an operator's tools, with S3 at a distance.

    python -m bench                  # the default run (under 10 minutes once issue 10 is done)
    python -m bench --full           # the sizes of issue 10's targets (hours today)
    python -m bench --only documents,backups --keep

Scenarios: documents (export of small documents), tables (CSV, SQLite and PostgreSQL),
backups (full, unchanged and 1 % nights), memory (peak RSS at two sizes), fanout (nightly
orchestration overhead per tenant). S3 is moto behind a proxy adding latency per request and
counting requests; see bench/README.md.
"""

from __future__ import annotations

import argparse
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path

from bench import (
    harness,
    machine,
    operator_tools,
    report,
    scenario_backups,
    scenario_documents,
    scenario_fanout,
    scenario_memory,
    scenario_tables,
)
from bench.context import Bench, Options
from bench.report import Check, Section

SCENARIOS: dict[str, Callable[[Bench], Section]] = {
    "documents": scenario_documents.run,
    "tables": scenario_tables.run,
    "backups": scenario_backups.run,
    "memory": scenario_memory.run,
    "fanout": scenario_fanout.run,
}
NEEDS = {"documents": ("rclone", "zip"), "tables": ("sqlite3", "psql", "rclone"),
         "backups": ("rclone", "restic", "sqlite3"), "memory": (), "fanout": ()}
DEFAULT_RUN_LIMIT_S = 600.0


def parse(argv: list[str] | None) -> Options:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--full", action="store_true",
                   help="issue 10's sizes: 10,000 documents, 10M rows, 100,000 documents for "
                        "memory, 1,000 tenants (hours on 2 cores today)")
    p.add_argument("--latency-ms", type=float, default=20.0,
                   help="added to every S3 request by the proxy (default 20)")
    p.add_argument("--documents", type=int, help="documents of the export and backup tenant "
                   "(default 2,000; --full 10,000)")
    p.add_argument("--doc-kib", type=float, default=4.0,
                   help="mean document size in KiB (sizes vary from 1 byte to twice it)")
    p.add_argument("--doc-rows", type=int, default=50_000,
                   help="rows of the documents tenant (its tables, backed up too)")
    p.add_argument("--rows", type=int, help="rows of the tables tenant (default 1,000,000; "
                   "--full 10,000,000)")
    p.add_argument("--tenants", type=int, help="tenants of the fan-out (default 200; "
                   "--full 1,000)")
    p.add_argument("--fanout-latency-ms", type=float, default=0.0,
                   help="S3 latency during the fan-out (default 0: see bench/README.md)")
    p.add_argument("--row-changes", choices=("recent", "scattered"), default="recent",
                   help="which 1 %% of rows the changed night edits (default: the newest)")
    p.add_argument("--step-timeout", type=float,
                   help="seconds before a measured command is stopped and reported as a miss "
                        "(default 300; --full 3600)")
    p.add_argument("--only", help="comma-separated scenarios: " + ", ".join(SCENARIOS))
    p.add_argument("--keep", action="store_true", help="keep the work directory")
    p.add_argument("--work-dir", type=Path, help="work directory (default: a new one in /tmp)")
    p.add_argument("--no-install", action="store_true",
                   help="never apt-get install the baseline tools (skip what is missing)")
    p.add_argument("--no-docs", action="store_true", help="do not write docs/benchmarks.md")
    p.add_argument("--profile", type=Path, metavar="DIR",
                   help="run our commands under py-spy (uv pip install py-spy) and keep their "
                        "collapsed stacks in DIR (summarise: python -m bench.profile_summary); "
                        "implies --no-docs: profiled timings are not figures")
    p.add_argument("--docs", type=Path, default=Options.docs_path,
                   help="where the figures are written (default docs/benchmarks.md)")
    a = p.parse_args(argv)
    only = [s.strip() for s in (a.only or "").split(",") if s.strip()]
    unknown = [s for s in only if s not in SCENARIOS]
    if unknown:
        p.error(f"unknown scenario(s) {', '.join(unknown)}: choose from {', '.join(SCENARIOS)}")
    documents = a.documents or (10_000 if a.full else 2_000)
    rows = a.rows or (10_000_000 if a.full else 1_000_000)
    if documents < 10 or rows < 1_000 or a.doc_kib <= 0:
        p.error("--documents must be at least 10, --rows at least 1,000, --doc-kib positive")
    return Options(
        latency_ms=a.latency_ms, full=a.full, documents=documents,
        doc_bytes=max(1, round(a.doc_kib * 1024)), doc_rows=a.doc_rows, rows=rows,
        rss_small_rows=rows // 10,
        rss_small_documents=max(10, (10_000 if a.full else documents // 10)),
        rss_large_documents=100_000 if a.full else documents,
        tenants=a.tenants or (1_000 if a.full else 200),
        fanout_latency_ms=a.fanout_latency_ms, row_changes=a.row_changes,
        step_timeout=a.step_timeout or (3600.0 if a.full else 300.0), only=only,
        keep=a.keep, work_dir=a.work_dir, install_tools=not a.no_install,
        write_docs=not (a.no_docs or a.profile), docs_path=a.docs,
        profile_dir=a.profile.absolute() if a.profile else None)


def main(argv: list[str] | None = None) -> int:
    opts = parse(argv)
    chosen = opts.only or list(SCENARIOS)
    started = time.monotonic()
    installed, missing = operator_tools.ensure_tools(opts.install_tools)
    if installed:
        print(f"installed: {', '.join(installed)}")
    for tool in missing:
        users = [s for s in chosen if tool in NEEDS[s]]
        if users:
            print(f"MISSING: {tool} (apt-get install {operator_tools.DEBIAN_PACKAGES[tool]}): "
                  f"its baselines in {', '.join(users)} are skipped", flush=True)
    host = machine.describe(Path(__file__).resolve().parent.parent,
                            operator_tools.tool_versions())
    bench = Bench(opts, host, missing)
    sections: list[Section] = []
    failure: BaseException | None = None
    with harness.interrupts_as_exceptions():
        try:
            bench.start()
            for name in chosen:
                print(f"\n-- scenario {name} --", flush=True)
                try:
                    sections.append(SCENARIOS[name](bench))
                except Exception as err:  # noqa: BLE001 - one broken scenario hides no other
                    log = bench.logs / f"scenario-{name}.traceback.txt"
                    log.write_text(traceback.format_exc(), encoding="utf-8")
                    print(f"scenario {name} could not run: {type(err).__name__}: {err} "
                          f"(traceback: {log}; --keep keeps it)", flush=True)
                    broken = Section(name, f"{name}: could not run")
                    broken.check(Check(f"scenario {name}", 0, "", 0, failed=True,
                                       target=f"it failed: {type(err).__name__}: {err}"))
                    sections.append(broken)
            if bench.postgres_started:
                host.postgres = _postgres_version(bench.postgres_started)
        except KeyboardInterrupt as err:
            failure = err
            print("\ninterrupted: stopping every process the benchmark started ...", flush=True)
        except harness.BenchError as err:
            failure = err
            print(f"\nbenchmark failed: {err}", flush=True)
        finally:
            bench.close()
    total = time.monotonic() - started
    _finish(opts, host, sections, chosen, total, failure)
    return 1 if failure else 0


def _finish(opts: Options, host: machine.Machine, sections: list[Section], chosen: list[str],
            total: float, failure: BaseException | None) -> None:
    stamp = host.short()
    for section in sections:
        section.stamp = f"*Measured {stamp}; total run {total / 60:.1f} min.*"
    print(f"\n== summary: {len(sections)} scenario(s) in {total / 60:.1f} min ==")
    checks = [c for s in sections for c in s.checks]
    for check in checks:
        print(f"  {check.line()}")
    method = Section("method", "How these figures are measured", quiet=True)
    method.stamp = f"*Run {stamp}.*"
    if not opts.full and not opts.only and failure is None:
        limit = method.check(Check("the default run's duration", total / 60, " min",
                                   DEFAULT_RUN_LIMIT_S / 60, target="issue 10: make bench"))
        checks.append(limit)
    method.blocks.append(METHOD.format(latency=opts.latency_ms, timeout=opts.step_timeout,
                                       fanout=opts.fanout_latency_ms,
                                       args=" ".join(sys.argv[1:]) or "(defaults)"))
    if opts.write_docs and sections and failure is None:
        report.write_document(opts.docs_path, host.markdown(), [*sections, method])
        print(f"\nwritten: {opts.docs_path}")
    elif failure is not None:
        print("\nnot written: docs/benchmarks.md (the run did not finish)")
    missed = [c for c in checks if c.verdict == "MISS"]
    print(f"\n{len(missed)} of {len(checks)} targets missed, "
          f"{sum(1 for c in checks if c.verdict == 'SKIP')} skipped; scenarios: "
          f"{', '.join(chosen)}")


def _postgres_version(url: str) -> str:
    try:
        import psycopg  # noqa: PLC0415

        with psycopg.connect(url) as conn:
            row = conn.execute("SHOW server_version").fetchone()
            return str(row[0]) if row else ""
    except Exception:  # noqa: BLE001 - a version line is not worth failing for
        return ""


METHOD = """\
- **S3**: moto's S3 server in a process of its own, behind `tests/s3proxy.py`'s proxy (another
  process) that adds {latency:g} ms to every request and counts requests by operation and
  bucket, and uploaded bytes (`PutObject`/`UploadPart` bodies). Ours and the operator's tools
  go through the same proxy; setup (buckets, blobs, a night's changes) goes to moto directly.
  moto and the proxy share the machine's CPUs with the measured process: "emulator + proxy"
  CPU is reported with our runs.
- **Ours** runs as an operator runs it: the `tenant-export` CLI in a fresh process, with the
  environment of DESIGN §3.2, a Prefect server started for the run (`PREFECT_API_URL`), and a
  bytecode cache (warmed once, as an installed package has one). Wall time is end to end,
  start-up included; "start-up to the first S3 request" says how much of it is start-up.
- **Wall, CPU, peak RSS** of every command come from a small wrapper (`bench/spawn.py`,
  `wait4`): the benchmark's own memory is not inherited into the figure.
- **Requests in flight** = requests x latency / (last request - first request): about 1 means
  the run waited for one request after another.
- A command still running after {timeout:g} s is stopped: its figure is a lower bound ("> x")
  and a miss.
- The fan-out runs with S3 at {fanout:g} ms (see its section).
- Targets at sizes larger than a default run's are judged on the default size and say so:
  `python -m bench --full` measures at the targets' sizes.
- Arguments of this run: `{args}`.
"""


if __name__ == "__main__":
    sys.exit(main())
