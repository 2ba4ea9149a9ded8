"""Tables read by ADBC are the tables the tuple path reads, value by value, at the same instant.

The reference platform (foreign-key chains, join tables, partitions, enums, shared tables,
mixed SQLite storage classes) and the awkward-values platform are read twice, once with ADBC
and once as tuples, with batch sizes that cut tables at many places; every batch's schema
(metadata included) and every value must agree. The snapshot tests commit a change between
the snapshot's start and the ADBC connection's first read and check that it stays unseen.
"""

from __future__ import annotations

import sqlite3
import tomllib
from pathlib import Path

import psycopg
import pyarrow as pa
import pytest
from sqlalchemy import create_engine

from kernel.errors import SourceUnavailable
from sources.arrowread import open_sqlite_pair
from sources.catalog import Catalog, discover
from sources.catalog_config import CatalogConfig
from sources.database import Snapshot
from sources.tables import TablePlan
from tenant_export.refplatform import PlatformSpec, create_postgres, create_sqlite
from tests import awkward
from tests.services import fresh_database


def _catalog(url: str, toml: str) -> Catalog:
    return discover(create_engine(url), CatalogConfig.parse(tomllib.loads(toml)))


def _read(url: str, catalog: Catalog, tenant: str, *, arrow: bool, batch_rows: int = 20_000,
          ) -> tuple[dict[str, pa.Table], dict[str, str]]:
    tables: dict[str, pa.Table] = {}
    with Snapshot(create_engine(url), batch_rows=batch_rows, arrow=arrow) as snap:
        for plan in catalog.tables:
            stream = snap.read_table(plan, tenant, schema=catalog.config.db_schema)
            batches = list(stream.batches)
            for batch in batches:
                assert batch.schema.equals(stream.schema, check_metadata=True), plan.name
                assert batch.num_rows <= batch_rows, plan.name
            tables[plan.name] = pa.Table.from_batches(batches, schema=stream.schema)
        return tables, dict(snap.arrow_fallbacks)


def _same(url: str, catalog: Catalog, tenants: list[str], batch_rows: int) -> dict[str, str]:
    """Both paths agree for every tenant and table; returns the ADBC path's fallbacks."""
    fallbacks: dict[str, str] = {}
    for tenant in tenants:
        slow, none = _read(url, catalog, tenant, arrow=False, batch_rows=batch_rows)
        assert none == {}
        fast, fallbacks = _read(url, catalog, tenant, arrow=True, batch_rows=batch_rows)
        assert fast.keys() == slow.keys()
        for name, table in slow.items():
            assert fast[name].schema.equals(table.schema, check_metadata=True), name
            assert fast[name].to_pylist() == table.to_pylist(), (tenant, name)
            assert fast[name].equals(table), (tenant, name)
    return fallbacks


@pytest.mark.parametrize("batch_rows", [20_000, 7])
def test_sqlite_reference_platform(tmp_path: Path, batch_rows: int) -> None:
    platform = create_sqlite(tmp_path / "ref.sqlite", PlatformSpec.tiny())
    url = f"sqlite:///{platform.location}"
    catalog = _catalog(url, platform.catalog_toml)
    fallbacks = _same(url, catalog, list(platform.tenant_ids), batch_rows)
    read_fast = [p.name for p in catalog.tables if p.name not in fallbacks]
    assert len(read_fast) >= len(catalog.tables) - 2, fallbacks
    assert "*" not in fallbacks


@pytest.mark.parametrize("batch_rows", [20_000, 2])
def test_sqlite_awkward_values(tmp_path: Path, batch_rows: int) -> None:
    db = tmp_path / "awkward.sqlite"
    awkward.create_sqlite(str(db))
    url = f"sqlite:///{db}"
    catalog = _catalog(url, awkward.CATALOG)
    fallbacks = _same(url, catalog, [t for t, _ in awkward.TENANTS], batch_rows)
    assert "*" not in fallbacks
    # ``loose`` holds only mixed columns next to its keys: the keys come from ADBC, the
    # mixed values from tuples in the same order.
    assert "loose" not in fallbacks


