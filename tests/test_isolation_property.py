"""Tenant isolation as a property (hypothesis), on SQLite and PostgreSQL: whatever tenant ids,
collations, relations and document keys the generator picks, the export of one tenant holds
exactly its own rows and no row or byte of any other tenant; so does its backup, restored into
an empty database and bucket.

Every value the generator writes carries its owner's marker (``«tenant»``; a row linking two
tenants carries both), so a leak is found by looking for other tenants' markers in every CSV
and every ZIP entry. Documents may point at another tenant's blob: under a per-tenant key
prefix the export is refused and nothing stays behind; with keys declared not tenant-scoped,
every such blob shipped is reported as shared.
"""

from __future__ import annotations

import io
import sqlite3
import tempfile
import uuid
import zipfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import SecretStr

from flows import backup, packaging, restore
from flows.context import RunContext
from flows.keyring import master_key
from kernel.errors import TerminalError
from kernel.ids import new_export_id
from kernel.settings import Settings
from storage.keys import generate_master_key
from storage.s3 import make_client
from tests.csvparse import parse
from tests.services import fresh_database

IDS = st.text("abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=10).filter(
    lambda s: s[0] != "-")


@dataclass
class World:
    """A random multi-tenant platform and who owns what in it."""

    tenants: list[str]
    nocase: bool
    stored_case: dict[str, str]  # how items spell their tenant id (case may differ, nocase)
    items: list[tuple[int, str]]
    children: list[tuple[int, int]]  # (child id, item id)
    links: list[tuple[int, int, int | None]]  # (link id, item a, item b)
    documents: list[tuple[int, str, str | None]]  # (id, owner, key)
    scoped_keys: bool
    blobs: dict[str, bytes] = field(default_factory=dict)

    def owner(self, item: int) -> str:
        return dict(self.items)[item]


@st.composite
def worlds(draw: st.DrawFn) -> World:
    nocase = draw(st.booleans())
    tenants = draw(st.lists(IDS, min_size=2, max_size=4,
                            unique_by=str.lower if nocase else (lambda s: s)))
    items = [(i + 1, draw(st.sampled_from(tenants))) for i in range(draw(st.integers(1, 8)))]
    ids = [i for i, _ in items]
    children = [(c + 1, draw(st.sampled_from(ids))) for c in range(draw(st.integers(0, 6)))]
    links = [(n + 1, draw(st.sampled_from(ids)), draw(st.none() | st.sampled_from(ids)))
             for n in range(draw(st.integers(0, 6)))]
    scoped = draw(st.booleans())
    documents: list[tuple[int, str, str | None]] = []
    for n in range(draw(st.integers(0, 6))):
        owner = draw(st.sampled_from(tenants))
        target = draw(st.sampled_from(tenants))  # sometimes another tenant's folder
        key = draw(st.sampled_from([f"tenants/{target}/doc-{n}", f"tenants/{target}x/doc-{n}",
                                    None]))
        documents.append((n + 1, owner, key))
    stored = {t: draw(st.sampled_from([t, t.upper()])) if nocase else t for t in tenants}
    world = World(tenants, nocase, stored, items, children, links, documents, scoped)
    for doc_id, owner, key in documents:
        if key is not None:
            world.blobs[key] = f"blob of «{owner}» #{doc_id} ".encode() + bytes(range(40))
    return world


def marker(tenant: str) -> str:
    return f"«{tenant}»"


Statement = str | tuple[str, tuple[Any, ...]]


def ddl(world: World, backend: str) -> list[Statement]:
    text = ("public.citext" if world.nocase else "text") if backend == "postgresql" else (
        "TEXT COLLATE NOCASE" if world.nocase else "TEXT")
    statements: list[Statement] = [
        f"CREATE TABLE tenants (id {text} PRIMARY KEY, name TEXT)",
        f"CREATE TABLE items (id INTEGER PRIMARY KEY, tenant_id {text}, payload TEXT)",
        "CREATE TABLE children (id INTEGER PRIMARY KEY, item_id INTEGER REFERENCES items(id), "
        "payload TEXT)",
        "CREATE TABLE links (id INTEGER PRIMARY KEY, a_id INTEGER NOT NULL REFERENCES items(id),"
        " b_id INTEGER REFERENCES items(id), payload TEXT)",
        f"CREATE TABLE documents (id INTEGER PRIMARY KEY, tenant_id {text}, filename TEXT, "
        "storage_key TEXT)",
    ]
    rows: list[tuple[str, tuple[Any, ...]]] = []
    rows += [("tenants", (t, marker(t))) for t in world.tenants]
    rows += [("items", (i, world.stored_case[t], f"item {marker(t)}")) for i, t in world.items]
    rows += [("children", (c, i, f"child {marker(world.owner(i))}")) for c, i in world.children]
    for n, a, b in world.links:
        owners = {world.owner(a)} | ({world.owner(b)} if b is not None else set())
        rows.append(("links", (n, a, b, "link " + "".join(marker(o) for o in sorted(owners)))))
    rows += [("documents", (d, world.stored_case[o], f"file {marker(o)}", k))
             for d, o, k in world.documents]
    mark = "?" if backend == "sqlite" else "%s"
    statements += [(f"INSERT INTO {t} VALUES ({', '.join([mark] * len(r))})", r) for t, r in rows]
    return statements


