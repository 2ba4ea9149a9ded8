"""The backup commands of DESIGN §3.1: backup, snapshots, verify, restore, prune, and their
exit statuses."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tenant_export.cli import app
from tests.conftest import Platform

runner = CliRunner()


def test_backup_cycle_through_the_cli(sqlite_platform: Platform, tmp_path: Path) -> None:
    result = runner.invoke(app, ["backup", "t-1", "--json"])
    assert result.exit_code == 0, result.stderr
    (summary,) = json.loads(result.stdout)
    assert summary["tenant"] == "t-1" and summary["status"] == "ok"
    result = runner.invoke(app, ["snapshots", "t-1", "--json"])
    assert json.loads(result.stdout) == [summary["snapshot_id"]]
    result = runner.invoke(app, ["verify", "t-1", "--snapshot", summary["snapshot_id"]])
    assert result.exit_code == 0, result.stderr
    target = tmp_path / "restored.sqlite"
    result = runner.invoke(app, ["restore", "t-1", "--target", f"sqlite:///{target}", "--json"])
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["rows"]["members"] > 0
    with sqlite3.connect(target) as db:
        assert db.execute("SELECT count(*) FROM members").fetchone()[0] > 0
    result = runner.invoke(app, ["prune", "--dry-run", "--json"])
    assert result.exit_code == 0, result.stderr
    (plan,) = json.loads(result.stdout)
    assert plan["keep"] == [summary["snapshot_id"]] and plan["forget"] == []


@pytest.mark.parametrize(("args", "message"), [
    (["backup"], "name tenants or pass --all"),
    (["backup", "t-1", "--all"], "not both"),
    (["backup", "../x"], "invalid tenant id"),
    (["backup", "t-1", "nosuch"], "unknown tenant 'nosuch'"),
    (["snapshots", "a b"], "invalid tenant id"),
    (["verify", "t-1"], "no complete backup snapshot"),
    (["restore", "t-1", "--target", "sqlite:///x.db", "--snapshot", "nope"],
     "invalid snapshot id 'nope'"),
])
def test_bad_input_exits_2(sqlite_platform: Platform, args: list[str], message: str,
                           tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # a refused restore must not even create its target file
    result = runner.invoke(app, args)
    assert result.exit_code == 2, (result.stdout, result.stderr)
    assert message in result.stderr
    assert not (tmp_path / "x.db").exists()


def test_missing_master_key_exits_2(sqlite_platform: Platform,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TENANT_EXPORT_MASTER_KEY")
    result = runner.invoke(app, ["backup", "t-1"])
    assert result.exit_code == 2 and "TENANT_EXPORT_MASTER_KEY is not set" in result.stderr
    monkeypatch.setenv("TENANT_EXPORT_MASTER_KEY", "c2hvcnQ=")
    result = runner.invoke(app, ["backup", "t-1"])
    assert result.exit_code == 2 and "c2hvcnQ" not in result.stderr  # never echo the key


def test_missing_backup_bucket_exits_1(sqlite_platform: Platform,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TENANT_EXPORT_BACKUP_BUCKET", "no-such-backup-bucket")
    result = runner.invoke(app, ["backup", "--all"])
    assert result.exit_code == 1 and "no-such-backup-bucket" in result.stderr


def test_keygen_prints_a_usable_key() -> None:
    from storage.keys import parse_master_key

    result = runner.invoke(app, ["keygen"])
    assert result.exit_code == 0
    parse_master_key(result.stdout.strip())