@pytest.mark.postgres
def test_postgres_reference_and_awkward(postgres_url: str) -> None:
    url = fresh_database(postgres_url, "arrowref")
    platform = create_postgres(url.replace("postgresql://", "postgresql+psycopg://"),
                               PlatformSpec.tiny())
    catalog = _catalog(url, platform.catalog_toml)
    for batch_rows in (20_000, 3):
        assert _same(url, catalog, list(platform.tenant_ids), batch_rows) == {}
    url = fresh_database(postgres_url, "arrowawk")
    awkward.create_postgres(url)
    catalog = _catalog(url, awkward.CATALOG)
    assert _same(url, catalog, [t for t, _ in awkward.TENANTS], 2) == {}


def _notes_table(db: Path, rows: list[tuple[int, str, str | None]], *, pk: bool = True) -> str:
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE tenants (id TEXT PRIMARY KEY)")
        conn.execute("INSERT INTO tenants VALUES ('a'), ('b')")
        key = "PRIMARY KEY" if pk else ""
        conn.execute(f"CREATE TABLE notes (id INTEGER {key}, tenant_id TEXT, body)")
        conn.executemany("INSERT INTO notes VALUES (?, ?, ?)", rows)
    return f"sqlite:///{db}"


def test_sqlite_nulls_first_fall_back_to_tuples(tmp_path: Path) -> None:
    """The driver would infer integer from a first batch of NULLs and stop at the first text."""
    rows = [(i, "a", None if i < 50 else f"text {i}") for i in range(100)]
    url = _notes_table(tmp_path / "n.sqlite", rows)
    catalog = _catalog(url, 'tenant_column = "tenant_id"\n')
    fast, fallbacks = _read(url, catalog, "a", arrow=True, batch_rows=10)
    assert "from a first batch of NULLs" in fallbacks["notes"]
    assert fast["notes"].column("body").to_pylist() == [r[2] for r in rows]
    fast, fallbacks = _read(url, catalog, "a", arrow=True, batch_rows=100)
    assert "notes" not in fallbacks  # one batch sees the text: ADBC reads it
    assert fast["notes"].column("body").to_pylist() == [r[2] for r in rows]


def test_sqlite_mixed_column_without_key_falls_back(tmp_path: Path) -> None:
    rows: list[tuple[int, str, object]] = [(i, "a", [1, 2.5, "x", b"\x00"][i % 4])
                                           for i in range(40)]
    url = _notes_table(tmp_path / "m.sqlite", rows, pk=False)  # type: ignore[arg-type]
    catalog = _catalog(url, 'tenant_column = "tenant_id"\n')
    slow, _ = _read(url, catalog, "a", arrow=False)
    fast, fallbacks = _read(url, catalog, "a", arrow=True)
    assert "no primary key" in fallbacks["notes"]
    assert fast["notes"].equals(slow["notes"])


def test_sqlite_wide_rows_make_small_batches(tmp_path: Path) -> None:
    """SQLite's driver counts rows only: the widest row sizes its batches."""
    rows = [(i, "a", "x" * (1 << 20)) for i in range(12)]
    url = _notes_table(tmp_path / "w.sqlite", rows)
    catalog = _catalog(url, 'tenant_column = "tenant_id"\n')
    with Snapshot(create_engine(url), batch_bytes=8 << 20, arrow=True) as snap:
        plan = catalog.table("notes")
        assert plan is not None
        batches = list(snap.read_table(plan, "a").batches)
        assert "notes" not in snap.arrow_fallbacks
    assert sum(b.num_rows for b in batches) == 12
    assert max(b.nbytes for b in batches) <= 3 << 20, [b.num_rows for b in batches]


def test_sqlite_commit_after_the_snapshot_is_unseen(tmp_path: Path) -> None:
    rows = [(i, "a", f"note {i}") for i in range(10)]
    url = _notes_table(tmp_path / "s.sqlite", rows)
    with sqlite3.connect(tmp_path / "s.sqlite") as conn:
        conn.execute("PRAGMA journal_mode=WAL")
    catalog = _catalog(url, 'tenant_column = "tenant_id"\n')
    plan = catalog.table("notes")
    assert plan is not None
    with Snapshot(create_engine(url), arrow=True) as snap:
        writer = sqlite3.connect(tmp_path / "s.sqlite")
        writer.execute("INSERT INTO notes VALUES (99, 'a', 'later')")
        writer.commit()
        writer.close()
        ids = pa.Table.from_batches(list(snap.read_table(plan, "a").batches)).column("id")
        assert "notes" not in snap.arrow_fallbacks
    assert ids.to_pylist() == list(range(10))


