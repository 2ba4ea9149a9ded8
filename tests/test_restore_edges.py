"""Restore edge cases found in review: names needing quoting, SQLite loose keys, atomicity."""

from __future__ import annotations

import sqlite3
import uuid
from pathlib import Path
from typing import Any

import psycopg
import pytest

from flows import backup, restore
from flows.context import RunContext
from kernel.errors import BadInput
from kernel.settings import Settings
from storage.keys import parse_master_key
from tests.conftest import Platform
from tests.services import fresh_database
from tests.test_postgres_edges import odd_platform  # noqa: F401 - fixture


def backed_up(tenant: str) -> tuple[Any, Any]:
    ctx = RunContext.open(Settings())
    wrapper = parse_master_key(Settings().master_key_value() or "")
    backup.backup_tenant(ctx, wrapper, tenant)
    return ctx, wrapper


def as_text(url: str, table: str, tenant: int) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        conn.execute("SET TIME ZONE 'UTC'; SET DateStyle = 'ISO, YMD'; "
                     "SET IntervalStyle = 'postgres'; SET extra_float_digits = 3")
        columns = [r[0] for r in conn.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_name = %s "
            "ORDER BY ordinal_position", (table,))]
        select = ", ".join(f'"{c}"::text'.replace("%", "%%") for c in columns)
        return list(conn.execute(
            f'SELECT {select} FROM "{table.replace("%", "%%")}" '
            f'WHERE tenant_id = %s ORDER BY id', (tenant,)))


@pytest.mark.postgres
def test_postgres_restore_of_hostile_names_and_values(odd_platform: Platform,  # noqa: F811
                                                      postgres_url: str) -> None:
    ctx, wrapper = backed_up("7")
    target = fresh_database(postgres_url, "r")
    restore.restore_snapshot(ctx, wrapper, "7", target)
    assert as_text(target, "odd?table%", 7) == as_text(odd_platform.source_url, "odd?table%", 7)
    ctx.close()


def test_sqlite_integer_primary_key_with_loose_values(sqlite_platform: Platform,
                                                      tmp_path: Path) -> None:
    db = sqlite_platform.source_url.removeprefix("sqlite:///")
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE loose_keys (id INT PRIMARY KEY, tenant_id TEXT, v)")
        conn.executemany("INSERT INTO loose_keys VALUES (?, 't-1', ?)",
                         [(1, "a"), ("abc", "b"), (2.5, "c"), (None, "d")])
    ctx, wrapper = backed_up("t-1")
    target = tmp_path / "restored.sqlite"
    restore.restore_snapshot(ctx, wrapper, "t-1", f"sqlite:///{target}")
    query = "SELECT id, typeof(id), v FROM loose_keys ORDER BY v"
    with sqlite3.connect(target) as restored, sqlite3.connect(db) as source:
        assert list(restored.execute(query)) == list(source.execute(query))
    ctx.close()


def test_sqlite_restore_is_all_or_nothing(sqlite_platform: Platform, tmp_path: Path) -> None:
    ctx, wrapper = backed_up("t-1")
    target = tmp_path / "busy.sqlite"
    with sqlite3.connect(target) as conn:
        conn.execute("CREATE VIEW MEMBERS AS SELECT 1 AS x")  # a view, named in another case
    with pytest.raises(BadInput, match="members"):
        restore.restore_snapshot(ctx, wrapper, "t-1", f"sqlite:///{target}")
    with sqlite3.connect(target) as conn:
        names = [r[0] for r in conn.execute("SELECT name FROM sqlite_master")]
    assert names == ["MEMBERS"]  # nothing else was created
    with pytest.raises(BadInput, match="sqlite:/// or postgresql://"):
        restore.restore_snapshot(ctx, wrapper, "t-1", "mysql://x@localhost/db")
    ctx.close()


def test_documents_never_overwrite(sqlite_platform: Platform, tmp_path: Path) -> None:
    ctx, wrapper = backed_up("t-1")
    bucket = f"busy-{uuid.uuid4().hex[:8]}"
    sqlite_platform.s3.create_bucket(Bucket=bucket)
    sqlite_platform.s3.put_object(Bucket=bucket, Key="t1/dup-a", Body=b"someone else's file")
    target = tmp_path / "r.sqlite"
    with pytest.raises(BadInput, match="already exists"):
        restore.restore_snapshot(ctx, wrapper, "t-1", f"sqlite:///{target}",
                                 documents_bucket=bucket)
    assert not target.exists() or not sqlite3.connect(target).execute(
        "SELECT name FROM sqlite_master").fetchall()
    body = sqlite_platform.s3.get_object(Bucket=bucket, Key="t1/dup-a")["Body"].read()
    assert body == b"someone else's file"
    ctx.close()


def test_unknown_tenant_gets_no_backup_folder(sqlite_platform: Platform) -> None:
    from kernel.errors import UnknownTenant

    ctx = RunContext.open(Settings())
    with pytest.raises(UnknownTenant):
        backup.backup_tenant(ctx, parse_master_key(Settings().master_key_value() or ""), "nosuch")
    listed = sqlite_platform.s3.list_objects_v2(Bucket=sqlite_platform.backup_bucket)
    assert "Contents" not in listed
    ctx.close()
