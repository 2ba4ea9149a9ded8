"""Discovery classifies every table (sources only, no Prefect): the reference platform on both
backends, unclassified tables refused with the line that fixes them, catalog typos refused,
ownership of child tables by every non-NULL relation, and the counts of rows nobody gets."""

from __future__ import annotations

import sqlite3
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pyarrow as pa
import pytest

from kernel.errors import BadInput
from sources.catalog import Catalog, CatalogConfig, discover
from sources.database import Snapshot, open_engine
from sources.tenants import tenant_key
from tenant_export.refplatform import PlatformSpec, create_postgres, create_sqlite
from tests.services import fresh_database


def catalog_of(url: str, toml: str = "") -> Catalog:
    engine = open_engine(url)
    try:
        return discover(engine, CatalogConfig.parse(tomllib.loads(toml)))
    finally:
        engine.dispose()


def sqlite_db(tmp_path: Path, ddl: str, name: str = "p.sqlite") -> str:
    path = tmp_path / name
    with sqlite3.connect(path) as db:
        db.executescript(ddl)
    return f"sqlite:///{path}"


def rows_of(url: str, catalog: Catalog, tenant: str, table: str) -> list[dict[str, Any]]:
    engine = open_engine(url)
    try:
        with Snapshot(engine) as snap:
            ref = tenant_key(catalog, snap, tenant)
            plan = catalog.table(table)
            assert plan is not None, table
            stream = snap.read_table(plan, ref)
            return pa.Table.from_batches(list(stream.batches), schema=stream.schema).to_pylist()
    finally:
        engine.dispose()


def unowned(url: str, catalog: Catalog, table: str) -> tuple[int, int]:
    engine = open_engine(url)
    try:
        with Snapshot(engine) as snap:
            plan = catalog.table(table)
            assert plan is not None
            return snap.unowned(plan)
    finally:
        engine.dispose()


# -- the reference platform -------------------------------------------------------------------
@pytest.fixture(scope="module")
def ref_sqlite(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, str]:
    platform = create_sqlite(tmp_path_factory.mktemp("ref") / "p.sqlite", PlatformSpec.tiny())
    return platform, f"sqlite:///{platform.location}"


@pytest.fixture(scope="module")
def ref_postgres(postgres_url: str) -> tuple[Any, str]:
    url = fresh_database(postgres_url, "cls")
    return create_postgres(url, PlatformSpec.tiny()), url


def _grouped(catalog: Catalog) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for entry in catalog.entries:
        found.setdefault(entry.status, set()).add(entry.name)
    return found


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgresql",
                                                            marks=pytest.mark.postgres)])
def test_reference_platform_is_fully_classified(backend: str, request: pytest.FixtureRequest
                                                ) -> None:
    platform, url = request.getfixturevalue(f"ref_{'sqlite' if backend == 'sqlite' else 'postgres'}")
    catalog = catalog_of(url, platform.catalog_toml)
    assert catalog.problems() == []
    groups = _grouped(catalog)
    assert groups["exported"] == set(platform.content_tables)
    assert groups["shared"] == set(platform.shared_tables)
    assert groups.get("view", set()) == {*platform.views, *platform.materialized_views}
    assert groups.get("partition", set()) == {p for ps in platform.partitioned.values()
                                              for p in ps}
    assert "unclassified" not in groups and "skipped" not in groups
    scopes = {e.name: e.scope for e in catalog.entries if e.scope}
    assert scopes["members"].kind == "column" and scopes["tenants"].kind == "root"
    refunds = scopes["payment_refunds"]
    assert refunds.kind == "references"
    assert ("payment_refunds.payment_id → registration_payments.registration_id → "
            "event_registrations.event_id → events.tenant_id") in refunds.paths
    # the relation only the catalog declares scopes attachments
    assert {(fk.columns, fk.parent, fk.origin) for fk in scopes["attachments"].refs} == {
        (("post_id",), "posts", "catalog"), (("document_id",), "documents", "catalog")}
    # a reply is scoped by its post and author, never through its parent comment (no loop)
    assert {fk.parent for fk in scopes["comments"].refs} == {"posts", "members"}
    if backend == "postgresql":
        assert catalog.entry("invoice_lines").info.schema == "billing"  # type: ignore[union-attr]


