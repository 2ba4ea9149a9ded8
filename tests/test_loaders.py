"""The loaders of docs/loading.md, run as written on real packages: every value comes back.

The code blocks are taken from the documentation unedited (tests/loaders_doc.py) and run on every
file of packages exported from the awkward-values platform, on SQLite and on PostgreSQL, plus a
few tables added here for what the platform lacks (values Arrow cannot hold, a one-column table
with NULL rows). Each loaded value is compared with the source row read by the database's own
driver, type included. If the documented code changes behaviour, these tests fail.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sqlite3
import sys
import warnings
import zipfile
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pytest

from tests import awkward
from tests.conftest import Platform
from tests.helpers import fetch_package, source_rows
from tests.loaders_doc import (
    CLIENT_GUIDE,
    code_blocks,
    identical,
    loader_module_source,
    run_block,
)

Columns = dict[str, list[Any]]

# What the awkward platform lacks, added to each source before the export.
SQLITE_EXTRA = """
CREATE TABLE solo (id INTEGER PRIMARY KEY, tenant_id TEXT NOT NULL, v TEXT);
CREATE TABLE edge (id INTEGER PRIMARY KEY, tenant_id TEXT NOT NULL, num NUMERIC, untyped);
"""
SQLITE_EXTRA_ROWS = {
    # only ``v`` is exported (catalog below): its NULL rows are empty lines in the CSV
    "solo": [(1, "t-1", None), (2, "t-1", ""), (3, "t-1", "x"), (4, "t-1", None),
             (5, "t-2", "leak")],
    # num mixes integers (one above 2**53) and reals (inf included); untyped mixes all classes
    "edge": [(1, "t-1", 9007199254740993, b""), (2, "t-1", 2.5, ""),
             (3, "t-1", float("inf"), None), (4, "t-1", float("-inf"), -7),
             (5, "t-1", None, 1.0), (6, "t-1", 0, "x"), (7, "t-2", 1, 1)],
}
SQLITE_CATALOG = awkward.CATALOG + """
[tables.solo]
exclude_columns = ["id", "tenant_id"]
"""

PG_EXTRA = """
CREATE TABLE edge (
    id integer PRIMARY KEY, tenant_id text NOT NULL,
    ts_plain timestamptz, ts_special timestamptz, ts_bc timestamp, d_special date,
    t_plain time, t_24 time, t_zone timetz,
    n_free numeric, n_nan numeric, r real, d double precision
);
INSERT INTO edge VALUES
 (1, 't-1', '2026-01-01 00:00+00', 'infinity', '0044-03-15 12:00 BC', 'infinity',
  '10:00:05.000012', '24:00:00', '10:00:00+02', '1.5', 'NaN', 'NaN', 'NaN'),
 (2, 't-1', NULL, '-infinity', '2026-01-01 00:00', '0044-03-15 BC',
  '00:00', '10:00', NULL, '-0.000001', '1.25', 'Infinity', '-0'),
 (3, 't-1', '1999-12-31 23:59:59.999999-05', '2026-03-29 01:30+01', NULL, '10000-01-01',
  NULL, NULL, '23:59:59.5-09:30', '12345678901234567890123456789012345678901234567890', NULL,
  '-Infinity', '5e-324'),
 (4, 't-1', '2026-06-30 12:00+02', NULL, NULL, NULL,
  '23:59:59.999999', NULL, NULL, '2', NULL, '1e-45', '1.7976931348623157e308'),
 (5, 't-2', NULL, NULL, NULL, NULL, NULL, NULL, NULL, '99', NULL, NULL, NULL);
