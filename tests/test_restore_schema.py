"""Issue 9, restores into an empty database, on the reference platform (SQLite and PostgreSQL
sources and targets): every tenant table row-identical to the source's rows of the tenant,
value by value (the generator's truth says which rows); tables recreated in foreign-key order
with primary keys, NOT NULL and foreign keys; types the target lacks mapped and reported.

The helpers here (dumps, comparisons) serve the data-only and in-place tests too."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pyarrow as pa
import pytest

from flows import backup, restore
from flows.context import RunContext
from kernel.settings import Settings
from sources.loader import TableLoad, load_order
from sources.tables import ForeignKey
from storage.keys import parse_master_key
from tenant_export.refplatform import Platform as RefPlatform
from tests.services import fresh_database
from tests.test_tenancy import Setup, ref_postgres, ref_sqlite  # noqa: F401 - fixtures

TENANT = "harbour-rowing"  # the reference platform's first tenant: cross-tenant rows touch it
OTHER = "chess-club"


def wrapper() -> Any:
    return parse_master_key(Settings().master_key_value() or "")


def backed_up(tenant: str = TENANT) -> str:
    """A backup of ``tenant`` through the recipe; its snapshot id."""
    ctx = RunContext.open(Settings())
    try:
        return backup.backup_tenant(ctx, wrapper(), tenant).snapshot_id
    finally:
        ctx.close()


def restored(target: str, **options: Any) -> dict[str, Any]:
    ctx = RunContext.open(Settings())
    try:
        return restore.restore_snapshot(ctx, wrapper(), TENANT, target, **options)
    finally:
        ctx.close()


# -- reading databases -----------------------------------------------------------------------
def is_sqlite(url: str) -> bool:
    return url.startswith("sqlite")


def columns(url: str, table: str, schema: str | None = None) -> list[str]:
    if is_sqlite(url):
        with sqlite3.connect(url.removeprefix("sqlite:///")) as db:
            return [r[1] for r in db.execute(f'PRAGMA table_info("{table}")')]
    with psycopg.connect(url) as conn:
        return [r[0] for r in conn.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = %s AND "
            "table_name = %s ORDER BY ordinal_position", (schema or "public", table))]


def all_rows(url: str, table: str, schema: str | None = None) -> list[tuple[Any, ...]]:
    """Every row, typed by the driver; on SQLite followed by each value's storage class."""
    names = columns(url, table, schema)
    if is_sqlite(url):
        select = ", ".join([*(f'"{c}"' for c in names), *(f'typeof("{c}")' for c in names)])
        with sqlite3.connect(url.removeprefix("sqlite:///")) as db:
            return [tuple(r) for r in db.execute(f'SELECT {select} FROM "{table}"')]
    with psycopg.connect(url) as conn:
        conn.execute("SET TIME ZONE 'UTC'")
        select = ", ".join(f'"{c}"' for c in names)
        return [tuple(r) for r in conn.execute(
            f'SELECT {select} FROM "{schema or "public"}"."{table}"')]


def key_of(ref: RefPlatform, table: str, names: list[str], row: tuple[Any, ...]
           ) -> tuple[Any, ...]:
    """A row's primary key as the generator's truth spells it (the truth keeps the activity
    log's timestamp as generated text: its id alone identifies the row)."""
    pk = ref.primary_keys[table][:1] if table == "activity_log" else ref.primary_keys[table]
    return tuple(row[names.index(c)] for c in pk)


def truth(ref: RefPlatform, tenant: str, table: str) -> set[tuple[Any, ...]]:
    keys = ref.owned[tenant][table]
    return {k[:1] for k in keys} if table == "activity_log" else set(keys)


def source_schema(ref: RefPlatform, table: str) -> str | None:
    return None if ref.backend == "sqlite" else ref.table_schemas[table]


def tenant_rows(ref: RefPlatform, url: str, table: str, tenant: str,
                schema: str | None = None) -> list[tuple[Any, ...]]:
    """The rows of ``table`` at ``url`` whose keys the truth gives the tenant, in key order."""
    names = columns(url, table, schema)
    wanted = truth(ref, tenant, table)
    rows = [r for r in all_rows(url, table, schema) if key_of(ref, table, names, r) in wanted]
    return sorted(rows, key=lambda r: key_of(ref, table, names, r))