def test_unowned_counts_match_the_ground_truth(ref_sqlite: tuple[Any, str]) -> None:
    platform, url = ref_sqlite
    catalog = catalog_of(url, platform.catalog_toml)
    for plan in catalog.tables:
        cross, orphans = unowned(url, catalog, plan.name)
        assert cross == platform.cross_tenant.get(plan.name, 0), plan.name
        assert orphans == platform.orphans.get(plan.name, 0), plan.name


def test_backup_plans_keep_skipped_tables_and_every_column(ref_sqlite: tuple[Any, str]) -> None:
    platform, url = ref_sqlite
    toml = platform.catalog_toml.replace(
        "[tables.members]", '[tables.comment_reactions]\nskip = true\nreason = "noise"\n\n'
        "[tables.members]")
    catalog = catalog_of(url, toml)
    exported = {p.name: p for p in catalog.tables}
    backup = {p.name: p for p in catalog.for_backup().tables}
    assert "comment_reactions" not in exported and "comment_reactions" in backup
    assert set(backup) == set(platform.content_tables)
    assert "password_hash" not in {c.name for c in exported["members"].columns}
    assert "password_hash" in {c.name for c in backup["members"].columns}
    assert backup["members"].excluded == ()
    entry = catalog.entry("comment_reactions")
    assert entry is not None and entry.status == "skipped" and entry.reason == "noise"
    # what a restore needs: key, NOT NULL columns, relations, an order parents-first
    refunds = backup["payment_refunds"]
    assert refunds.primary_key == ("id",)
    assert {"id", "payment_id", "amount_eur", "refunded_at"} <= set(refunds.not_null)
    assert [(fk.columns, fk.parent) for fk in refunds.foreign_keys] == [
        (("payment_id",), "registration_payments")]
    order = [p.name for p in catalog.dependency_order(tuple(backup.values()))]
    for plan in backup.values():
        for fk in plan.foreign_keys:
            if fk.parent in backup and fk.parent != plan.name:
                assert order.index(fk.parent) < order.index(plan.name), (plan.name, fk.parent)


# -- refusals ---------------------------------------------------------------------------------
BASE = """
CREATE TABLE tenants (id TEXT PRIMARY KEY);
CREATE TABLE items (id INTEGER PRIMARY KEY, tenant_id TEXT REFERENCES tenants(id));
"""
UNCLASSIFIED = {
    "no tenant column": "CREATE TABLE audit (id INTEGER PRIMARY KEY, message TEXT);",
    "relation to a shared table only": "CREATE TABLE lookup (code TEXT PRIMARY KEY);"
    "CREATE TABLE audit (id INTEGER PRIMARY KEY, code TEXT REFERENCES lookup(code));",
    "relation to itself only": "CREATE TABLE audit (id INTEGER PRIMARY KEY, "
    "parent_id INTEGER REFERENCES audit(id));",
    "relation to a non-unique column": "CREATE TABLE audit (id INTEGER PRIMARY KEY, "
    "item_tenant TEXT REFERENCES items(tenant_id));",
}


@pytest.mark.parametrize("case", sorted(UNCLASSIFIED))
def test_unclassified_table_refused_with_the_fixing_line(tmp_path: Path, case: str) -> None:
    url = sqlite_db(tmp_path, BASE + UNCLASSIFIED[case])
    toml = "[tables.lookup]\nshared = true\n" if "lookup" in UNCLASSIFIED[case] else ""
    catalog = catalog_of(url, toml)
    assert [e.name for e in catalog.unclassified] == ["audit"]
    for refuse in (catalog.require_runnable, catalog.for_backup):
        with pytest.raises(BadInput, match=r"table 'audit' is not classified.*"
                                           r"\[tables\.audit\] shared = true"):
            refuse()
    fixed = catalog_of(url, toml + "[tables.audit]\nshared = true\n")
    fixed.require_runnable()
    assert fixed.for_backup().tables == fixed.tables


