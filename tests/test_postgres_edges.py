"""PostgreSQL values and settings that break naive exporters, exported exactly."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.conftest import Platform, _platform
from tests.helpers import fetch_package, read_table
from tests.services import fresh_database

pytestmark = pytest.mark.postgres

DDL = """
CREATE TABLE tenants (id integer PRIMARY KEY, name text);
CREATE TABLE "odd?table%" (
    id integer PRIMARY KEY, tenant_id integer NOT NULL,
    "when?" timestamptz, "day%" date, t time, tz timetz, span interval, tags text[],
    days date[], f8 double precision, f4 real, n numeric, u uuid, doc jsonb
);
INSERT INTO tenants VALUES (7, 'seven'), (70, 'seventy');
INSERT INTO "odd?table%" VALUES
 (1, 7, 'infinity', '-infinity', '24:00:00', '10:00:00+02', '1 year 2 mons 3 days 04:05:06.789',
  '{"a,b","c\\"d",NULL}', '{2026-02-28,2026-03-01}', 0.30000000000000004, 0.1, 'NaN',
  'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '{"k": [1, 2]}'),
 (2, 7, '0044-03-15 12:00:00+00 BC', '10000-01-01', '00:00:00', NULL, '-1 day', '{}', NULL,
  'Infinity', '-Infinity', '123.4500', NULL, 'null'),
 (3, 70, '2026-01-01 00:00:00+00', '2026-01-01', NULL, NULL, NULL, NULL, NULL, 1, 1, 1, NULL, NULL);
"""

EXPECTED = {
    "1": {"when?": "infinity", "day%": "-infinity", "t": "24:00:00", "tz": "10:00:00+02",
          "span": "1 year 2 mons 3 days 04:05:06.789", "tags": '{"a,b","c\\"d",NULL}',
          "days": "{2026-02-28,2026-03-01}", "f8": "0.30000000000000004", "f4": "0.1",
          "n": "NaN", "u": "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", "doc": '{"k": [1, 2]}'},
    "2": {"span": "-1 days", "tags": "{}", "days": None, "n": "123.4500", "doc": "null",
          "f8": "inf", "f4": "-inf"},
}


@pytest.fixture
def odd_platform(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, moto_endpoint: str,
                 postgres_url: str, prefect_server: None) -> Platform:
    # settings a DBA may have left behind; the export must not depend on them
    url = fresh_database(postgres_url, "odd", "extra_float_digits = 0",
                         "DateStyle = 'SQL, DMY'", "IntervalStyle = 'sql_standard'",
                         "TimeZone = 'America/St_Johns'")
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(DDL)
    platform = _platform(monkeypatch, tmp_path, moto_endpoint, url, ("test", "test"))
    (tmp_path / "catalog.toml").write_text("")  # plain discovery, no exclusions
    return platform


def export(tenant: str) -> dict[str, Any]:
    from flows.export_flow import ExportRequest, offboarding_export

    return offboarding_export(ExportRequest(tenant_id=tenant, link_ttl_seconds=600))


def test_awkward_postgres_values_survive(odd_platform: Platform) -> None:
    files = fetch_package(export("7"))
    package = json.loads(files["datapackage.json"])
    resource = next(r for r in package["resources"] if r.get("x-source-table") == "odd?table%")
    header, rows = read_table(files, resource)
    cells = {r[0]: dict(zip(header, r, strict=True)) for r in rows}
    assert set(cells) == {"1", "2"}  # tenant 70 is not tenant 7
    for row_id, expected in EXPECTED.items():
        for column, value in expected.items():
            assert cells[row_id][column] == value, (row_id, column, cells[row_id][column])
    when = cells["2"]["when?"] or ""
    assert "BC" in when or when.startswith("-")  # a BC timestamp, not an error
    assert cells["2"]["day%"] == "10000-01-01"
    types = {f["name"]: f["type"] for f in resource["schema"]["fields"]}
    assert types["when?"] == "datetime" and types["day%"] == "date" and types["n"] == "number"


@pytest.mark.parametrize("alias", ["07", "7.0", "+7", " 7"])
def test_integer_tenant_ids_have_no_aliases(odd_platform: Platform, alias: str) -> None:
    from typer.testing import CliRunner

    from tenant_export.cli import app

    result = CliRunner().invoke(app, ["export", alias])
    assert result.exit_code == 2
    assert odd_platform.export_keys() == []