"""
# Columns of the PostgreSQL edge table that must stay text, with the text PostgreSQL wrote.
PG_KEPT_AS_TEXT: Columns = {
    "ts_special": ["infinity", "-infinity", "2026-03-29T00:30:00+00:00", None],
    "ts_bc": ["0044-03-15T12:00:00 BC", "2026-01-01T00:00:00", None, None],
    "d_special": ["infinity", "0044-03-15 BC", "10000-01-01", None],
    "t_24": ["24:00:00", "10:00:00", None, None],
    "t_zone": ["10:00:00+02", None, "23:59:59.5-09:30", None],
    "n_nan": ["NaN", "1.25", None, None],
}


# -- running the documented code -------------------------------------------------------------


@pytest.fixture(scope="module")
def loader() -> dict[str, Any]:
    """``export_loader.py`` built as the page says (pyarrow block, pandas block appended)."""
    return run_block(loader_module_source(), "export_loader")


def load_checked(loader: dict[str, Any], folder: Path) -> tuple[dict[str, pa.Table],
                                                               dict[str, pd.DataFrame], list[str]]:
    """Both documented loaders on one package, with the warnings they emitted."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tables = loader["load_package"](folder)
        frames = loader["load_frames"](folder)
    return tables, frames, sorted({str(w.message) for w in caught})


def export_to(folder: Path, tenant: str = "t-1", **options: Any) -> dict[str, Any]:
    """Run the export and save every file through its link, as a client would."""
    from flows.export_flow import ExportRequest, offboarding_export

    result = offboarding_export(ExportRequest(tenant_id=tenant, link_ttl_seconds=600, **options))
    for path, body in fetch_package(result).items():
        (folder / path).parent.mkdir(parents=True, exist_ok=True)
        (folder / path).write_bytes(body)
    package: dict[str, Any] = json.loads((folder / "datapackage.json").read_bytes())
    return package


# -- reading loaded values back as plain Python ----------------------------------------------


def table_columns(table: pa.Table) -> Columns:
    return {name: table[name].to_pylist() for name in table.column_names}


def frame_columns(frame: pd.DataFrame) -> Columns:
    return {str(name): [_plain(v) for v in frame[name].tolist()] for name in frame.columns}


def _plain(value: Any) -> Any:
    if value is pd.NA:
        return None
    if isinstance(value, pd.Timestamp):
        return value.to_pydatetime()
    return value


# -- the checks ------------------------------------------------------------------------------