BAD_CATALOGS = {
    '[tables.nope]\nskip = true': "tables that do not exist: nope",
    '[tables.items]\nexclude_columns = ["secret"]': "lacks: secret",
    '[tables.items]\nskip = true\nshared = true': "either skipped or shared",
    '[tables.items.references]\nnope = "tenants.id"': "no column 'nope'",
    '[tables.items.references]\ntenant_id = "ghosts.id"': "no table 'ghosts'",
    '[tables.items.references]\ntenant_id = "tenants.label"': "no column 'label'",
    '[tables.items.references]\nid = "items.tenant_id"': "neither a primary key nor unique",
    '[tables.items.references]\ntenant_id = "items.id"': "database declares",
    '[tables.items.references]\ntenant_id = "tenants"': "table.column",
    'tenancy = "schema"': "schema_pattern",
    '[tables.tenants]\nshared = true': "tenants table",
    '[documents]\nkeys_tenant_scoped = true': "needs a key_prefix naming the tenant",
}


@pytest.mark.parametrize(("toml", "message"), sorted(BAD_CATALOGS.items()))
def test_catalog_naming_what_the_database_lacks_is_refused(tmp_path: Path, toml: str,
                                                           message: str) -> None:
    url = sqlite_db(tmp_path, BASE + "ALTER TABLE tenants ADD COLUMN name TEXT;")
    with pytest.raises(BadInput, match=message):
        catalog_of(url, toml)


DOCS = BASE + """CREATE TABLE documents (id INTEGER PRIMARY KEY, tenant_id TEXT,
                                          filename TEXT, storage_key TEXT);"""


@pytest.mark.parametrize(("toml", "ready"), [
    ("", False),
    ("[documents]\ntable = \"documents\"", False),
    ('[documents]\nkey_prefix = "tenants/{tenant_id}/"', True),
    ('[documents]\nkey_prefix = "tenants/{tenant_id}"', True),
    ('[documents]\nkey_prefix = "tenants/"', False),  # a fixed folder confines no tenant
    ('[documents]\nkey_prefix = "tenants/"\nkeys_tenant_scoped = false', True),
    ("[documents]\nkeys_tenant_scoped = false", True),
])
def test_documents_need_a_key_rule(tmp_path: Path, toml: str, ready: bool) -> None:
    catalog = catalog_of(sqlite_db(tmp_path, DOCS), toml)
    if ready:
        catalog.require_runnable()
    else:
        with pytest.raises(BadInput, match=r"key_prefix = \"tenants/\{tenant_id\}/\".*"
                                           r"keys_tenant_scoped = false"):
            catalog.require_runnable()


# -- ownership through relations --------------------------------------------------------------
LINKS_TABLES = """
CREATE TABLE tenants (id TEXT PRIMARY KEY);
CREATE TABLE posts (id INTEGER PRIMARY KEY, tenant_id TEXT NOT NULL);
CREATE TABLE tags (id INTEGER PRIMARY KEY, tenant_id TEXT NOT NULL);
CREATE TABLE links (id INTEGER PRIMARY KEY, post_id INTEGER, tag_id INTEGER, note TEXT);
CREATE TABLE link_notes (id INTEGER PRIMARY KEY, link_id INTEGER NOT NULL, parent_id INTEGER);
CREATE TABLE a_cycle (id INTEGER PRIMARY KEY, post_id INTEGER, b_id INTEGER);
CREATE TABLE b_cycle (id INTEGER PRIMARY KEY, a_id INTEGER);
"""
# declared in the database (SQLite: in CREATE TABLE; PostgreSQL: NOT VALID, so the dangling
# references below can exist, as they do in SQLite applications)
LINKS_FKS = [("links", "post_id", "posts"), ("links", "tag_id", "tags"),
             ("link_notes", "link_id", "links"), ("link_notes", "parent_id", "link_notes"),
             ("a_cycle", "post_id", "posts"), ("a_cycle", "b_id", "b_cycle"),
             ("b_cycle", "a_id", "a_cycle")]


def _sqlite_links_ddl() -> str:
    lines = []
    for line in LINKS_TABLES.strip().splitlines():
        table = line.split()[2]
        keys = "".join(f", FOREIGN KEY ({c}) REFERENCES {p}(id)"
                       for t, c, p in LINKS_FKS if t == table)
        lines.append(line.removesuffix(");") + keys + ");")
    return "\n".join(lines) + "\n"


