"""Start-up of the CLI commands an operator types many times a day, per command.

Every figure is one whole ``tenant-export`` process, from its start to its exit, on embedded
defaults (no ``PREFECT_API_URL``): the reference platform in SQLite, a local S3 emulator
(moto, in this process), the control database in a temporary state directory.

Commands that run a flow are measured three ways, in turn for each run so a drift of the
machine's speed hits all three alike:

- ``before``: ``TENANT_EXPORT_LOCAL_SERVER_IDLE=0``, Prefect's temporary server inside every
  command (how every flow command ran before the kept server);
- ``cold``: the kept local server is stopped first (not timed): the command starts it;
- ``warm``: the kept server runs: the command finds and reuses it.

Commands that run no flow never touch Prefect: measured once (``plain``). Since issue 13 that
includes ``snapshots``, ``links`` and the migration ledger commands (``log``, ``statement``...),
which answer without a flow run; ``migration open`` still runs one and stands for the flow
commands. ``cpu s`` is the command's own user+system time, its children included (the
temporary server of ``before``), the kept server's work excluded (it is another process).
Medians of ``--runs`` runs.

``--baseline DIR`` also runs every command from another checkout of the project (``git
archive HEAD | tar -x -C DIR``, or ``git worktree add DIR REV``), in turn with this one's
runs (mode ``base``, its flow commands on the warm kept server): a before/after comparison
under the same load, which on a shared machine moves every figure by several times. The
setup (a backup, an export, a migration case) is then made by the baseline, so a checkout
whose backup is being reworked can still be measured.

    .venv/bin/python bench/cli_startup.py              # about 5 minutes on 2 busy cores
    .venv/bin/python bench/cli_startup.py --runs 1 --only "sla due" --only snapshots
    .venv/bin/python bench/cli_startup.py --runs 3 --baseline /tmp/base   # before/after
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
CLI = [sys.executable, "-m", "tenant_export.cli"]
TENANT = "choir"
WARM_UP = ["migration", "open", TENANT]
"""A flow command in every version: starts the kept server for the baseline's runs."""


@dataclass
class Figures:
    """The runs of one command in one mode."""

    wall: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)
    failures: int = 0

    def median(self) -> float:
        return statistics.median(self.wall) if self.wall else float("nan")


def measure(argv: list[str], env: dict[str, str], log: Path, cwd: Path = ROOT
            ) -> tuple[float, float, int]:
    """Wall seconds, CPU seconds (children included) and exit status of one process (run in
    ``cwd``: the checkout whose packages it imports)."""
    with open(log, "ab") as out:
        started = time.monotonic()
        process = subprocess.Popen(argv, env=env, stdout=out, stderr=out, cwd=cwd)
        _, status, usage = os.wait4(process.pid, 0)
        wall = time.monotonic() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    return wall, usage.ru_utime + usage.ru_stime, process.returncode


