"""Issue 9 acceptance on the reference platform (``tenant_export.refplatform``), SQLite and
PostgreSQL: each tenant's export holds exactly its rows of every tenant table (child tables of
every depth), value by value, nothing of another tenant; rows nobody gets are counted in the
inventory; relations travel as Frictionless foreign keys; schema per tenant reads each tenant
from its own schema; an unclassified table stops export and backup until ``catalog init``'s
catalog is used."""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest
from typer.testing import CliRunner

from flows import packaging
from flows.context import RunContext
from kernel.ids import new_export_id
from kernel.settings import Settings
from tenant_export.cli import app
from tenant_export.refplatform import (
    Platform as RefPlatform,
)
from tenant_export.refplatform import (
    PlatformSpec,
    create_postgres,
    create_sqlite,
    tenant_schema,
    upload_blobs,
)
from tests.conftest import Platform, _platform
from tests.helpers import decode, decode_mixed, read_table, same
from tests.services import fresh_database

runner = CliRunner()


@dataclass
class Setup:
    """A reference platform wired to buckets and settings (catalog: the platform's own)."""

    env: Platform
    ref: RefPlatform
    url: str
    catalog: Path


def _setup(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, moto_endpoint: str, url: str,
           ref: RefPlatform) -> Setup:
    env = _platform(monkeypatch, tmp_path, moto_endpoint, url, ("test", "test"))
    catalog = tmp_path / "catalog.toml"
    catalog.write_text(ref.catalog_toml)
    upload_blobs(env.s3, env.documents_bucket, ref, workers=4)
    return Setup(env, ref, url, catalog)


@pytest.fixture
def ref_sqlite(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, moto_endpoint: str) -> Setup:
    ref = create_sqlite(tmp_path / "ref.sqlite", PlatformSpec.tiny())
    return _setup(monkeypatch, tmp_path, moto_endpoint, f"sqlite:///{ref.location}", ref)


@pytest.fixture
def ref_postgres(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, moto_endpoint: str,
                 postgres_url: str) -> Setup:
    url = fresh_database(postgres_url, "ref")
    return _setup(monkeypatch, tmp_path, moto_endpoint, url,
                  create_postgres(url, PlatformSpec.tiny()))


@pytest.fixture
def ref_schemas(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, moto_endpoint: str,
                postgres_url: str) -> Setup:
    url = fresh_database(postgres_url, "refs")
    ref = create_postgres(url, PlatformSpec.tiny(), schema_per_tenant=True)
    return _setup(monkeypatch, tmp_path, moto_endpoint, url, ref)


def export_files(setup: Setup, tenant: str) -> dict[str, bytes]:
    """The export recipe without Prefect (the flow only orchestrates it), read back from S3."""
    ctx = RunContext.open(Settings())
    try:
        canonical = packaging.check_request(ctx, tenant)
        export_id = new_export_id()
        records = packaging.write_package(ctx, canonical, export_id)
        packaging.verify_package(ctx, canonical, export_id, records)
        packaging.publish_manifest(ctx, canonical, export_id, datetime.now(UTC), records)
    finally:
        ctx.close()
    prefix = packaging.package_prefix(canonical, export_id)
    return {key.removeprefix(prefix): setup.env.get(key)
            for key in setup.env.export_keys() if key.startswith(prefix)}


# -- reading the source for comparison --------------------------------------------------------
def source_rows(setup: Setup, table: str, columns: list[str], keys: list[tuple[Any, ...]],
                tenant: str, *, as_text: bool = False) -> dict[tuple[Any, ...], tuple[Any, ...]]:
    """The source's rows of ``table`` by primary key, with the database's own driver."""
    pk = list(setup.ref.primary_keys[table])
    schema = setup.ref.table_schemas[table].replace("{tenant_id}", "")
    if setup.ref.schema_per_tenant and schema != "public":
        schema = tenant_schema(tenant)
    cast = (lambda c: f'"{c}"::text') if as_text else (lambda c: f'"{c}"')
    select = ", ".join([*(f'"{c}"' for c in pk), *(cast(c) for c in columns)])
    if setup.ref.backend == "sqlite":
        with sqlite3.connect(setup.ref.location) as db:
            rows = db.execute(f'SELECT {select} FROM "{table}"').fetchall()
    else:
        with psycopg.connect(setup.url) as conn:
            conn.execute("SET TIME ZONE 'UTC'")
            rows = conn.execute(f'SELECT {select} FROM "{schema}"."{table}"').fetchall()
    by_key = {tuple(r[: len(pk)]): tuple(r[len(pk):]) for r in rows}
    return {k: by_key[k] for k in keys}


