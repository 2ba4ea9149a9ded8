"""Backups on real components: backup → verify → restore gives back every value and document."""

from __future__ import annotations

import sqlite3
import uuid
from pathlib import Path
from typing import Any

import psycopg
import pytest

from flows import backup, restore
from flows.context import RunContext
from kernel.errors import BadInput, VerificationFailed
from kernel.settings import Settings
from storage.keys import parse_master_key
from tests import awkward
from tests.conftest import Platform
from tests.helpers import source_rows
from tests.services import fresh_database


def context() -> RunContext:
    return RunContext.open(Settings())


def wrapper() -> Any:
    return parse_master_key(Settings().master_key_value() or "")


def table_columns(url: str, table: str) -> list[str]:
    if url.startswith("sqlite"):
        with sqlite3.connect(url.removeprefix("sqlite:///")) as db:
            return [r[1] for r in db.execute(f'PRAGMA table_info("{table}")')]
    with psycopg.connect(url) as conn:
        return [r[0] for r in conn.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_name = %s "
            "ORDER BY ordinal_position", (table,))]


def typed_rows(url: str, table: str, columns: list[str], filter_column: str, tenant: str
               ) -> list[tuple[Any, ...]]:
    """Rows with SQLite storage classes made visible (typeof), so 7 and '7' differ."""
    rows = source_rows(url, table, columns, filter_column, tenant)
    return [tuple((type(v).__name__, v) for v in row) for row in rows]


def compare_restored(source_url: str, target_url: str) -> None:
    for table in ("tenants", "members", "select", "documents"):  # every table of the tenant
        columns = table_columns(source_url, table)  # backups keep even excluded columns
        assert table_columns(target_url, table) == columns, table
        filter_column = "id" if table == "tenants" else "tenant_id"
        want = typed_rows(source_url, table, columns, filter_column, "t-1")
        got = typed_rows(target_url, table, columns, filter_column, "t-1")
        assert got == want, table
        assert not typed_rows(target_url, table, columns, filter_column, "t-2")


def test_sqlite_backup_verify_restore(sqlite_platform: Platform, tmp_path: Path) -> None:
    ctx = context()
    summary = backup.backup_tenant(ctx, wrapper(), "t-1")
    assert summary.rows > 0 and summary.documents == 9 and summary.documents_missing == 1
    report = restore.verify_snapshot(ctx, wrapper(), "t-1")
    assert report["snapshot_id"] == summary.snapshot_id
    target = f"sqlite:///{tmp_path}/restored.sqlite"
    docs_target = f"restored-{uuid.uuid4().hex[:8]}"
    sqlite_platform.s3.create_bucket(Bucket=docs_target)
    result = restore.restore_snapshot(ctx, wrapper(), "t-1", target,
                                      documents_bucket=docs_target)
    compare_restored(sqlite_platform.source_url, target)
    with sqlite3.connect(f"{tmp_path}/restored.sqlite") as db:
        loose = list(db.execute("SELECT id, mixed, typeof(mixed), anything, typeof(anything) "
                                "FROM loose ORDER BY id"))
    with sqlite3.connect(sqlite_platform.source_url.removeprefix("sqlite:///")) as db:
        original = list(db.execute("SELECT id, mixed, typeof(mixed), anything, "
                                   "typeof(anything) FROM loose WHERE tenant_id = 't-1' "
                                   "ORDER BY id"))
    assert loose == original  # storage classes survive, value by value
    for _, doc_id, _, key, blob in (d for d in awkward.DOCUMENTS if d[0] == "t-1"):
        if blob is None:
            continue
        body = sqlite_platform.s3.get_object(Bucket=docs_target, Key=key)["Body"].read()
        assert body == blob, doc_id
    assert result["documents_restored"] == 8
    ctx.close()


@pytest.mark.postgres
def test_postgres_backup_restore(postgres_platform: Platform, postgres_url: str) -> None:
    ctx = context()
    backup.backup_tenant(ctx, wrapper(), "t-1")
    target = fresh_database(postgres_url, "r")
    restore.restore_snapshot(ctx, wrapper(), "t-1", target)
    compare_restored(postgres_platform.source_url, target)
    ctx.close()


def test_restore_refuses_a_non_empty_target(sqlite_platform: Platform, tmp_path: Path) -> None:
    ctx = context()
    backup.backup_tenant(ctx, wrapper(), "t-1")
    target = tmp_path / "busy.sqlite"
    with sqlite3.connect(target) as db:
        db.execute("CREATE TABLE members (x)")
    with pytest.raises(BadInput, match="members"):
        restore.restore_snapshot(ctx, wrapper(), "t-1", f"sqlite:///{target}")
    ctx.close()


def test_wrong_master_key_cannot_read(sqlite_platform: Platform,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from storage.keys import generate_master_key

    ctx = context()
    backup.backup_tenant(ctx, wrapper(), "t-1")
    monkeypatch.setenv("TENANT_EXPORT_MASTER_KEY", generate_master_key())
    with pytest.raises(VerificationFailed):
        restore.verify_snapshot(ctx, wrapper(), "t-1")
    ctx.close()