def platform(tmp: Path) -> tuple[dict[str, str], Any]:
    """The reference platform and a moto S3 endpoint; the environment of every command."""
    import boto3  # noqa: PLC0415
    from moto.server import ThreadedMotoServer  # noqa: PLC0415

    from storage.keys import generate_master_key  # noqa: PLC0415
    from tenant_export.refplatform import PlatformSpec, create_sqlite, upload_blobs  # noqa: PLC0415

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's request lines
    database = tmp / "platform.sqlite"
    reference = create_sqlite(database, PlatformSpec.tiny())
    (tmp / "catalog.toml").write_text(reference.catalog_toml, encoding="utf-8")
    import socket  # noqa: PLC0415

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    s3 = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    s3.start()
    access, secret = "bench" + secrets.token_hex(4), secrets.token_urlsafe(24)
    client = boto3.session.Session().client(
        "s3", endpoint_url=f"http://127.0.0.1:{port}", region_name="us-east-1",
        aws_access_key_id=access, aws_secret_access_key=secret)
    for bucket in ("platform-documents", "tenant-exports", "tenant-backups"):
        client.create_bucket(Bucket=bucket)
    upload_blobs(client, "platform-documents", reference)
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("PREFECT_", "TENANT_EXPORT_", "AWS_"))}
    env.update({
        "AWS_ENDPOINT_URL_S3": f"http://127.0.0.1:{port}", "AWS_ACCESS_KEY_ID": access,
        "AWS_SECRET_ACCESS_KEY": secret, "AWS_DEFAULT_REGION": "us-east-1",
        "TENANT_EXPORT_SOURCE_URL": f"sqlite:///{database}",
        "TENANT_EXPORT_CATALOG": str(tmp / "catalog.toml"),
        "TENANT_EXPORT_STATE_DIR": str(tmp / "state"),
        "TENANT_EXPORT_MASTER_KEY": generate_master_key(),
        "PREFECT_HOME": str(tmp / "prefect-client"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    })
    return env, s3


def prepare(env: dict[str, str], log: Path, cwd: Path = ROOT) -> str:
    """A snapshot and an export to list and link, a migration case to log on; its id (made by
    the checkout in ``cwd``)."""
    for args in (["backup", TENANT], ["export", TENANT]):
        if measure([*CLI, *args], env, log, cwd)[2] != 0:
            raise SystemExit(f"setup failed: tenant-export {' '.join(args)}; see {log}")
    opened = subprocess.run([*CLI, "migration", "open", TENANT, "--json"], env=env, cwd=cwd,
                            capture_output=True, text=True, check=True)
    return str(json.loads(opened.stdout)["case_id"])


def commands(case_id: str) -> dict[str, tuple[list[str], bool]]:
    """Name: (arguments, runs a flow)."""
    return {
        "python -c pass (floor)": (["-c", "pass"], False),
        "--help": (["--help"], False),
        "sla due": (["sla", "due", "--received", "2026-11-26T10:00:00+01:00", "--hours", "30"],
                    False),
        "catalog show": (["catalog", "show"], False),
        "doctor": (["doctor"], False),
        "offboard status": (["offboard", "status", TENANT], False),  # no case: exit 2
        "audit": (["audit", TENANT], False),
        "snapshots": (["snapshots", TENANT], False),
        "links": (["links", TENANT], False),
        "migration log": (["migration", "log", case_id, "--minutes", "5", "--entry-id",
                           "bench-1"], False),
        "migration statement": (["migration", "statement", case_id], False),
        "migration open": (["migration", "open", TENANT], True),
    }


def expected_status(name: str) -> int:
    """``offboard status`` of a tenant without an offboarding case is refused: exit 2."""
    return 2 if name == "offboard status" else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3, help="runs per command and mode")
    parser.add_argument("--only", action="append", help="measure only these commands")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    parser.add_argument("--baseline", type=Path, help="another checkout to measure in turn "
                        "(mode base): before/after under the same load")
    args = parser.parse_args()
    if args.baseline is not None and not (args.baseline / "tenant_export" / "cli.py").is_file():
        parser.error(f"--baseline {args.baseline}: not a checkout of this project")
    sys.path.insert(0, str(ROOT))
    from tenant_export import localserver  # noqa: PLC0415

    tmp = Path(tempfile.mkdtemp(prefix="cli-startup-"))
    log = tmp / "commands.log"
    env, s3 = platform(tmp)
    state_dir = tmp / "state"
    results: dict[tuple[str, str], Figures] = {}
    try:
        case_id = prepare(env, log, args.baseline or ROOT)  # the baseline: a known-good setup
        for name, (argv, runs_flow) in commands(case_id).items():
            if args.only and name not in args.only:
                continue
            full = [sys.executable, *argv] if name.startswith("python") else [*CLI, *argv]
            modes: tuple[str, ...] = ("before", "cold", "warm") if runs_flow else ("plain",)
            if args.baseline is not None and not name.startswith("python"):
                modes = ("base", *modes)
            for _ in range(args.runs):
                for mode in modes:
                    cwd = args.baseline if mode == "base" else ROOT
                    if mode == "cold":
                        localserver.stop(state_dir)
                    if mode in ("warm", "base") and localserver.read_state(
                            localserver.files_of(state_dir)) is None:
                        # not timed: start the server first (the baseline's flow commands
                        # find it warm too)
                        warm_up = full if mode == "warm" else [*CLI, *WARM_UP]
                        measure(warm_up, env, log)
                    run_env = env if mode != "before" else {
                        **env, "TENANT_EXPORT_LOCAL_SERVER_IDLE": "0",
                        # Prefect's 20 s default fails on a busy machine: not what is measured
                        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180"}
                    wall, cpu, status = measure(full, run_env, log, cwd)
                    figures = results.setdefault((name, mode), Figures())
                    if status != expected_status(name):
                        figures.failures += 1
                        print(f"  {name} ({mode}) failed with {status}: see {log}", flush=True)
                    figures.wall.append(wall)
                    figures.cpu.append(cpu)
                    print(f"  {name:<24} {mode:<6} {wall:6.2f} s (exit {status})", flush=True)
    finally:
        localserver.stop(state_dir)
        s3.stop()
    report(results, args.runs)
    if args.keep or any(f.failures for f in results.values()):
        print(f"kept {tmp}")
    else:
        import shutil  # noqa: PLC0415

        shutil.rmtree(tmp, ignore_errors=True)
    return 1 if any(f.failures for f in results.values()) else 0


def report(results: dict[tuple[str, str], Figures], runs: int) -> None:
    """The table and the ratios."""
    print(f"\nCLI start-up per command (median of {runs}; {os.cpu_count()} CPUs, "
          f"Python {sys.version.split()[0]}, load {os.getloadavg()[0]:.1f})")
    print(f"{'command':<26}{'mode':<8}{'wall s':>8}{'min':>8}{'max':>8}{'cpu s':>8}  exit!=0")
    for (name, mode), fig in results.items():
        print(f"{name:<26}{mode:<8}{fig.median():>8.2f}{min(fig.wall):>8.2f}"
              f"{max(fig.wall):>8.2f}{statistics.median(fig.cpu):>8.2f}  {fig.failures}")
    print("\nratios of medians (wall): base/now is this checkout's gain over --baseline (its "
          "plain, else warm figure); before/warm the gain for every flow command after the "
          "first; cold/warm the first command's extra cost")
    for name in dict.fromkeys(n for n, _ in results):
        base, now = results.get((name, "base")), results.get((name, "plain"))
        now = now or results.get((name, "warm"))
        if base and now:
            print(f"  {name:<24} base/now    {base.median() / now.median():5.1f}x   "
                  f"(cpu {statistics.median(base.cpu):.2f} s -> "
                  f"{statistics.median(now.cpu):.2f} s)")
        before, cold, warm = (results.get((name, m)) for m in ("before", "cold", "warm"))
        if before and cold and warm:
            print(f"  {name:<24} before/warm {before.median() / warm.median():5.1f}x   "
                  f"cold/warm {cold.median() / warm.median():5.1f}x   "
                  f"before/cold {before.median() / cold.median():5.1f}x")


if __name__ == "__main__":
    sys.exit(main())