def catalog_text(world: World) -> str:
    rule = 'key_prefix = "tenants/{tenant_id}"' if world.scoped_keys else (
        "keys_tenant_scoped = false")
    return f"[documents]\n{rule}\n"


@dataclass
class Backend:
    name: str
    url: str


def build(world: World, backend: Backend, root: Path) -> str:
    if backend.name == "sqlite":
        path = root / f"{uuid.uuid4().hex}.sqlite"
        with sqlite3.connect(path) as db:
            for statement in ddl(world, "sqlite"):
                if isinstance(statement, tuple):
                    db.execute(*statement)
                else:
                    db.execute(statement)
        return f"sqlite:///{path}"
    with psycopg.connect(backend.url, autocommit=True) as conn:
        conn.execute("DROP SCHEMA public CASCADE; CREATE SCHEMA public; "
                     "CREATE EXTENSION IF NOT EXISTS citext WITH SCHEMA public")
        for statement in ddl(world, "postgresql"):
            if isinstance(statement, tuple):
                conn.execute(*statement)
            else:
                conn.execute(statement.replace("INTEGER", "bigint"))
    return backend.url


def expected_rows(world: World, tenant: str) -> dict[str, set[int]]:
    items = {i for i, t in world.items if t == tenant}
    return {
        "items": items,
        "children": {c for c, i in world.children if i in items},
        "links": {n for n, a, b in world.links if a in items and (b is None or b in items)},
        "documents": {d for d, o, _ in world.documents if o == tenant},
    }


def run_export(settings_: Settings, spelling: str) -> tuple[str, str, Any]:
    ctx = RunContext.open(settings_)
    try:
        tenant = packaging.check_request(ctx, spelling)
        export_id = new_export_id()
        try:
            records = packaging.write_package(ctx, tenant, export_id)
            packaging.verify_package(ctx, tenant, export_id, records)
            manifest = packaging.publish_manifest(ctx, tenant, export_id, datetime.now(UTC),
                                                  records)
        except TerminalError:
            packaging.discard_package(ctx, tenant, export_id)  # as the flow does
            raise
        return tenant, export_id, packaging.mint_links(ctx, tenant, export_id, "now", manifest,
                                                       records, 600)
    finally:
        ctx.close()


def canonical_of(world: World, tenant: str) -> str:
    """The id as the tenants table stores it (the backup takes that spelling)."""
    return tenant


def backup_and_restore(settings_: Settings, tenant: str, root: Path, s3: Any
                       ) -> tuple[dict[str, list[tuple[Any, ...]]], dict[str, bytes]]:
    """The tenant's snapshot restored into an empty SQLite file and bucket: tables, blobs."""
    backups, target_docs = f"b-{uuid.uuid4().hex[:12]}", f"r-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=backups)
    s3.create_bucket(Bucket=target_docs)
    own = settings_.model_copy(update={"backup_bucket": backups,
                                       "master_key": SecretStr(generate_master_key())})
    target = root / f"restored-{uuid.uuid4().hex}.sqlite"
    ctx = RunContext.open(own)
    try:
        backup.backup_tenant(ctx, master_key(own), tenant)
        restore.restore_snapshot(ctx, master_key(own), tenant, f"sqlite:///{target}",
                                 documents_bucket=target_docs)
    finally:
        ctx.close()
    with sqlite3.connect(target) as db:
        names = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        tables = {n: db.execute(f'SELECT * FROM "{n}"').fetchall() for n in names}
    blobs = {o["Key"]: s3.get_object(Bucket=target_docs, Key=o["Key"])["Body"].read()
             for o in s3.list_objects_v2(Bucket=target_docs).get("Contents", [])}
    return tables, blobs