def csv_resources(package: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {r["path"]: r for r in package["resources"] if r.get("format") == "csv"}


def value_fields(resource: dict[str, Any]) -> list[dict[str, Any]]:
    """The fields that hold source columns (not the ``__sqlite_type`` companions)."""
    fields = resource["schema"]["fields"]
    return [f for i, f in enumerate(fields)
            if not (i and f["name"].endswith("__sqlite_type") and fields[i - 1]["type"] == "any")]


def filter_column(resource: dict[str, Any]) -> str:
    """The column that selects the tenant's rows, from the resource's ``x-scope``."""
    scope = resource.get("x-scope")
    if scope is None:  # a package from before the scope was recorded
        return "id" if resource["x-source-table"] == "tenants" else "tenant_id"
    for lead in ("the tenants table, by ", "tenant column "):
        if scope.startswith(lead):
            return str(scope.removeprefix(lead))
    pytest.fail(f"{resource['path']}: scope {scope!r}: extend this test to read its source rows")


def check_every_file_loads(package: dict[str, Any], tables: dict[str, pa.Table],
                           frames: dict[str, pd.DataFrame]) -> None:
    resources = csv_resources(package)
    assert set(tables) == set(frames) == set(resources)
    for path, resource in resources.items():
        names = [f["name"] for f in value_fields(resource)]
        assert tables[path].column_names == names, path  # companions dropped, order kept
        assert [str(c) for c in frames[path].columns] == names, path
        assert tables[path].num_rows == len(frames[path]) == resource["rows"], path


def check_against_source(platform: Platform, package: dict[str, Any], loaded: Columns | Any,
                         path: str, skip: frozenset[str] = frozenset()) -> int:
    """Every value of one table equals the source value, read by the database's own driver."""
    resource = csv_resources(package)[path]
    table = resource["x-source-table"]
    fields = [f for f in value_fields(resource) if f["name"] not in skip]
    names = [f["name"] for f in fields]
    truth = source_rows(platform.source_url, table, names, filter_column(resource), "t-1")
    got = list(zip(*(loaded[name] for name in names), strict=True)) if names else []
    if not resource["schema"].get("primaryKey"):  # no key, no defined order
        truth, got = sorted(truth, key=repr), sorted(got, key=repr)
    assert len(got) == len(truth), path
    for want_row, got_row in zip(truth, got, strict=True):
        for field, want, actual in zip(fields, want_row, got_row, strict=True):
            if field.get("x-source-type", "").upper() in ("JSON", "JSONB"):  # JSON stays text
                assert actual is None or type(actual) is str, (path, field["name"], actual)
                actual = None if actual is None else json.loads(actual)
            single = field.get("x-source-type", "").upper() == "REAL" and (
                "x-sqlite-storage-classes" not in field)  # PostgreSQL real
            assert identical(want, actual, single=single), (path, field["name"], want, actual)
    return len(got) * len(fields)


def check_storage_classes(table: pa.Table, text_folder: Path, resource: dict[str, Any]) -> None:
    """A union column's type codes are the companion column's storage classes, row by row."""
    fields = resource["schema"]["fields"]
    for i, field in enumerate(fields):
        if field["type"] != "any" or "x-sqlite-storage-classes" not in field:
            continue
        companion = fields[i + 1]["name"]
        with (text_folder / resource["path"]).open("rb") as f:
            if f.read(3) != b"\xef\xbb\xbf":
                f.seek(0)
            text = pacsv.read_csv(f, convert_options=pacsv.ConvertOptions(
                column_types={companion: pa.string()}, quoted_strings_can_be_null=False,
                strings_can_be_null=True), parse_options=pacsv.ParseOptions(
                newlines_in_values=True,
                delimiter=resource.get("dialect", {}).get("delimiter", ",")))
        column = table[field["name"]].combine_chunks()
        names = [column.type.field(code).name for code in column.type_codes.to_pylist()]
        assert names == [c or "null" for c in text[companion].to_pylist()], field["name"]


def check_index(package: dict[str, Any], folder: Path, loaded: Columns) -> None:
    """documents/index.csv: one row per document of t-1, each pointing at its bytes."""
    resource = csv_resources(package)["documents/index.csv"]
    declared = {f["name"]: f["type"] for f in resource["schema"]["fields"]}
    docs = [d for d in awkward.DOCUMENTS if d[0] == "t-1"]
    rows = [dict(zip(loaded, values, strict=True)) for values in zip(*loaded.values(), strict=True)]
    assert len(rows) == len(docs)
    for row, (_, doc_id, _name, _key, blob) in zip(rows, docs, strict=True):
        assert row["document_id"] == (doc_id if declared["document_id"] == "integer"
                                      else str(doc_id))
        if blob is None:
            assert row["status"] == "missing"
            assert row["zip_part"] is row["zip_path"] is row["bytes"] is row["sha256"] is None
            continue
        assert row["status"] == "ok"
        assert row["bytes"] == len(blob) and type(row["bytes"]) is int
        assert row["sha256"] == hashlib.sha256(blob).hexdigest()
        with zipfile.ZipFile(folder / "documents" / row["zip_part"]) as archive:
            assert archive.read(row["zip_path"]) == blob


def check_package(platform: Platform, package: dict[str, Any], folder: Path,
                  tables: dict[str, pa.Table], frames: dict[str, pd.DataFrame],
                  skip: dict[str, frozenset[str]]) -> None:
    check_every_file_loads(package, tables, frames)
    compared = 0
    for path, resource in csv_resources(package).items():
        if "x-source-table" not in resource:
            continue
        for loaded in (table_columns(tables[path]), frame_columns(frames[path])):
            compared += check_against_source(platform, package, loaded, path,
                                             skip.get(path, frozenset()))
        check_storage_classes(tables[path], folder, resource)
    assert compared > 400  # the awkward tables were really compared, not skipped
    check_index(package, folder, table_columns(tables["documents/index.csv"]))
    check_index(package, folder, frame_columns(frames["documents/index.csv"]))


# -- SQLite ----------------------------------------------------------------------------------


def add_sqlite_extras(platform: Platform, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with sqlite3.connect(platform.source_url.removeprefix("sqlite:///")) as db:
        db.executescript(SQLITE_EXTRA)
        for table, rows in SQLITE_EXTRA_ROWS.items():
            marks = ", ".join("?" * len(rows[0]))
            db.executemany(f"INSERT INTO {table} VALUES ({marks})", rows)
    catalog = tmp_path / "catalog-loaders.toml"
    catalog.write_text(SQLITE_CATALOG)
    monkeypatch.setenv("TENANT_EXPORT_CATALOG", str(catalog))


@pytest.fixture
def usable_loader_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """``export_loader.py`` saved in a folder on ``sys.path``, as the client guide says."""
    folder = tmp_path / "client"
    folder.mkdir()
    (folder / "export_loader.py").write_text(loader_module_source(), encoding="utf-8")
    monkeypatch.syspath_prepend(str(folder))
    monkeypatch.chdir(folder)
    yield folder
    sys.modules.pop("export_loader", None)


def test_sqlite_package_loads_exactly(sqlite_platform: Platform, tmp_path: Path,
                                      monkeypatch: pytest.MonkeyPatch,
                                      loader: dict[str, Any]) -> None:
    add_sqlite_extras(sqlite_platform, tmp_path, monkeypatch)
    folder = tmp_path / "plain"
    package = export_to(folder)
    tables, frames, warned = load_checked(loader, folder)
    assert warned == []  # nothing in a SQLite package needs the text fallback
    check_package(sqlite_platform, package, folder, tables, frames, skip={})

    # the mixed columns really are mixed, and integers past 2**53 stayed integers
    assert pa.types.is_union(tables["data/members.csv"]["balance"].type)
    edge = table_columns(tables["data/edge.csv"])
    assert edge["num"] == [9007199254740993, 2.5, float("inf"), float("-inf"), None, 0]
    assert edge["untyped"] == [b"", "", None, -7, 1.0, "x"]
    assert [type(v) for v in frame_columns(frames["data/edge.csv"])["untyped"]] == [
        bytes, str, type(None), int, float, str]
    # a one-column table: its NULL rows are empty lines and are kept
    solo = (folder / "data" / "solo.csv").read_bytes()
    assert b"\r\n\r\n" in solo
    assert table_columns(tables["data/solo.csv"])["v"].count(None) == 2
    assert frames["data/solo.csv"]["v"].isna().sum() == 2

    # a tenant with no rows: header-only files load, with their types
    empty = tmp_path / "empty"
    empty_package = export_to(empty, tenant="t-empty")
    empty_tables, empty_frames, _ = load_checked(loader, empty)
    check_every_file_loads(empty_package, empty_tables, empty_frames)
    assert {p: t.num_rows for p, t in empty_tables.items() if t.num_rows} == {
        "data/tenants.csv": 1}

    # a damaged file is refused before anything is loaded
    damaged = tmp_path / "damaged"
    shutil.copytree(folder, damaged)
    body = bytearray((damaged / "data" / "members.csv").read_bytes())
    body[-3] ^= 0x01
    (damaged / "data" / "members.csv").write_bytes(bytes(body))
    with pytest.raises(ValueError, match=r"data/members\.csv: size or SHA-256"):
        loader["load_package"](damaged)


@pytest.mark.parametrize("option", ["excel", "excel_semicolon"])
def test_excel_variant_loads_exactly(sqlite_platform: Platform, tmp_path: Path,
                                     loader: dict[str, Any], option: str) -> None:
    """The Excel variants (byte-order mark, formula guard, ';' for the second, all recorded in
    the dialect) give back the same values: the loader strips the BOM, takes the separator
    from the dialect and undoes the guard."""
    package = export_to(tmp_path, **{option: True})
    members = (tmp_path / "data" / "members.csv").read_bytes()
    assert members.startswith(b"\xef\xbb\xbf")
    separator = ";" if option == "excel_semicolon" else ","
    assert csv_resources(package)["data/members.csv"]["dialect"]["delimiter"] == separator
    assert members.split(b"\r\n", 1)[0].count(separator.encode()) > 5
    guarded = b"\"'=1+2\"" in members  # awkward.STRINGS holds "=1+2"
    assert guarded and "x-formula-prefix" in csv_resources(package)["data/members.csv"][
        "dialect"], ("the Excel variant guards formulas but datapackage.json does not record "
                     "it (dialect x-formula-prefix): no reader can give the values back")
    tables, frames, warned = load_checked(loader, tmp_path)
    assert warned == []
    check_package(sqlite_platform, package, tmp_path, tables, frames, skip={})


GUARDED_TEXT = [*awkward.STRINGS, "'=already", "''+twice", "'plain", "'", "\rcr", "-"]


@pytest.mark.parametrize("variant", ["exact", "excel", "excel-semicolon"])
def test_every_dialect_of_the_writer(variant: str, tmp_path: Path,
                                     loader: dict[str, Any]) -> None:
    """The loader on the CSV writer's own output in each dialect it offers, described as the
    manifest describes it: separator, byte-order mark and formula guard are all undone."""
    from exporters.csv_writer import CsvDialect, CsvTableWriter
    from exporters.datapackage import table_schema

    dialect = {"exact": CsvDialect(), "excel": CsvDialect.excel(),
               "excel-semicolon": CsvDialect.excel(semicolon=True)}[variant]
    n = len(GUARDED_TEXT)
    columns: dict[str, tuple[pa.DataType, list[Any]]] = {
        "text": (pa.string(), GUARDED_TEXT),
        "blob": (pa.binary(), ([b"\xfb\xff", b"\xf8", b"", None] * n)[:n]),  # "+/8=", "+A=="
        "int": (pa.int64(), ([-5, None, 2**63 - 1, -(2**63)] * n)[:n]),
        "real": (pa.float64(), ([-0.0, float("-inf"), 5e-324, None, float("nan")] * n)[:n]),
    }
    schema = pa.schema([pa.field(name, kind) for name, (kind, _) in columns.items()])
    path = tmp_path / "t.csv"
    with path.open("wb") as sink:
        writer = CsvTableWriter(sink, schema, dialect=dialect)
        writer.write_batch(pa.record_batch([pa.array(v, k) for k, v in columns.values()],
                                           schema=schema))
        writer.close()
    resource = {"path": "t.csv", "dialect": dialect.to_descriptor(),
                "schema": table_schema(schema, ())}
    loaded = table_columns(loader["load_table"](path, resource))
    for name, (_, values) in columns.items():
        assert all(identical(want, got) for want, got in
                   zip(values, loaded[name], strict=True)), (name, loaded[name])
    if variant != "exact":  # the guard was really there to undo
        assert b"\"'=1+2\"" in path.read_bytes() and b"\"'+/8=\"" in path.read_bytes()


def test_usage_examples(sqlite_platform: Platform, usable_loader_module: Path) -> None:
    """The usage lines of the client guide and of the page, run as written next to a saved
    export_loader.py and a downloaded export."""
    export_to(usable_loader_module / "export")
    (usable_loader_module / "path" / "to").mkdir(parents=True)
    (usable_loader_module / "path" / "to" / "export").symlink_to(usable_loader_module / "export")
    examples = [code_blocks(CLIENT_GUIDE)["example: pandas-usage"],
                code_blocks()["example: pandas-usage"]]
    for usage in examples:
        namespace = run_block(usage, "usage")
        members = namespace["members"]
        assert isinstance(members, pd.DataFrame)
        assert members["name"].isna().sum() == 1 and (members["name"] == "").sum() == 1
        assert {"data/members.csv", "documents/index.csv"} <= set(namespace["frames"])
    namespace = run_block(code_blocks()["example: pyarrow-usage"], "usage")
    assert isinstance(namespace["members"], pa.Table)
    assert namespace["members"]["name"].null_count == 1


def test_generic_readers_merge_null_and_empty(sqlite_platform: Platform, tmp_path: Path) -> None:
    """The limits the page states for frictionless and Python's csv module are real."""
    from frictionless import Package

    package = export_to(tmp_path)
    path = "data/members.csv"
    resource = csv_resources(package)[path]
    rows = Package(str(tmp_path / "datapackage.json")).get_resource(resource["name"]).read_rows()
    by_id = {row["id"]: row for row in rows}
    assert by_id[1]["name"] is None and by_id[2]["name"] is None  # NULL and "" in the source
    assert isinstance(by_id[1]["score"], Decimal)  # a REAL read as a Decimal
    assert isinstance(by_id[2]["avatar"], str)  # base64 left as text

    import csv

    with (tmp_path / path).open(encoding="utf-8", newline="") as f:
        records = {r["id"]: r for r in csv.DictReader(f)}
    assert records["1"]["name"] == records["2"]["name"] == ""


# -- PostgreSQL ------------------------------------------------------------------------------


@pytest.mark.postgres
def test_postgres_package_loads_exactly(postgres_platform: Platform, tmp_path: Path,
                                        loader: dict[str, Any]) -> None:
    import psycopg

    with psycopg.connect(postgres_platform.source_url, autocommit=True) as conn:
        conn.execute(PG_EXTRA)
    package = export_to(tmp_path)
    tables, frames, warned = load_checked(loader, tmp_path)
    # the columns with values Arrow cannot hold, and only those, stayed text
    assert len(warned) == len(PG_KEPT_AS_TEXT), warned
    assert all(w.startswith("data/edge.csv: column '") and " kept as text: " in w for w in warned)
    assert {w.split("'")[1] for w in warned} == set(PG_KEPT_AS_TEXT)
    check_package(postgres_platform, package, tmp_path, tables, frames,
                  skip={"data/edge.csv": frozenset([*PG_KEPT_AS_TEXT, "n_free"])})

    members = tables["data/members.csv"]
    assert members["balance"].type == pa.decimal128(30, 10)  # numeric(40, 10), digit for digit
    assert members["ratio"].type == pa.float32()  # real: the stored 32-bit value
    assert members["joined"].type == pa.timestamp("us", "UTC")
    assert members["local_ts"].type == pa.timestamp("us")

    edge, edge_frame = tables["data/edge.csv"], frame_columns(frames["data/edge.csv"])
    for name, text in PG_KEPT_AS_TEXT.items():
        assert edge[name].type == pa.string(), name
        assert edge[name].to_pylist() == edge_frame[name] == text, name
    assert edge["ts_plain"].type == pa.timestamp("us", "UTC")
    assert edge["t_plain"].type == pa.time64("us")
    assert edge["r"].type == pa.float32() and edge["d"].type == pa.float64()
    # unconstrained numeric: one scale for the column (the largest), every value exact
    assert edge["n_free"].type == pa.decimal256(56, 6)
    truth = [row[1] for row in source_rows(postgres_platform.source_url, "edge",
                                           ["id", "n_free"], "tenant_id", "t-1")]
    for loaded in (edge["n_free"].to_pylist(), edge_frame["n_free"]):
        assert loaded == truth
        assert all(type(v) is Decimal and v.as_tuple().exponent == -6 for v in loaded)


# -- the pandas pitfalls the page shows ------------------------------------------------------


def test_pandas_defaults_example_holds() -> None:
    """The page's demonstration of what ``pd.read_csv`` gets wrong still runs as written."""
    run_block(code_blocks()["example: pandas-defaults"], "pandas defaults")


def test_text_mode_file_changes_line_ends(tmp_path: Path) -> None:
    """The page says: a path or a binary file keeps CR and CRLF in values, text mode does not."""
    path = tmp_path / "t.csv"
    path.write_bytes(b'"id","text"\r\n1,"a\r\nb\rc"\r\n')
    assert pd.read_csv(path)["text"][0] == "a\r\nb\rc"
    with path.open(encoding="utf-8") as f:
        assert pd.read_csv(f)["text"][0] == "a\nb\nc"


def test_pyarrow_block_stands_alone() -> None:
    """The pyarrow loader needs neither pandas nor the pandas block."""
    blocks = code_blocks()
    assert "import pandas" not in blocks["loader: pyarrow"]
    namespace = run_block(blocks["loader: pyarrow"], "pyarrow only")
    assert callable(namespace["load_package"]) and "pd" not in namespace
    assert "from __future__" not in blocks["loader: pandas"]  # appended, it must stay valid
