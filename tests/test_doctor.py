"""``tenant-export doctor``: exit 0 on a sound configuration; each broken piece in turn makes it
exit 1 with a line naming that piece. And the control database lives in one absolute place,
whatever folder a command runs from."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tenant_export.cli import app
from tests.conftest import Platform
from tests.services import free_port

runner = CliRunner()


def _doctor() -> tuple[int, dict[str, dict[str, object]], str]:
    result = runner.invoke(app, ["doctor", "--json"])
    checks = {c["name"]: c for c in json.loads(result.stdout)}
    return result.exit_code, checks, result.stdout


def test_sound_configuration_passes(sqlite_platform: Platform) -> None:
    code, checks, out = _doctor()
    assert code == 0, out
    assert all(c["ok"] for c in checks.values()), out
    assert set(checks) >= {"platform database", "documents bucket", "export bucket",
                           "backup bucket", "master key", "control database", "Prefect API"}
    text = runner.invoke(app, ["doctor"])
    assert text.exit_code == 0
    assert all(line.startswith(("ok", "warn")) for line in text.stdout.splitlines())


@pytest.mark.parametrize(("piece", "variable", "value"), [
    ("platform database", "TENANT_EXPORT_SOURCE_URL", "sqlite:////nonexistent/platform.sqlite"),
    ("platform database", "TENANT_EXPORT_SOURCE_URL",
     "postgresql://postgres@127.0.0.1:{port}/down"),
    ("documents bucket", "TENANT_EXPORT_DOCUMENTS_BUCKET", "no-such-documents"),
    ("export bucket", "TENANT_EXPORT_EXPORT_BUCKET", "no-such-exports"),
    ("backup bucket", "TENANT_EXPORT_BACKUP_BUCKET", "no-such-backups"),
    ("master key", "TENANT_EXPORT_MASTER_KEY", None),
    ("master key", "TENANT_EXPORT_MASTER_KEY", "bm90IGEga2V5"),
    ("control database", "TENANT_EXPORT_CONTROL_URL",
     "postgresql://postgres@127.0.0.1:{port}/control"),
    ("Prefect API", "PREFECT_API_URL", "http://127.0.0.1:{port}/api"),
])
def test_each_broken_piece_is_named(sqlite_platform: Platform, monkeypatch: pytest.MonkeyPatch,
                                    piece: str, variable: str, value: str | None) -> None:
    if value is None:
        monkeypatch.delenv(variable)
    else:
        monkeypatch.setenv(variable, value.format(port=free_port()))
    code, checks, out = _doctor()
    assert code == 1, out
    assert not checks[piece]["ok"], out
    others = [name for name, c in checks.items() if name != piece and not c["ok"]]
    assert others == [], out  # only the broken piece is reported
    line = next(ln for ln in runner.invoke(app, ["doctor"]).stdout.splitlines() if piece in ln)
    assert line.startswith("FAIL")


def test_unreachable_s3_endpoint_fails_the_bucket_checks(sqlite_platform: Platform,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", f"http://127.0.0.1:{free_port()}")
    code, checks, out = _doctor()
    assert code == 1
    assert not checks["documents bucket"]["ok"] and "reach" in str(
        checks["documents bucket"]["detail"]), out


def test_one_control_database_whatever_the_folder(sqlite_platform: Platform, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """The CLI run from two folders, with no state directory configured, sees one ledger."""
    from prefect.settings import PREFECT_API_URL

    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in (
        "TENANT_EXPORT_STATE_DIR", "XDG_STATE_HOME", "TENANT_EXPORT_CONTROL_URL")}
    env.update(HOME=str(home), PREFECT_API_URL=str(PREFECT_API_URL.value()))
    script = Path(sys.executable).parent / "tenant-export"

    def cli(folder: Path, *args: str) -> dict[str, object]:
        folder.mkdir(exist_ok=True)
        proc = subprocess.run([str(script), *args, "--json"], cwd=folder, env=env, text=True,
                              capture_output=True, timeout=180, check=False)
        assert proc.returncode == 0, proc.stderr
        result: dict[str, object] = json.loads(proc.stdout)
        return result

    case = cli(tmp_path / "one", "migration", "open", "t-1")["case_id"]
    statement = cli(tmp_path / "two", "migration", "statement", str(case))
    assert statement["case_id"] == case
    assert (home / ".local" / "state" / "tenant-export" / "control.sqlite").is_file()