def check_world(world: World, backend: Backend, endpoint: str, root: Path, pick: int,
                upper: bool) -> None:
    url = build(world, backend, root)
    s3 = make_client(Settings(s3_endpoint_url=endpoint, s3_access_key_id="t",
                              s3_secret_access_key="t"))
    docs, exports = f"d-{uuid.uuid4().hex[:12]}", f"e-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=docs)
    s3.create_bucket(Bucket=exports)
    for key, blob in world.blobs.items():
        s3.put_object(Bucket=docs, Key=key, Body=blob)
    catalog = root / f"{uuid.uuid4().hex}.toml"
    catalog.write_text(catalog_text(world))
    settings_ = Settings(source_url=url, catalog=catalog, documents_bucket=docs,
                         export_bucket=exports, s3_endpoint_url=endpoint, s3_access_key_id="t",
                         s3_secret_access_key="t", state_dir=root)
    tenant = world.tenants[pick % len(world.tenants)]
    spelling = tenant.upper() if upper and world.nocase else tenant
    outside = [k for _, o, k in world.documents
               if o == tenant and k is not None and not k.startswith(f"tenants/{tenant}/")]
    if world.scoped_keys and outside:  # a key outside the tenant's folder: refused
        with pytest.raises(TerminalError, match="outside the tenant's prefix"):
            run_export(settings_, spelling)
        assert s3.list_objects_v2(Bucket=exports).get("KeyCount", 0) == 0  # nothing left
        with pytest.raises(TerminalError, match="outside the tenant's prefix"):
            backup_and_restore(settings_, canonical_of(world, tenant), root, s3)  # nor backed up
        return
    canonical, export_id, result = run_export(settings_, spelling)
    assert canonical == tenant
    prefix = f"exports/{tenant}/{export_id}/"
    files = {o["Key"].removeprefix(prefix): s3.get_object(Bucket=exports, Key=o["Key"])[
        "Body"].read() for o in s3.list_objects_v2(Bucket=exports).get("Contents", [])}
    assert all(not k.startswith("exports/") for k in files)  # one prefix: the stored id
    others = [marker(t) for t in world.tenants if t != tenant]
    expected = expected_rows(world, tenant)
    for table, ids in expected.items():
        rows = parse(files[f"data/{table}.csv"].decode())[1:]
        assert {int(r[0] or 0) for r in rows} == ids, table
    for name, body in files.items():
        if name.endswith(".csv"):
            assert not [m for m in others if m in body.decode()], (name, body)
    shared = {s.storage_key for s in result.documents_shared_keys}
    for name, body in files.items():
        if name.endswith(".zip"):
            with zipfile.ZipFile(io.BytesIO(body)) as archive:
                for entry in archive.infolist():
                    content = archive.read(entry).decode(errors="replace")
                    foreign = [m for m in others if m in content]
                    if foreign:  # only a blob the tenant's own rows share, and reported
                        assert not world.scoped_keys and shared, (content, foreign)
    for _, owner, key in world.documents:  # every shared key the tenant points at is reported
        if owner == tenant and key is not None and key in world.blobs and not world.scoped_keys:
            used_by_others = any(o != tenant and k == key for _, o, k in world.documents)
            assert (key in shared) == used_by_others, key

    # the backup follows the same rules: restored, it holds the same rows and no foreign byte
    tables, blobs = backup_and_restore(settings_, tenant, root, s3)
    for table, ids in expected.items():
        assert {int(r[0]) for r in tables[table]} == ids, ("backup", table)
    foreign_rows = [(n, r) for n, rows in tables.items() for r in rows
                    if any(m in repr(r) for m in others)]
    assert not foreign_rows, foreign_rows
    for key, body in blobs.items():
        if [m for m in others if m in body.decode(errors="replace")]:
            assert not world.scoped_keys and key in shared, ("backup", key)


EXAMPLES = {"sqlite": 15, "postgresql": 8}


@pytest.fixture(scope="module")
def pg_isolation(postgres_url: str) -> str:
    return fresh_database(postgres_url, "iso")


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def backend(request: pytest.FixtureRequest) -> Backend:
    url = request.getfixturevalue("pg_isolation") if request.param == "postgresql" else ""
    return Backend(request.param, url)


def test_an_export_holds_no_row_and_no_byte_of_another_tenant(backend: Backend,
                                                                moto_endpoint: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)

        @settings(max_examples=EXAMPLES[backend.name], deadline=None, database=None,
                  suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
        @given(world=worlds(), pick=st.integers(0, 3), upper=st.booleans())
        def check(world: World, pick: int, upper: bool) -> None:
            check_world(world, backend, moto_endpoint, root, pick, upper)

        check()