# (link id, post, tag) -> owner: None = orphan, "x" = cross-tenant
LINKS = {
    1: (1, 2, "acme"),      # both paths acme
    2: (1, None, "acme"),   # one NULL path: the other decides
    3: (None, 2, "acme"),
    4: (1, 3, "x"),         # acme post, globex tag: two tenants
    5: (None, None, None),  # no owner at all
    6: (99, None, None),    # a dangling reference owns nothing
    7: (4, 3, "globex"),
    8: (1, 99, None),       # one path acme, the other dangling: not attributable
}


def _links_rows() -> list[str]:
    statements = ["INSERT INTO tenants VALUES ('acme'), ('globex')",
                  "INSERT INTO posts VALUES (1, 'acme'), (4, 'globex')",
                  "INSERT INTO tags VALUES (2, 'acme'), (3, 'globex')"]
    for link, (post, tag, _) in LINKS.items():
        statements.append(f"INSERT INTO links VALUES ({link}, {post or 'NULL'}, "
                          f"{tag or 'NULL'}, 'n{link}')")
        statements.append(f"INSERT INTO link_notes VALUES ({link}, {link}, NULL)")
    statements += ["INSERT INTO link_notes VALUES (100, 1, 7)",  # reply under another's note
                   "INSERT INTO a_cycle VALUES (1, 1, 1), (2, 4, 1)",
                   "INSERT INTO b_cycle VALUES (1, 1), (2, 2)"]
    return statements


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def links_db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield sqlite_db(tmp_path, _sqlite_links_ddl() + ";\n".join(_links_rows()) + ";")
        return
    url = fresh_database(request.getfixturevalue("postgres_url"), "links")
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(LINKS_TABLES.replace("INTEGER", "bigint"))
        for statement in _links_rows():
            conn.execute(statement)
        for table, column, parent in LINKS_FKS:
            conn.execute(f"ALTER TABLE {table} ADD FOREIGN KEY ({column}) REFERENCES "
                         f"{parent}(id) NOT VALID")
    yield url


def test_join_rows_belong_to_a_tenant_only_when_every_path_agrees(links_db: str) -> None:
    catalog = catalog_of(links_db)
    catalog.require_runnable()
    for tenant in ("acme", "globex"):
        got = sorted(r["id"] for r in rows_of(links_db, catalog, tenant, "links"))
        assert got == sorted(k for k, v in LINKS.items() if v[2] == tenant), tenant
        notes = sorted(r["id"] for r in rows_of(links_db, catalog, tenant, "link_notes"))
        # a note belongs to its link's tenant; the parent note (self reference) never decides
        expected = sorted(k for k, v in LINKS.items() if v[2] == tenant)
        assert notes == sorted([*expected, *([100] if tenant == "acme" else [])])
    assert unowned(links_db, catalog, "links") == (1, 3)
    # notes below a cross-tenant link are cross-tenant; below an ownerless one, orphans
    assert unowned(links_db, catalog, "link_notes") == (1, 3)
    # a cycle of child tables: one relation is left out of scoping, nothing loops
    cycle = {e.name: e for e in catalog.entries}
    assert cycle["a_cycle"].status == cycle["b_cycle"].status == "exported"
    assert [fk.parent for fk in cycle["b_cycle"].scope.refs] == ["a_cycle"]  # type: ignore[union-attr]
    assert [r["id"] for r in rows_of(links_db, catalog, "acme", "b_cycle")] == [1]
    assert [r["id"] for r in rows_of(links_db, catalog, "globex", "b_cycle")] == [2]


# -- a tenant column stored with another type than the tenants' id ----------------------------
LOOSE = """
CREATE TABLE tenants (id INTEGER PRIMARY KEY);
CREATE TABLE notes (id INTEGER PRIMARY KEY, tenant_id, body TEXT);
CREATE TABLE tagged (id INTEGER PRIMARY KEY, tenant_id TEXT, body TEXT);
INSERT INTO tenants VALUES (7), (8);
INSERT INTO notes VALUES (1, 7, 'int'), (2, '7', 'text'), (3, 7.0, 'real'), (4, '7.0', 'odd'),
                         (5, 8, 'other'), (6, NULL, 'none'), (7, 'x7', 'ghost');
INSERT INTO tagged VALUES (1, 7, 'affinity made it text'), (2, '8', 'other');
"""


