"""Issue 8, source side: documents confined to their tenant by default, a key prefix is a path
segment, tenant ids under case-insensitive collations resolve to the id as stored, batches are
bounded by bytes, missing documents are reported, and ``links`` refuses a changed package."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from flows import packaging
from flows.context import RunContext
from kernel.errors import BadInput, TerminalError, VerificationFailed
from kernel.ids import new_export_id
from kernel.settings import Settings
from sources.catalog import DocumentsRule
from sources.documents import DocumentRef, confined, key_prefix
from sources.rowbatch import bounded_batches, row_bytes
from tenant_export.cli import app
from tests import awkward
from tests.conftest import Platform, _platform
from tests.services import fresh_database

ROOT = Path(__file__).resolve().parent.parent
runner = CliRunner()
ID = st.text("abcdefghijklmnopqrstuvwxyz0123456789", min_size=1, max_size=8)
ID_TAIL = st.text("abcdefghijklmnopqrstuvwxyz0123456789._-", min_size=1, max_size=6)


def refs(*keys: str | None) -> Iterator[DocumentRef]:
    return iter(DocumentRef(str(i), "f", k) for i, k in enumerate(keys, 1))


# -- documents: a key prefix is a path segment -------------------------------------------------
@settings(max_examples=60, deadline=None)
@given(tenant=ID, tail=ID_TAIL, slash=st.booleans(), rest=ID)
def test_prefix_never_reaches_a_tenant_whose_id_extends_ours(tenant: str, tail: str,
                                                            slash: bool, rest: str) -> None:
    rule = DocumentsRule(key_prefix="tenants/{tenant_id}" + ("/" if slash else ""))
    assert key_prefix(rule, tenant) == f"tenants/{tenant}/"
    mine = f"tenants/{tenant}/{rest}"
    assert [r.storage_key for r in confined(refs(mine, None, ""), rule, tenant)] == [mine, None,
                                                                                      ""]
    for foreign in (f"tenants/{tenant}{tail}/{rest}", f"tenants/{tenant}{tail}",
                    f"tenants/{tenant}/../{tenant}{tail}/{rest}",
                    f"tenants/{tenant}/./{rest}", f"tenants/{tenant}/..\\{tail}",
                    f"other/{tenant}/{rest}"):
        with pytest.raises(TerminalError, match="outside the tenant's prefix"):
            list(confined(refs(mine, foreign), rule, tenant))


@pytest.fixture
def awkward_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, moto_endpoint: str) -> Platform:
    db = tmp_path / "platform.sqlite"
    awkward.create_sqlite(str(db))
    return _platform(monkeypatch, tmp_path, moto_endpoint, f"sqlite:///{db}", ("test", "test"))


def export(env: Platform, tenant: str) -> packaging.ExportResult:
    """The export recipe without Prefect (the flow only orchestrates it)."""
    ctx = RunContext.open(Settings())
    try:
        canonical = packaging.check_request(ctx, tenant)
        export_id = new_export_id()
        records = packaging.write_package(ctx, canonical, export_id)
        packaging.verify_package(ctx, canonical, export_id, records)
        manifest = packaging.publish_manifest(ctx, canonical, export_id, datetime.now(UTC),
                                              records)
        return packaging.mint_links(ctx, canonical, export_id, "now", manifest, records, 600)
    finally:
        ctx.close()


def set_catalog(tmp_path: Path, documents: str) -> None:
    base = awkward.CATALOG.replace("[documents]\nkeys_tenant_scoped = false\n", "")
    (tmp_path / "catalog.toml").write_text(base + documents)


def test_no_documents_key_rule_refuses_to_run(awkward_env: Platform, tmp_path: Path) -> None:
    set_catalog(tmp_path, "")
    with pytest.raises(BadInput, match=r'key_prefix = "tenants/\{tenant_id\}/".*'
                                       r"keys_tenant_scoped = false"):
        export(awkward_env, "t-1")
    assert awkward_env.export_keys() == []


def test_another_tenants_key_is_refused_under_a_prefix(awkward_env: Platform,
                                                        tmp_path: Path) -> None:
    # a fixed folder (no trailing slash: a segment) with keys declared not tenant-scoped
    set_catalog(tmp_path, '[documents]\nkey_prefix = "t1"\nkeys_tenant_scoped = false\n')
    with sqlite3.connect(awkward_env.source_url.removeprefix("sqlite:///")) as db:
        db.execute("UPDATE documents SET storage_key = 't1-other/secret' WHERE id = 3")
    with pytest.raises(TerminalError, match=r"document 3 .*'t1-other/secret'"):
        export(awkward_env, "t-1")


def test_unscoped_keys_are_exported_and_shared_ones_reported(awkward_env: Platform) -> None:
    with sqlite3.connect(awkward_env.source_url.removeprefix("sqlite:///")) as db:
        db.execute("UPDATE documents SET storage_key = 't2/secret' WHERE id = 3")
    result = export(awkward_env, "t-1")
    assert [s.model_dump() for s in result.documents_shared_keys] == [
        {"document_id": "3", "storage_key": "t2/secret"}]
    assert export(awkward_env, "t-empty").documents_shared_keys == []


# -- missing documents are reported ------------------------------------------------------------
def test_missing_documents_are_reported_with_their_reason(awkward_env: Platform,
                                                           prefect_server: None) -> None:
    with sqlite3.connect(awkward_env.source_url.removeprefix("sqlite:///")) as db:
        db.execute("UPDATE documents SET storage_key = NULL WHERE id = 5")
        db.execute("UPDATE documents SET storage_key = '' WHERE id = 7")
    expected = [{"document_id": "5", "reason": "key is NULL"},
                {"document_id": "6", "reason": "object not found"},
                {"document_id": "7", "reason": "key is empty"}]
    result = runner.invoke(app, ["export", "t-1", "--json"])
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["documents_missing"] == expected
    manifest = json.loads(awkward_env.get(
        f"exports/t-1/{doc['export_id']}/datapackage.json"))
    index = next(r for r in manifest["resources"] if r["path"] == "documents/index.csv")
    assert index["x-documents-missing"] == 3 and index["x-missing-documents"] == expected
    again = runner.invoke(app, ["links", "t-1"])  # the human-readable output says it too
    assert again.exit_code == 0, again.stderr
    assert "3 document(s) listed as missing" in again.stdout
    assert "document 5: key is NULL" in again.stdout
    assert "document 6: object not found" in again.stdout


# -- links check the package against its manifest ----------------------------------------------
TAMPER = {
    "deleted": lambda s3, b, k, body: s3.delete_object(Bucket=b, Key=k),
    "truncated": lambda s3, b, k, body: s3.put_object(Bucket=b, Key=k, Body=body[:8]),
    "same size, other bytes": lambda s3, b, k, body: s3.put_object(
        Bucket=b, Key=k, Body=bytes(255 - x for x in body)),
}


@pytest.mark.parametrize("how", sorted(TAMPER))
@pytest.mark.parametrize("path", ["data/members.csv", "documents/documents-0001.zip"])
def test_links_refuse_a_package_that_changed(awkward_env: Platform, how: str, path: str) -> None:
    result = export(awkward_env, "t-1")
    ctx = RunContext.open(Settings())
    try:
        assert packaging.load_package(ctx, "t-1", None)[0] == result.export_id  # untouched: ok
        key = f"exports/t-1/{result.export_id}/{path}"
        TAMPER[how](awkward_env.s3, awkward_env.export_bucket, key, awkward_env.get(key)
                    if how != "deleted" else b"")
        with pytest.raises(VerificationFailed, match=f"no longer matches its manifest: {path}"):
            packaging.load_package(ctx, "t-1", result.export_id)
    finally:
        ctx.close()


# -- case-insensitive tenant ids -----------------------------------------------------------------
NOCASE = """
CREATE TABLE tenants (id TEXT PRIMARY KEY COLLATE NOCASE, name TEXT);
CREATE TABLE notes (id INTEGER PRIMARY KEY, tenant_id TEXT COLLATE NOCASE, body TEXT);
INSERT INTO tenants VALUES ('acme', 'Acme'), ('globex', 'Globex');
INSERT INTO notes VALUES (1, 'acme', 'mine'), (2, 'ACME', 'mine too'), (3, 'globex', 'theirs');
"""
CITEXT = """
CREATE EXTENSION IF NOT EXISTS citext;
CREATE TABLE tenants (id citext PRIMARY KEY, name text);
CREATE TABLE notes (id integer PRIMARY KEY, tenant_id citext, body text);
INSERT INTO tenants VALUES ('acme', 'Acme'), ('globex', 'Globex');
INSERT INTO notes VALUES (1, 'acme', 'mine'), (2, 'ACME', 'mine too'), (3, 'globex', 'theirs');
"""


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def nocase_env(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
               moto_endpoint: str) -> Platform:
    if request.param == "sqlite":
        db = tmp_path / "nocase.sqlite"
        with sqlite3.connect(db) as conn:
            conn.executescript(NOCASE)
        url = f"sqlite:///{db}"
    else:
        url = fresh_database(request.getfixturevalue("postgres_url"), "nocase")
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(CITEXT)
    env = _platform(monkeypatch, tmp_path, moto_endpoint, url, ("test", "test"))
    (tmp_path / "catalog.toml").write_text("")
    return env


@pytest.mark.parametrize("spelling", ["acme", "ACME", "AcMe", "aCmE"])
def test_case_insensitive_ids_resolve_to_the_stored_id(nocase_env: Platform,
                                                       spelling: str) -> None:
    ctx = RunContext.open(Settings())
    try:
        ref = ctx.check_tenant(spelling)
        assert (ref.id, ref.key) == ("acme", "acme")
        assert packaging.check_request(ctx, spelling) == "acme"
        if spelling != "acme":  # a second spelling never gets a prefix of its own
            with pytest.raises(BadInput, match="stored as 'acme'"):
                packaging.write_package(ctx, spelling, new_export_id())
    finally:
        ctx.close()
    result = export(nocase_env, spelling)
    assert result.tenant_id == "acme"
    assert {k.split("/")[1] for k in nocase_env.export_keys()} == {"acme"}
    body = nocase_env.get(f"exports/acme/{result.export_id}/data/notes.csv").decode()
    assert "mine too" in body and "theirs" not in body  # matched under the column's collation


# -- batches bounded by bytes --------------------------------------------------------------------
class FakeCursor:
    def __init__(self, rows: list[tuple[Any, ...]]) -> None:
        self.rows, self.asked = rows, []

    def fetchmany(self, n: int) -> list[tuple[Any, ...]]:
        self.asked.append(n)
        taken, self.rows = self.rows[:n], self.rows[n:]
        return taken


@settings(max_examples=80, deadline=None)
@given(sizes=st.lists(st.integers(0, 50_000), max_size=60), batch_rows=st.integers(1, 40),
       batch_bytes=st.integers(1024, 200_000))
def test_batches_are_bounded_by_rows_and_bytes(sizes: list[int], batch_rows: int,
                                               batch_bytes: int) -> None:
    rows = [(i, "x" * size) for i, size in enumerate(sizes)]
    cursor = FakeCursor(list(rows))
    batches = list(bounded_batches(cursor, batch_rows, batch_bytes))
    assert [r for b in batches for r in b] == rows  # nothing lost, nothing reordered
    for batch in batches:
        assert 1 <= len(batch) <= batch_rows
        assert len(batch) == 1 or sum(row_bytes(r) for r in batch) <= batch_bytes
    assert all(n <= batch_rows for n in cursor.asked)


READ_BIG = """
import resource, sys
from sources.catalog import CatalogConfig, discover
from sources.database import Snapshot, open_engine
from sources.tenants import tenant_key
engine = open_engine(sys.argv[1])
catalog = discover(engine, CatalogConfig())
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
rows = 0
with Snapshot(engine, batch_rows=20_000, batch_bytes=int(sys.argv[2])) as snap:
    ref = tenant_key(catalog, snap, "t")
    for batch in snap.read_table(catalog.table("blobs"), ref).batches:
        rows += batch.num_rows
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(rows, (after - before) * 1024)
"""


def test_wide_rows_keep_memory_bounded(tmp_path: Path) -> None:
    """60 rows of 2 MB: read with 20,000-row batches they would all sit in memory at once
    (twice: as Python values and as Arrow); a 4 MB byte bound keeps the peak far below."""
    db = tmp_path / "wide.sqlite"
    with sqlite3.connect(db) as conn:
        conn.executescript("CREATE TABLE tenants (id TEXT PRIMARY KEY);"
                           "CREATE TABLE blobs (id INTEGER PRIMARY KEY, tenant_id TEXT, v TEXT);"
                           "INSERT INTO tenants VALUES ('t');")
        conn.executemany("INSERT INTO blobs VALUES (?, 't', ?)",
                         ((i, chr(97 + i % 26) * 2_000_000) for i in range(60)))
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(READ_BIG), f"sqlite:///{db}",
                           str(4 * 1024**2)], capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr
    rows, growth = map(int, proc.stdout.split())
    assert rows == 60
    assert growth < 60 * 1024**2, f"peak memory grew by {growth / 1024**2:.0f} MB"


@pytest.mark.postgres
def test_postgres_batches_are_cut_by_bytes(postgres_url: str) -> None:
    from sources.catalog import CatalogConfig, discover
    from sources.database import Snapshot, open_engine
    from sources.tenants import tenant_key

    url = fresh_database(postgres_url, "wide")
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE tenants (id text PRIMARY KEY);"
                     "CREATE TABLE blobs (id int PRIMARY KEY, tenant_id text, v text);"
                     "INSERT INTO tenants VALUES ('t');"
                     "INSERT INTO blobs SELECT i, 't', repeat('x', 300000) "
                     "FROM generate_series(1, 20) i")
    engine = open_engine(url)
    try:
        catalog = discover(engine, CatalogConfig())
        with Snapshot(engine, batch_rows=20_000, batch_bytes=1024**2) as snap:
            ref = tenant_key(catalog, snap, "t")
            plan = catalog.table("blobs")
            assert plan is not None
            sizes = [b.num_rows for b in snap.read_table(plan, ref).batches]
    finally:
        engine.dispose()
    assert sum(sizes) == 20 and max(sizes) <= 3 and len(sizes) >= 7