def check_table(setup: Setup, tenant: str, files: dict[str, bytes], resource: dict[str, Any]
                ) -> None:
    """Primary keys equal the ground truth; every value equals the source's, one by one."""
    table = resource["x-source-table"]
    header, rows = read_table(files, resource)
    fields = {f["name"]: f for f in resource["schema"]["fields"]}
    backend = setup.ref.backend
    pk = setup.ref.primary_keys[table]
    values = [n for n in header if not n.endswith("__sqlite_type")]
    cells = [dict(zip(header, row, strict=True)) for row in rows]
    keys = [tuple(decode(fields[c], cell[c], backend) for c in pk) for cell in cells]
    truth = setup.ref.owned[tenant][table]
    if table == "activity_log":  # the truth keeps the timestamp of the key as generated text
        assert sorted(k[:1] for k in keys) == [t[:1] for t in truth]
    else:
        assert sorted(keys) == truth, table
    arrays = [c for c in values if fields[c].get("x-source-type", "").endswith("[]")]
    typed = source_rows(setup, table, values, keys, tenant)
    texts = source_rows(setup, table, arrays, keys, tenant, as_text=True) if arrays else {}
    for key, cell in zip(keys, cells, strict=True):
        for name, want in zip(values, typed[key], strict=True):
            field = fields[name]
            if name in arrays:  # arrays: the server's own text rendering
                assert cell[name] == texts[key][arrays.index(name)], (table, name)
                continue
            if field["type"] == "any" and backend == "sqlite":
                got = decode_mixed(cell[name], cell[f"{name}__sqlite_type"])
            else:
                got = decode(field, cell[name], backend)
            assert same(want, got, field), (table, key, name, want, got)


def check_package(setup: Setup, tenant: str, files: dict[str, bytes]) -> dict[str, Any]:
    package = json.loads(files["datapackage.json"])
    tables = {r["x-source-table"]: r for r in package["resources"] if "x-source-table" in r}
    assert set(tables) == set(setup.ref.content_tables)
    for resource in tables.values():
        check_table(setup, tenant, files, resource)
    return package


def check_foreign_keys(files: dict[str, bytes], package: dict[str, Any]) -> int:
    """Every foreign key declared between resources holds inside the package."""
    resources = {r["name"]: r for r in package["resources"] if r.get("type") == "table"}
    loaded: dict[str, list[dict[str, str | None]]] = {}

    def rows(name: str) -> list[dict[str, str | None]]:
        if name not in loaded:
            header, data = read_table(files, resources[name])
            loaded[name] = [dict(zip(header, r, strict=True)) for r in data]
        return loaded[name]

    checked = 0
    for name, resource in resources.items():
        for fk in resource["schema"].get("foreignKeys", []):
            target = fk["reference"]
            present = {tuple(r[f] for f in target["fields"]) for r in rows(target["resource"])}
            for row in rows(name):
                value = tuple(row[f] for f in fk["fields"])
                if None not in value:
                    assert value in present, (name, fk, value)
                    checked += 1
    return checked


# -- acceptance -------------------------------------------------------------------------------
@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgresql",
                                                            marks=pytest.mark.postgres)])
def test_each_tenant_gets_exactly_its_rows(backend: str, request: pytest.FixtureRequest) -> None:
    setup: Setup = request.getfixturevalue("ref_sqlite" if backend == "sqlite"
                                           else "ref_postgres")
    ref = setup.ref
    for tenant in ref.tenant_ids:
        files = export_files(setup, tenant)
        package = check_package(setup, tenant, files)
        inventory = package["x-inventory"]
        exported = {t["table"]: t for t in inventory["exported"]}
        assert set(exported) == set(ref.content_tables)
        for table, entry in exported.items():
            assert entry["rows"] == len(ref.owned[tenant][table]), table
            assert entry.get("cross_tenant_rows", 0) == ref.cross_tenant.get(table, 0), table
            assert entry.get("orphan_rows", 0) == ref.orphans.get(table, 0), table
        assert exported["members"]["excluded_columns"] == ["password_hash"]
        assert "password_hash" not in files["data/members.csv"].decode().splitlines()[0]
        assert exported["payment_refunds"]["paths"][0].startswith("payment_refunds.payment_id")
        assert {t["table"] for t in inventory["shared"]} == set(ref.shared_tables)
        assert {t["table"] for t in inventory["partitions"]} == {
            p for parts in ref.partitioned.values() for p in parts}
        assert {t["table"] for t in inventory["views"]} == {*ref.views, *ref.materialized_views}
        assert inventory["skipped"] == []
        assert check_foreign_keys(files, package) > 0
        by_table = {r["x-source-table"]: r for r in package["resources"]
                    if "x-source-table" in r}
        assert by_table["comments"]["schema"]["primaryKey"] == ["id"]
        assert {"fields": ["post_id"], "reference": {"resource": by_table["posts"]["name"],
                                                     "fields": ["id"]}} in (
            by_table["attachments"]["schema"]["foreignKeys"])  # declared in the catalog only
        assert {"fields": ["country_code"], "reference": {"table": "countries",
                                                          "fields": ["code"]}} in (
            by_table["members"]["x-external-foreign-keys"])