def test_tenant_values_of_another_type_are_matched_or_counted(tmp_path: Path) -> None:
    url = sqlite_db(tmp_path, LOOSE)
    catalog = catalog_of(url)
    notes = {r["id"]: r["body"] for r in rows_of(url, catalog, "7", "notes")}
    # the integer 7 and the text '7' (what a join with tenants.id matches) are tenant 7's
    assert set(notes) >= {1, 2} and 5 not in notes
    other = {r["id"] for r in rows_of(url, catalog, "8", "notes")}
    assert other == {5}
    _, orphans = unowned(url, catalog, "notes")
    total = 7
    assert len(notes) + len(other) + orphans == total  # every row is exported or counted
    assert [r["id"] for r in rows_of(url, catalog, "7", "tagged")] == [1]


@pytest.mark.postgres
def test_postgres_tenant_column_of_another_type_is_compared_as_text(postgres_url: str) -> None:
    url = fresh_database(postgres_url, "types")
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE tenants (id integer PRIMARY KEY);"
                     "CREATE TABLE notes (id integer PRIMARY KEY, tenant_id text);"
                     "INSERT INTO tenants VALUES (7), (70);"
                     "INSERT INTO notes VALUES (1, '7'), (2, '70'), (3, '07'), (4, NULL)")
    catalog = catalog_of(url)
    assert [r["id"] for r in rows_of(url, catalog, "7", "notes")] == [1]
    assert [r["id"] for r in rows_of(url, catalog, "70", "notes")] == [2]
    assert unowned(url, catalog, "notes") == (0, 2)


# -- catalog init / show ----------------------------------------------------------------------
def _init_then_check(url: str) -> tuple[str, Catalog]:
    from sources.catalog_init import render_catalog

    engine = open_engine(url)
    try:
        text = render_catalog(engine, CatalogConfig(), "test")
    finally:
        engine.dispose()
    catalog = catalog_of(url, text)
    catalog.require_runnable()  # used as written, it lets export and backup run
    catalog.for_backup()
    return text, catalog


@pytest.mark.postgres
def test_catalog_init_classifies_a_postgres_platform(ref_postgres: tuple[Any, str]) -> None:
    platform, url = ref_postgres
    text, catalog = _init_then_check(url)
    assert "a run would still refuse" not in text
    assert {e.name for e in catalog.entries if e.status == "exported"} == set(
        platform.content_tables)
    assert "# activity_log_2026_01: partition" in text
    assert "# event_stats: view" in text


@pytest.mark.postgres
def test_catalog_init_finds_schema_per_tenant(postgres_url: str) -> None:
    url = fresh_database(postgres_url, "initschema")
    platform = create_postgres(url, PlatformSpec.tiny(), schema_per_tenant=True)
    text, catalog = _init_then_check(url)
    assert 'tenancy = "schema"' in text and 'schema_pattern = "tenant_{tenant_id}"' in text
    assert {e.name for e in catalog.entries if e.status == "exported"} == set(
        platform.content_tables)


def test_catalog_commands_do_not_import_prefect(ref_sqlite: tuple[Any, str],
                                                tmp_path: Path) -> None:
    import json
    import os
    import subprocess
    import sys

    platform, url = ref_sqlite
    catalog = tmp_path / "catalog.toml"
    catalog.write_text(platform.catalog_toml)
    probe = ("import json, sys\nfrom tenant_export.cli import main\n"
             "sys.argv = ['tenant-export', 'catalog', 'show', '--json']\n"
             "try:\n    main()\nexcept SystemExit:\n    pass\n"
             "print(json.dumps('prefect' in sys.modules))\n")
    env = {**os.environ, "TENANT_EXPORT_SOURCE_URL": url, "TENANT_EXPORT_CATALOG": str(catalog)}
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          env=env, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    *shown, imported = proc.stdout.strip().splitlines()
    doc = json.loads("\n".join(shown))
    assert doc["ready"] is True and json.loads(imported) is False
    assert [t["table"] for t in doc["partitions"]] == []
    assert {t["table"] for t in doc["shared"]} == set(platform.shared_tables)