def test_sqlite_pair_retries_when_a_commit_slips_in(tmp_path: Path) -> None:
    """A commit between the two connections' starts is detected and the pair opened again."""
    db = tmp_path / "p.sqlite"
    with sqlite3.connect(db) as conn:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("CREATE TABLE t (x INTEGER)")
    own = sqlite3.connect(db, isolation_level=None)
    commits = iter([True, False])

    def begin() -> None:
        if next(commits, False):  # another process commits just before our BEGIN
            with sqlite3.connect(db) as other:
                other.execute("INSERT INTO t VALUES (1)")
        own.execute("BEGIN")
        own.execute("SELECT count(*) FROM sqlite_master").fetchone()

    begun: list[str] = []
    pair = open_sqlite_pair(str(db), lambda: int(own.execute("PRAGMA data_version").fetchone()[0]),
                            lambda: (begun.append("begin"), begin())[1],
                            lambda: own.execute("ROLLBACK"))
    assert pair is not None
    # The first pair disagreed and was dropped (opening a WAL file may itself count as one
    # change, so there can be one more try); the pair kept reads what our connection reads.
    assert len(begun) >= 2
    assert pair.first_value("SELECT count(*) FROM t") == own.execute(
        "SELECT count(*) FROM t").fetchone()[0] == 1
    pair.close()
    own.close()


def test_arrow_reads_follow_the_setting(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from flows.context import RunContext
    from kernel.settings import Settings

    url = _notes_table(tmp_path / "o.sqlite", [(1, "a", "x")])
    catalog = _catalog(url, 'tenant_column = "tenant_id"\n')
    for value, expected in (("0", False), ("false", False), ("1", True), (None, True)):
        if value is None:
            monkeypatch.delenv("TENANT_EXPORT_ARROW_READS", raising=False)
        else:
            monkeypatch.setenv("TENANT_EXPORT_ARROW_READS", value)
        ctx = RunContext(settings=Settings(), s3=None, engine=create_engine(url),
                         catalog=catalog)
        with ctx.snapshot() as snap:
            assert (snap._arrow_connection() is not None) is expected, value
    monkeypatch.setenv("TENANT_EXPORT_ARROW_READS", "maybe")
    with pytest.raises(ValueError, match="arrow_reads"):
        Settings()


@pytest.fixture
def pg_notes(postgres_url: str) -> str:
    url = fresh_database(postgres_url, "arrowsnap")
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE tenants (id TEXT PRIMARY KEY)")
        conn.execute("INSERT INTO tenants VALUES ('a'), ('b')")
        conn.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, tenant_id TEXT, body TEXT)")
        conn.execute("INSERT INTO notes SELECT g, 'a', 'n' || g FROM generate_series(0, 9) g")
    return url


def _more_notes(url: str, last: int) -> TablePlan:
    """Notes 10..``last`` of 500 bytes each (several ADBC batches of 1 MiB); the table's plan."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("INSERT INTO notes SELECT g, 'a', repeat('x', 500) FROM "
                     "generate_series(10, %s) g", (last,))
    plan = _catalog(url, 'tenant_column = "tenant_id"\n').table("notes")
    assert plan is not None
    return plan


@pytest.mark.postgres
def test_postgres_adbc_adopts_the_snapshot(pg_notes: str) -> None:
    """The ADBC connection opens after a commit yet reads the snapshot's instant."""
    catalog = _catalog(pg_notes, 'tenant_column = "tenant_id"\n')
    plan, tenants = catalog.table("notes"), catalog.table("tenants")
    assert plan is not None and tenants is not None
    with Snapshot(create_engine(pg_notes), arrow=True) as snap:
        assert snap.first("SELECT count(*) FROM notes", [], "notes") == (10,)
        with psycopg.connect(pg_notes, autocommit=True) as other:
            other.execute("INSERT INTO notes VALUES (99, 'a', 'later')")
            other.execute("DELETE FROM notes WHERE id = 0")
        ids = pa.Table.from_batches(list(snap.read_table(plan, "a").batches)).column("id")
        assert snap.arrow_fallbacks == {}
    assert ids.to_pylist() == list(range(10))


