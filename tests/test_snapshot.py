"""One consistent snapshot: rows committed by the platform while an export runs appear in none
of its tables, on PostgreSQL (REPEATABLE READ) and on SQLite (one read transaction, WAL)."""

from __future__ import annotations

import json
import sqlite3
from typing import Any

import pytest

from sources.database import Snapshot
from tests.conftest import Platform
from tests.helpers import fetch_package, read_table


def _concurrent_write(url: str) -> None:
    """The platform keeps working: a new row in a table the export has not read yet, and a
    deletion in one it has already read."""
    if url.startswith("sqlite"):
        with sqlite3.connect(url.removeprefix("sqlite:///"), timeout=1) as db:
            db.execute("""INSERT INTO "select" VALUES (99, 't-1', 'late', 9, 'late')""")
            db.execute("DELETE FROM documents WHERE id = 3")
        return
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("""INSERT INTO "select" VALUES (99, 't-1', 'late', 9, 'late')""")
        conn.execute("DELETE FROM documents WHERE id = 3")


def _export_with_a_write_in_the_middle(platform: Platform, monkeypatch: pytest.MonkeyPatch
                                       ) -> dict[str, bytes]:
    real_read = Snapshot.read_table
    done = {"written": False}

    def read_then_write(self: Snapshot, plan: Any, tenant_id: str, schema: Any = None) -> Any:
        stream = real_read(self, plan, tenant_id, schema)
        if plan.name == "documents" and not done["written"]:
            first = next(stream.batches)  # the snapshot is established by now
            _concurrent_write(platform.source_url)
            done["written"] = True
            stream.batches = iter([first, *stream.batches])
        return stream

    monkeypatch.setattr(Snapshot, "read_table", read_then_write)
    from flows.export_flow import ExportRequest, offboarding_export

    result = offboarding_export(ExportRequest(tenant_id="t-1", link_ttl_seconds=600))
    assert done["written"]
    return fetch_package(result)


def _check(files: dict[str, bytes]) -> None:
    package = json.loads(files["datapackage.json"])
    by_table = {r["x-source-table"]: r for r in package["resources"] if "x-source-table" in r}
    _, select_rows = read_table(files, by_table["select"])
    assert [r[0] for r in select_rows] == ["1", "2"]  # the late row is not there
    _, doc_rows = read_table(files, by_table["documents"])
    assert "3" in [r[0] for r in doc_rows]  # the deleted document still is, as at the start
    _, index_rows = read_table(files, {"path": "documents/index.csv"})
    assert "3" in [r[0] for r in index_rows]  # and the index agrees with documents.csv


def test_sqlite_export_reads_one_snapshot(sqlite_platform: Platform,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    with sqlite3.connect(sqlite_platform.source_url.removeprefix("sqlite:///")) as db:
        db.execute("PRAGMA journal_mode=WAL")  # readers and writers do not block each other
    _check(_export_with_a_write_in_the_middle(sqlite_platform, monkeypatch))


@pytest.mark.postgres
def test_postgres_export_reads_one_snapshot(postgres_platform: Platform,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    _check(_export_with_a_write_in_the_middle(postgres_platform, monkeypatch))