def assert_tenant_restored(setup: Setup, tenant: str, target: str,
                           schemas: dict[str, str] | None = None, *, alone: bool = True) -> None:
    """Every content table of ``target`` holds exactly the source's rows of the tenant (with
    ``alone``: and nothing else), value by value; ``schemas``: where the target keeps each."""
    ref = setup.ref
    for table in ref.content_tables:
        where = (schemas or {}).get(table)
        names = columns(setup.url, table, source_schema(ref, table))
        assert columns(target, table, where) == names, table
        want = tenant_rows(ref, setup.url, table, tenant, source_schema(ref, table))
        assert len(want) == len(ref.owned[tenant][table]), table
        got = (sorted(all_rows(target, table, where), key=lambda r: key_of(ref, table, names, r))
               if alone else tenant_rows(ref, target, table, tenant, where))
        assert got == want, table


def full_dump(url: str, tables: list[str], schemas: dict[str, str] | None = None
              ) -> dict[str, list[str]]:
    """Every row of every table, as sortable text (a platform-wide snapshot to compare)."""
    return {t: sorted(repr(r) for r in all_rows(url, t, (schemas or {}).get(t))) for t in tables}


# -- acceptance: empty targets -----------------------------------------------------------------
@pytest.fixture
def ref_platform(request: pytest.FixtureRequest) -> Setup:
    setup: Setup = request.getfixturevalue("ref_sqlite" if request.param == "sqlite"
                                           else "ref_postgres")
    return setup


BACKENDS = [pytest.param("sqlite", id="sqlite"),
            pytest.param("postgresql", id="postgresql", marks=pytest.mark.postgres)]