@pytest.mark.postgres
def test_postgres_hostile_tenant_key_is_a_literal(pg_notes: str) -> None:
    """The key is inlined for COPY: quotes and backslashes stay data."""
    with psycopg.connect(pg_notes, autocommit=True) as conn:
        conn.execute("INSERT INTO tenants VALUES (%s)", ("x'); DROP TABLE notes; --\\",))
        conn.execute("INSERT INTO notes VALUES (50, %s, 'evil')", ("x'); DROP TABLE notes; --\\",))
    catalog = _catalog(pg_notes, 'tenant_column = "tenant_id"\n')
    plan = catalog.table("notes")
    assert plan is not None
    with Snapshot(create_engine(pg_notes), arrow=True) as snap:
        stream = snap.read_table(plan, "x'); DROP TABLE notes; --\\")
        ids = pa.Table.from_batches(list(stream.batches), schema=stream.schema).column("id")
        assert snap.arrow_fallbacks == {}
    assert ids.to_pylist() == [50]


@pytest.mark.postgres
def test_postgres_connection_lost_mid_table_is_transient(pg_notes: str) -> None:
    """A server that drops the ADBC connection mid-stream: a retryable source error naming
    the table, as on the tuple path (the run's retry reads everything again)."""
    from sources.dbdriver import TransientSourceError

    plan = _more_notes(pg_notes, 60_000)
    with Snapshot(create_engine(pg_notes), batch_bytes=1 << 20, arrow=True) as snap:
        batches = iter(snap.read_table(plan, "a").batches)
        next(batches)
        with psycopg.connect(pg_notes, autocommit=True) as other:
            killed = other.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE query LIKE 'COPY%%' AND backend_type = 'client backend' "
                "AND datname = current_database()").fetchall()
        assert killed == [(True,)]
        with pytest.raises(TransientSourceError, match="table 'notes'"):
            for _ in batches:
                pass


def test_sqlite_file_name_with_uri_characters(tmp_path: Path) -> None:
    """``%`` and spaces in the path stay part of the file name in ADBC's URI (``?`` and ``#``
    end SQLAlchemy's own URL before they reach us)."""
    folder = tmp_path / "odd %41 dir"
    folder.mkdir()
    rows = [(i, "a", f"n{i}") for i in range(5)]
    _notes_table(folder / "db %2F.sqlite", rows)
    url = "sqlite:///" + str(folder / "db %2F.sqlite").replace("%", "%25")  # as a URL spells it
    catalog = _catalog(url, 'tenant_column = "tenant_id"\n')
    fast, fallbacks = _read(url, catalog, "a", arrow=True)
    assert fallbacks == {}
    assert fast["notes"].column("body").to_pylist() == [r[2] for r in rows]


# -- cases a review found (each read both ways, value by value) --------------------------------


def _both(url: str, tenant: str = "a") -> tuple[dict[str, pa.Table], dict[str, str]]:
    catalog = _catalog(url, 'tenant_column = "tenant_id"\n')
    slow, _ = _read(url, catalog, tenant, arrow=False)
    fast, fallbacks = _read(url, catalog, tenant, arrow=True)
    assert fast.keys() == slow.keys()
    for name, table in slow.items():
        assert fast[name].equals(table), name
    return fast, fallbacks


def test_sqlite_column_of_nulls_only_is_read_as_its_type(tmp_path: Path) -> None:
    """SQLite's driver types a column holding no value as integers: cast to NULLs of the
    schema's type (binary here), not refused mid-table."""
    db = tmp_path / "nulls.sqlite"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE tenants (id TEXT PRIMARY KEY)")
        conn.execute("INSERT INTO tenants VALUES ('a')")
        conn.execute("CREATE TABLE files (id INTEGER PRIMARY KEY, tenant_id TEXT, data BLOB, "
                     "note TEXT)")
        conn.executemany("INSERT INTO files VALUES (?, 'a', NULL, NULL)", [(i,) for i in range(9)])
    fast, fallbacks = _both(f"sqlite:///{db}")
    assert "files" not in fallbacks
    assert fast["files"].schema.field("data").type == pa.binary()
    assert fast["files"].column("data").null_count == 9


