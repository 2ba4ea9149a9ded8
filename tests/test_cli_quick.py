"""Issue 13, a responsive CLI: the commands an operator types many times a day load only what
they use and run no flow. Checked by what each process imported and whether a Prefect server
was started, never by timing (docs/benchmarks.md, section cli-startup, has the figures)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tenant_export.cli import app
from tenant_export.localserver import files_of
from tests.conftest import Platform

runner = CliRunner()
ROOT = Path(__file__).resolve().parent.parent
HEAVY = ("prefect", "pyarrow", "pandas", "boto3", "sqlalchemy", "pydantic_settings", "flows",
         "sources", "storage")
PROBE = """
import atexit, json, sys
watch = sys.argv.pop().split(",")
atexit.register(lambda: sys.stderr.write("\\nloaded: " + json.dumps(sorted(
    m for m in watch if m in sys.modules)) + "\\n"))
from tenant_export.cli import main
main()
"""
"""Runs ``tenant-export ARGS...`` (the last argument: modules to report) and says on stderr,
at exit, which of those modules the process had loaded."""


def test_importing_the_cli_loads_nothing_heavy() -> None:
    code = f"import sys, tenant_export.cli; print([m for m in {HEAVY!r} if m in sys.modules])"
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, check=True, timeout=120)
    assert done.stdout.strip() == "[]", done.stderr


def _quick(env: dict[str, str], *args: str, watch: tuple[str, ...] = ("prefect",)
           ) -> tuple[int, str, str, list[str]]:
    """A whole ``tenant-export`` process: exit status, stdout, stderr, modules of ``watch``
    it loaded."""
    done = subprocess.run([sys.executable, "-c", PROBE, *args, ",".join(watch)], env=env,
                          cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)
    err, _, loaded = done.stderr.rpartition("\nloaded: ")
    return done.returncode, done.stdout, err, json.loads(loaded)


def _embedded_defaults(tmp_path: Path) -> dict[str, str]:
    """This test's environment without a Prefect server: a flow would start the kept one."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(PREFECT_HOME=str(tmp_path / "prefect-client"),
               PREFECT_SERVER_ANALYTICS_ENABLED="false")
    return env


def test_sla_due_loads_neither_prefect_nor_a_database(tmp_path: Path) -> None:
    env = {**_embedded_defaults(tmp_path), "TENANT_EXPORT_STATE_DIR": str(tmp_path / "state")}
    code, out, err, loaded = _quick(env, "sla", "due", "--received",
                                    "2026-11-26T10:00:00+01:00", "--hours", "30",
                                    watch=tuple(m for m in HEAVY if m != "pydantic_settings"))
    assert (code, out, loaded) == (0, "2026-12-01T10:00:00+01:00\n", []), err


@pytest.mark.timeout(600)
def test_reads_and_ledger_commands_run_no_flow(sqlite_platform: Platform,
                                               tmp_path: Path) -> None:
    from flows.backup_flow import list_snapshots
    from flows.migration_flow import migration_command
    from storage.audit import AuditTrail

    # what to read: snapshots (one complete: it has its manifest; one not), an export and a
    # case, the last two made by their flows (the test server)
    for snapshot, files in (("20261126T023000Z-0a1b2c3d", ("manifest.json", "index")),
                            ("20261127T023000Z-4e5f6a7b", ("index",))):
        for name in files:
            sqlite_platform.s3.put_object(Bucket=sqlite_platform.backup_bucket, Body=b"{}",
                                          Key=f"backups/t-1/snapshots/{snapshot}/{name}")
    made = runner.invoke(app, ["export", "t-1", "--no-notify", "--json"])
    assert made.exit_code == 0, made.stderr
    export = json.loads(made.stdout)
    opened = runner.invoke(app, ["migration", "open", "t-1", "--json"])
    assert opened.exit_code == 0, opened.stderr
    case = json.loads(opened.stdout)["case_id"]

    env = _embedded_defaults(tmp_path)
    state_dir = Path(env["TENANT_EXPORT_STATE_DIR"])
    code, out, err, loaded = _quick(env, "snapshots", "t-1", "--json")
    assert (code, loaded) == (0, []), err
    assert json.loads(out) == list_snapshots("t-1")  # what the backup_snapshots flow says
    assert json.loads(out) == ["20261126T023000Z-0a1b2c3d"]

    # links: S3 only, and neither Arrow nor the export writers (flows.package_links)
    code, out, err, loaded = _quick(env, "links", "t-1", "--link-ttl", "2h", "--json",
                                    watch=("prefect", "pyarrow", "numpy", "flows.packaging"))
    assert (code, loaded) == (0, []), err
    links = json.loads(out)
    assert links["export_id"] == export["export_id"]
    assert [f["path"] for f in links["files"]] == [f["path"] for f in export["files"]]
    assert all("X-Amz-Expires=7200" in f["url"] for f in links["files"])

    code, out, err, loaded = _quick(env, "migration", "log", case, "--minutes", "45",
                                    "--entry-id", "quick-1", "--json")
    assert (code, loaded) == (0, []), err
    assert json.loads(out) == {"case_id": case, "entry_id": "quick-1", "recorded": True}
    code, out, err, loaded = _quick(env, "migration", "statement", case, "--json")
    assert (code, loaded) == (0, []), err
    assert json.loads(out) == migration_command("statement", {"case_id": case})
    assert json.loads(out)["total_eur"] == "112.50"

    code, _, err, loaded = _quick(env, "migration", "statement", "M-nosuch")
    assert (code, loaded) == (2, []) and "unknown migration case 'M-nosuch'" in err

    assert not files_of(state_dir).state.exists(), "a command started a Prefect server"
    trail = AuditTrail(f"sqlite:///{state_dir / 'control.sqlite'}")
    try:
        events = trail.events("t-1")
    finally:
        trail.close()
    minted = [e for e in events if e.kind == "links.minted"]
    assert minted[-1].actor.startswith("cli") and minted[-1].details == {
        "export_id": export["export_id"], "link_ttl_seconds": 7200,
        "files_count": len(export["files"])}
    entry = [e for e in events if e.kind == "migration.entry"][-1]
    assert entry.actor.startswith("cli") and entry.details == {
        "case_id": case, "entry": "time", "entry_id": "quick-1"}