@pytest.mark.postgres
def test_schema_per_tenant_reads_each_tenant_from_its_own_schema(ref_schemas: Setup) -> None:
    ref = ref_schemas.ref
    assert len(ref.tenant_ids) == 3
    # a marker row in every schema: it must show up in its own tenant's export only
    with psycopg.connect(ref_schemas.url, autocommit=True) as conn:
        for tenant in ref.tenant_ids:
            conn.execute(f"UPDATE {tenant_schema(tenant)}.tenant_settings SET value = %s "
                         "WHERE key = 'theme'", (f"marker-of-{tenant}",))
    for tenant in ref.tenant_ids:
        files = export_files(ref_schemas, tenant)
        package = check_package(ref_schemas, tenant, files)
        text = b"".join(v for k, v in files.items() if k.endswith(".csv")).decode()
        assert f"marker-of-{tenant}" in text
        assert not [t for t in ref.tenant_ids if t != tenant and f"marker-of-{t}" in text]
        assert package["x-inventory"]["tenancy"] == "schema"
        scopes = {r["x-source-table"]: r["x-scope"] for r in package["resources"]
                  if "x-source-table" in r}
        assert scopes["members"] == "the tenant's own schema"
        others = [tenant_schema(t) for t in ref.tenant_ids if t != tenant]
        assert not [s for s in others if s in files["datapackage.json"].decode()]


def test_schema_per_tenant_backs_up_each_tenant_from_its_own_schema(ref_schemas: Setup,
                                                                     tmp_path: Path) -> None:
    """Each tenant's snapshot, restored into an empty database, holds its own schema's rows
    and no other tenant's."""
    from flows import backup, restore
    from flows.keyring import master_key

    ref = ref_schemas.ref
    with psycopg.connect(ref_schemas.url, autocommit=True) as conn:
        for tenant in ref.tenant_ids:
            conn.execute(f"UPDATE {tenant_schema(tenant)}.tenant_settings SET value = %s "
                         "WHERE key = 'theme'", (f"marker-of-{tenant}",))
    settings = Settings()
    ctx = RunContext.open(settings)
    try:
        for tenant in ref.tenant_ids:
            backup.backup_tenant(ctx, master_key(settings), tenant)
            target = tmp_path / f"{tenant}.sqlite"
            restore.restore_snapshot(ctx, master_key(settings), tenant, f"sqlite:///{target}")
            with sqlite3.connect(target) as db:
                tables = [r[0] for r in db.execute(
                    "SELECT name FROM sqlite_master WHERE type = 'table'")]
                text = repr([db.execute(f'SELECT * FROM "{t}"').fetchall() for t in tables])
            assert "tenant_settings" in tables and "members" in tables, tables
            assert f"marker-of-{tenant}" in text
            assert not [t for t in ref.tenant_ids if t != tenant and f"marker-of-{t}" in text]
    finally:
        ctx.close()


def _invoke(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture
def unclassified(ref_sqlite: Setup) -> Setup:
    with sqlite3.connect(ref_sqlite.ref.location) as db:
        db.execute("CREATE TABLE delivery_log (id INTEGER PRIMARY KEY, line TEXT)")
        db.execute("INSERT INTO delivery_log VALUES (1, 'mail to harbour-rowing')")
    return ref_sqlite


def test_unclassified_table_stops_export_and_backup_until_catalog_init(
        unclassified: Setup, monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
        prefect_server: None) -> None:
    tenant = unclassified.ref.tenant_ids[0]
    for command in (["export", tenant], ["backup", tenant]):
        code, _, err = _invoke(*command)
        assert code == 2, (command, err)
        assert "table 'delivery_log' is not classified" in err
        assert "[tables.delivery_log] shared = true" in err
    assert unclassified.env.export_keys() == []
    monkeypatch.delenv("TENANT_EXPORT_CATALOG")  # init from discovery alone
    written = tmp_path / "reviewed.toml"
    code, out, err = _invoke("catalog", "init", "--out", str(written))
    assert code == 0, err
    text = written.read_text()
    assert "# delivery_log: unclassified" in text and "REVIEW" in text
    assert 'key_prefix = "tenants/{tenant_id}/"' in text
    assert "[tables.attachments.references]" in text  # guessed from post_id / document_id
    code, _, err = _invoke("catalog", "init", "--out", str(written))
    assert code == 2 and "exists" in err  # a reviewed catalog is never overwritten
    monkeypatch.setenv("TENANT_EXPORT_CATALOG", str(written))
    code, out, err = _invoke("catalog", "show", "--json")
    assert code == 0, err
    shown = json.loads(out)
    assert shown["ready"] and shown["problems"] == []
    assert {t["table"] for t in shown["shared"]} == {"delivery_log", *unclassified.ref.shared_tables}
    code, out, err = _invoke("export", tenant, "--json")
    assert code == 0, err
    assert json.loads(out)["tenant_id"] == tenant
    code, out, err = _invoke("backup", tenant, "--json")
    assert code == 0, err