def test_sqlite_null_keys_never_pair_rows_by_position(tmp_path: Path) -> None:
    """A TEXT primary key may hold NULLs in SQLite: no order two statements share, so a table
    with mixed columns is read in one statement (the review saw b=5 paired with m=1)."""
    db = tmp_path / "nullkey.sqlite"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE tenants (id TEXT PRIMARY KEY)")
        conn.execute("INSERT INTO tenants VALUES ('a')")
        conn.execute("CREATE TABLE t (tenant_id TEXT, a TEXT PRIMARY KEY, b INT, m)")
        conn.execute("CREATE INDEX i ON t(tenant_id, a, b DESC)")
        conn.execute("CREATE INDEX i2 ON t(tenant_id, a, m)")
        conn.executemany("INSERT INTO t VALUES ('a', ?, ?, ?)",
                         [(None, i, [1, "x", 2.5, b"z"][i % 4]) for i in range(6)]
                         + [("k", 99, "q")])
    fast, fallbacks = _both(f"sqlite:///{db}")
    assert "NULL in the primary key" in fallbacks["t"]
    assert {(r["b"], r["m"]) for r in fast["t"].to_pylist()} == {
        (0, "1"), (1, "x"), (2, "2.5"), (3, "eg=="), (4, "1"), (5, "x"), (99, "q")}


def test_sqlite_table_wider_than_the_probe(tmp_path: Path) -> None:
    """1,001 columns: the tuple path reads it as before, ADBC says why it does not."""
    db = tmp_path / "wide.sqlite"
    names = [f"c{i}" for i in range(998)]
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE tenants (id TEXT PRIMARY KEY)")
        conn.execute("INSERT INTO tenants VALUES ('a')")
        conn.execute(f"CREATE TABLE wide (id INTEGER PRIMARY KEY, tenant_id TEXT, "
                     f"{', '.join(n + ' INTEGER' for n in names)})")
        conn.execute(f"INSERT INTO wide VALUES (1, 'a', {', '.join(['7'] * len(names))})")
    fast, fallbacks = _both(f"sqlite:///{db}")
    assert "columns" in fallbacks["wide"]
    assert fast["wide"].column("c997").to_pylist() == [7]


def test_sqlite_text_that_is_not_utf8_is_refused_both_ways(tmp_path: Path) -> None:
    db = tmp_path / "latin.sqlite"
    url = _notes_table(db, [(1, "a", "fine")])
    with sqlite3.connect(db) as conn:
        conn.execute("INSERT INTO notes VALUES (2, 'a', CAST(X'636166E9' AS TEXT))")
    catalog = _catalog(url, 'tenant_column = "tenant_id"\n')
    for arrow in (False, True):
        with pytest.raises(SourceUnavailable, match="notes"):
            _read(url, catalog, "a", arrow=arrow)


@pytest.mark.postgres
def test_postgres_percent_s_in_names_and_latin1_text(postgres_url: str) -> None:
    """``%s`` in a table name stays a name when the key is inlined; a LATIN1 database's text
    reaches ADBC as UTF-8, as it reaches psycopg."""
    url = fresh_database(postgres_url, "arrowenc")
    name = url.rsplit("/", 1)[1] + "_l1"
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name} ENCODING 'LATIN1' LC_COLLATE 'C' LC_CTYPE 'C' "
                     "TEMPLATE template0")
    url = url.rsplit("/", 1)[0] + f"/{name}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE tenants (id TEXT PRIMARY KEY)")
        conn.execute("INSERT INTO tenants VALUES ('a')")
        conn.execute('CREATE TABLE "50%sales" (id INTEGER PRIMARY KEY, tenant_id TEXT, '
                     "label TEXT, code CHAR(4))")
        conn.execute('INSERT INTO "50%%sales" VALUES (1, %s, %s, %s)', ("a", "café déjà", "ab"))
    fast, fallbacks = _both(url)
    assert fallbacks == {}
    assert fast["50%sales"].to_pylist() == [
        {"id": 1, "tenant_id": "a", "label": "café déjà", "code": "ab  "}]


@pytest.mark.postgres
def test_postgres_abandoned_stream_releases_the_snapshot(pg_notes: str) -> None:
    """A read stopped after one batch: leaving the snapshot ends both transactions, so no
    session stays idle in transaction holding the exported snapshot."""
    plan = _more_notes(pg_notes, 20_000)
    engine = create_engine(pg_notes)
    with Snapshot(engine, batch_bytes=1 << 20, arrow=True) as snap:
        kept = iter(snap.read_table(plan, "a").batches)
        next(kept)  # and never read further
    engine.dispose()
    with psycopg.connect(pg_notes, autocommit=True) as other:
        left = other.execute("SELECT state, left(query, 40) FROM pg_stat_activity WHERE "
                             "datname = current_database() AND pid <> pg_backend_pid() "
                             "AND backend_type = 'client backend'").fetchall()
    assert not [s for s in left if s[0] != "idle"], left
    del kept