@pytest.mark.parametrize("ref_platform", BACKENDS, indirect=True)
def test_restore_into_an_empty_database_gives_back_every_row(
        ref_platform: Setup, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    setup = ref_platform
    backed_up()
    if setup.ref.backend == "sqlite":
        target = f"sqlite:///{tmp_path}/restored.sqlite"
    else:
        target = fresh_database(request.getfixturevalue("postgres_url"), "r")
    result = restored(target)
    assert result["mode"] == "new"
    assert result["rows"] == {t: len(setup.ref.owned[TENANT][t]) for t in setup.ref.content_tables}
    assert_tenant_restored(setup, TENANT, target)
    not_declared = {(f["table"], tuple(f["columns"])): f["reason"]
                    for f in result["foreign_keys"]["not_declared"]}
    assert "not in the snapshot" in not_declared[("members", ("country_code",))]  # shared
    assert "only in the catalog" in not_declared[("attachments", ("post_id",))]
    assert result["foreign_keys"]["declared"] >= 20
    if setup.ref.backend == "sqlite":
        assert result["type_mappings"] == []  # the declared types, as they were
        with sqlite3.connect(target.removeprefix("sqlite:///")) as db:
            fks = {(r[2], r[3], r[4]) for r in db.execute("PRAGMA foreign_key_list(comments)")}
            assert ("comments", "parent_id", "id") in fks  # self-reference
            assert ("posts", "post_id", "id") in fks
            info = {r[1]: r for r in db.execute("PRAGMA table_info(comments)")}
            assert info["body"][3] == 1 and info["parent_id"][3] == 0  # NOT NULL as declared
            assert info["id"][5] == 1  # the primary key
            assert not db.execute("PRAGMA foreign_key_check").fetchall()
        return
    mapped = {(m["table"], m["column"]): (m["source_type"], m["target_type"])
              for m in result["type_mappings"]}
    assert mapped == {("members", "email"): ("email_address", "TEXT"),  # a domain
                      ("members", "status"): ("member_status", "TEXT"),  # an enum
                      ("tags", "name"): ("CITEXT", "TEXT")}  # an extension type
    with psycopg.connect(target) as conn:
        constraints = conn.execute(
            "SELECT conname, contype, pg_get_constraintdef(oid) FROM pg_constraint "
            "WHERE conrelid = 'comments'::regclass").fetchall()
        kinds = sorted(c[1] for c in constraints)
        assert kinds == ["f", "f", "f", "p"], constraints
        assert any("REFERENCES comments(id)" in c[2] for c in constraints)  # self-reference
        assert not any("NOT VALID" in c[2] for c in constraints)
        types = dict(conn.execute(
            "SELECT column_name, data_type FROM information_schema.columns "
            "WHERE table_name = 'events'").fetchall())
        assert types["labels"] == "ARRAY" and types["starts_at"].startswith("timestamp with")
        nullable = dict(conn.execute(
            "SELECT column_name, is_nullable FROM information_schema.columns "
            "WHERE table_name = 'comments'").fetchall())
        assert nullable["body"] == "NO" and nullable["parent_id"] == "YES"


@pytest.mark.postgres
@pytest.mark.parametrize("ref_platform", BACKENDS, indirect=True)
def test_restore_across_database_kinds_maps_every_type_and_says_so(
        ref_platform: Setup, tmp_path: Path, postgres_url: str) -> None:
    setup = ref_platform
    backed_up()
    if setup.ref.backend == "sqlite":
        target = fresh_database(postgres_url, "x")
    else:
        target = f"sqlite:///{tmp_path}/restored.sqlite"
    result = restored(target)
    assert result["rows"] == {t: len(setup.ref.owned[TENANT][t]) for t in setup.ref.content_tables}
    mapped = {(m["table"], m["column"]): m["target_type"] for m in result["type_mappings"]}
    if setup.ref.backend == "sqlite":  # SQLite's names become the values' generic types
        assert mapped[("events", "starts_at")] == "TEXT"
        assert mapped[("members", "is_board")] == "BIGINT"
    else:
        assert mapped[("events", "labels")] == "TEXT"  # an array: its text, as read
        assert mapped[("members", "fee_eur")] == "TEXT"  # numeric: its exact digits
    for table in setup.ref.content_tables:  # the tenant's rows, by key
        names = columns(target, table)
        got = {key_of(setup.ref, table, names, r) for r in all_rows(target, table)}
        assert got == truth(setup.ref, TENANT, table), table
    assert result["foreign_keys"]["declared"] >= 20


# -- load order ------------------------------------------------------------------------------
def _no_batches() -> Iterator[pa.RecordBatch]:
    yield from ()


def _load(name: str, *parents: str) -> TableLoad:
    return TableLoad(name, pa.schema([("id", pa.int64())]), ("id",), 0, _no_batches,
                     foreign_keys=tuple(ForeignKey(("x",), p, ("id",)) for p in parents))


def test_load_order_puts_parents_first_and_keeps_the_manifest_order_otherwise() -> None:
    plain = [_load(n) for n in ("b", "a", "c")]
    assert [t.name for t in load_order(plain)] == ["b", "a", "c"]  # an old manifest's order
    related = [_load("comments", "posts", "comments"), _load("posts", "tenants"),
               _load("tenants"), _load("a", "b"), _load("b", "a")]  # self-ref and a cycle
    assert [t.name for t in load_order(related)] == ["tenants", "posts", "comments", "a", "b"]


@pytest.mark.parametrize("kind", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def test_rows_pointing_outside_the_snapshot_restore_with_a_warning(
        ref_sqlite: Setup,  # noqa: F811 - fixture
        tmp_path: Path, kind: str, request: pytest.FixtureRequest) -> None:
    with sqlite3.connect(ref_sqlite.ref.location) as db:  # SQLite let the platform do this
        other_venue = ref_sqlite.ref.owned[OTHER]["venues"][0][0]
        event = ref_sqlite.ref.owned[TENANT]["events"][0][0]
        db.execute("UPDATE events SET venue_id = ? WHERE id = ?", (other_venue, event))
    backed_up()
    target = (f"sqlite:///{tmp_path}/r.sqlite" if kind == "sqlite"
              else fresh_database(request.getfixturevalue("postgres_url"), "nv"))
    result = restored(target)
    (warning,) = [w for w in result["warnings"] if "venues" in w]
    assert "1 row(s) of 'events' reference rows of 'venues' that are not in the snapshot" in (
        warning)
    assert ("NOT VALID" in warning) == (kind == "postgresql")
    if kind == "sqlite":
        assert_tenant_restored(ref_sqlite, TENANT, target)
    else:
        with psycopg.connect(target) as conn:
            definitions = [r[0] for r in conn.execute(
                "SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid = "
                "'events'::regclass AND contype = 'f'")]
        assert any("REFERENCES venues(id) NOT VALID" in d for d in definitions), definitions
