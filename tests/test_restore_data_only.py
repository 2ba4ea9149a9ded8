"""Issue 9, ``restore --data-only``: a snapshot loaded into a schema the platform's own DDL
created (``refplatform.ddl``), on SQLite and PostgreSQL, gives back every row of the tenant
value by value; a schema that does not fit, or a target already holding the tenant's rows, is
refused with exit 2 and nothing written."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import psycopg
import pytest
from typer.testing import CliRunner

from kernel.errors import BadInput
from tenant_export.cli import app
from tenant_export.refplatform import ddl
from tests.services import fresh_database
from tests.test_restore_schema import (
    BACKENDS,
    TENANT,
    all_rows,
    assert_tenant_restored,
    backed_up,
    columns,
    full_dump,
    ref_platform,  # noqa: F401 - fixture
    restored,
    source_schema,
)
from tests.test_tenancy import Setup, ref_postgres, ref_sqlite  # noqa: F401 - fixtures

runner = CliRunner()


def platform_schema(setup: Setup, target: str, *, seed: bool = True) -> None:
    """The platform's own DDL in ``target``, with its shared rows (countries, plans,
    currencies) as the platform's migrations seed them."""
    backend = "sqlite" if target.startswith("sqlite") else "postgresql"
    shared = {t: all_rows(setup.url, t, source_schema(setup.ref, t))
              for t in setup.ref.shared_tables} if seed else {}
    if backend == "sqlite":
        with sqlite3.connect(target.removeprefix("sqlite:///")) as db:
            db.executescript(ddl("sqlite"))
            for table, rows in shared.items():
                width = len(columns(target, table))
                db.executemany(f"INSERT INTO {table} VALUES ({', '.join('?' * width)})",
                               [r[:width] for r in rows])
        return
    with psycopg.connect(target) as conn:
        conn.execute(ddl("postgresql"))
        for table, rows in shared.items():
            marks = ", ".join(["%s"] * len(rows[0])) if rows else ""
            with conn.cursor() as cur:
                cur.executemany(f"INSERT INTO public.{table} VALUES ({marks})", rows)


def new_target(setup: Setup, tmp_path: Path, request: pytest.FixtureRequest,
               name: str = "target") -> str:
    if setup.ref.backend == "sqlite":
        return f"sqlite:///{tmp_path}/{name}.sqlite"
    return fresh_database(request.getfixturevalue("postgres_url"), name)


def schemas(setup: Setup) -> dict[str, str]:
    return {} if setup.ref.backend == "sqlite" else dict(setup.ref.table_schemas)


def dump(setup: Setup, target: str) -> dict[str, list[str]]:
    return full_dump(target, [*setup.ref.content_tables, *setup.ref.shared_tables],
                     schemas(setup))


def cli(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


@pytest.mark.parametrize("ref_platform", BACKENDS, indirect=True)
def test_data_only_into_the_platforms_own_schema(
        ref_platform: Setup,  # noqa: F811 - fixture
        tmp_path: Path, request: pytest.FixtureRequest) -> None:
    setup = ref_platform
    backed_up()
    target = new_target(setup, tmp_path, request)
    platform_schema(setup, target)
    result = restored(target, data_only=True)
    assert result["mode"] == "data-only"
    assert result["rows"] == {t: len(setup.ref.owned[TENANT][t]) for t in setup.ref.content_tables}
    assert_tenant_restored(setup, TENANT, target, schemas(setup))
    if setup.ref.backend == "sqlite":
        assert result["sequences_advanced"] == []
        return
    advanced = {(s["table"], s["column"]): s["value"] for s in result["sequences_advanced"]}
    members = setup.ref.owned[TENANT]["members"]
    assert advanced[("members", "id")] == max(k[0] for k in members)
    with psycopg.connect(target) as conn:  # the platform's next member gets a fresh id
        (new_id,) = conn.execute("INSERT INTO members (tenant_id, member_number, full_name, "
                                 "status, joined_on, is_board) VALUES (%s, 'n', 'New', "
                                 "'active', '2026-01-01', false) RETURNING id",
                                 (TENANT,)).fetchone() or (0,)
    assert new_id > max(k[0] for k in members)


@pytest.mark.postgres
def test_data_only_refuses_rows_pointing_at_shared_rows_the_target_lacks(
        ref_postgres: Setup,  # noqa: F811 - fixture
        tmp_path: Path, request: pytest.FixtureRequest) -> None:
    backed_up()
    target = new_target(ref_postgres, tmp_path, request)
    platform_schema(ref_postgres, target, seed=False)  # no plans, countries, currencies
    before = dump(ref_postgres, target)
    with pytest.raises(BadInput, match=r"tenants\.plan_id → plans\.id.*shared rows first"):
        restored(target, data_only=True)
    assert dump(ref_postgres, target) == before


def test_data_only_through_the_cli_then_refused_when_the_tenant_is_there(
        ref_sqlite: Setup,  # noqa: F811 - fixture
        tmp_path: Path, prefect_server: None) -> None:
    backed_up()
    target = f"sqlite:///{tmp_path}/platform-copy.sqlite"
    platform_schema(ref_sqlite, target)
    code, out, err = cli("restore", TENANT, "--data-only", "--target", target, "--json")
    assert code == 0, err
    assert json.loads(out)["rows"]["members"] == len(ref_sqlite.ref.owned[TENANT]["members"])
    assert_tenant_restored(ref_sqlite, TENANT, target)
    before = dump(ref_sqlite, target)
    code, _, err = cli("restore", TENANT, "--data-only", "--target", target)
    assert code == 2, err
    assert f"the target already holds rows of tenant '{TENANT}'" in err
    assert "tenants (1 row(s))" in err and "nothing was written" in err
    assert dump(ref_sqlite, target) == before


@pytest.mark.parametrize("change", [
    pytest.param("ALTER TABLE members DROP COLUMN phone", id="missing-column"),
    pytest.param("DROP TABLE post_tags", id="missing-table"),
    pytest.param("ALTER TABLE tags ADD COLUMN slug TEXT NOT NULL DEFAULT 'x'", id="extra-ok"),
])
def test_data_only_refuses_a_schema_that_does_not_fit(
        ref_sqlite: Setup,  # noqa: F811 - fixture
        tmp_path: Path, prefect_server: None, change: str) -> None:
    backed_up()
    target = f"sqlite:///{tmp_path}/migrated.sqlite"
    platform_schema(ref_sqlite, target)
    with sqlite3.connect(target.removeprefix("sqlite:///")) as db:
        db.execute(change)
    db_file = Path(target.removeprefix("sqlite:///"))
    before = (dump(ref_sqlite, target) if "post_tags" not in change else None,
              db_file.stat().st_size)
    code, _, err = cli("restore", TENANT, "--data-only", "--target", target)
    if "ADD COLUMN" in change:  # an extra column with a default is the platform's business
        assert code == 0, err
        return
    assert code == 2, err
    assert "the target's schema does not fit the snapshot" in err
    assert ("table members has no column(s) phone" in err if "phone" in change
            else "table 'post_tags' is missing" in err)
    assert "nothing was written" in err
    if before[0] is not None:
        assert dump(ref_sqlite, target) == before[0]
    assert db_file.stat().st_size == before[1]


def test_data_only_without_any_table_creates_nothing(
        ref_sqlite: Setup,  # noqa: F811 - fixture
        tmp_path: Path) -> None:
    backed_up()
    target = tmp_path / "nothing-here.sqlite"
    with pytest.raises(BadInput, match="table 'tenants' is missing"):
        restored(f"sqlite:///{target}", data_only=True)
    assert not target.exists()
