"""Round trip on real components: every CSV value parses back to exactly the source value."""

from __future__ import annotations

import hashlib
import json
import struct
import unicodedata
from typing import Any

import pytest

from tests import awkward
from tests.conftest import Platform
from tests.helpers import (
    decode,
    decode_mixed,
    fetch_package,
    read_table,
    same,
    source_rows,
    zip_members,
)


def run_export(tenant: str, ttl: int = 3600, **options: Any) -> dict[str, Any]:
    from flows.export_flow import ExportRequest, offboarding_export

    return offboarding_export(ExportRequest(tenant_id=tenant, link_ttl_seconds=ttl, **options))


def check_tables(platform: Platform, files: dict[str, bytes], backend: str) -> dict[str, Any]:
    package = json.loads(files["datapackage.json"])
    tables = {r["x-source-table"]: r for r in package["resources"] if "x-source-table" in r}
    expected_tables = {"tenants", "members", "select", "documents"}
    if backend == "sqlite":
        expected_tables.add("loose")
    assert set(tables) == expected_tables  # audit_global (no tenant column) never leaves
    for table, resource in tables.items():
        header, rows = read_table(files, resource)
        fields = resource["schema"]["fields"]
        assert header == [f["name"] for f in fields]
        assert resource["rows"] == len(rows)
        value_fields = [f for f in fields if not f["name"].endswith("__sqlite_type")]
        filter_column = "id" if table == "tenants" else "tenant_id"
        truth = source_rows(platform.source_url, table, [f["name"] for f in value_fields],
                            filter_column, "t-1")
        assert len(rows) == len(truth), table
        for got, want in zip(rows, truth, strict=True):
            cells = dict(zip(header, got, strict=True))
            for field, expected in zip(value_fields, want, strict=True):
                name = field["name"]
                if field["type"] == "any" and backend == "sqlite":
                    actual = decode_mixed(cells[name], cells[f"{name}__sqlite_type"])
                else:
                    if name == "ratio" and backend == "postgresql":
                        field = {**field, "x-pg-real": True}
                    actual = decode(field, cells[name], backend)
                if isinstance(expected, float) and isinstance(actual, float) and (
                        name == "ratio" and backend == "postgresql"):
                    assert struct.pack("<f", expected) == struct.pack("<f", actual), name
                    continue
                assert same(expected, actual, field), (table, name, expected, actual)
        assert all("t-2" not in (c or "") and "t2-" not in (c or "") for r in rows for c in r)
    assert "password_hash" not in {f["name"] for f in tables["members"]["schema"]["fields"]}
    return package


def check_documents(platform: Platform, files: dict[str, bytes]) -> None:
    header, rows = read_table(files, {"path": "documents/index.csv"})
    assert header[:6] == ["document_id", "zip_part", "zip_path", "bytes", "sha256", "status"]
    assert header[6:] == ["filename", "uploaded_at"]  # added after the contract's six
    index = {r[0]: dict(zip(header, r, strict=True)) for r in rows}
    t1_docs = [d for d in awkward.DOCUMENTS if d[0] == "t-1"]
    assert set(index) == {str(d[1]) for d in t1_docs}
    for doc in t1_docs:  # the original filename, exactly as the platform holds it
        assert index[str(doc[1])]["filename"] == doc[2]
    members: dict[tuple[str, str], bytes] = {}
    for part in sorted({r["zip_part"] for r in index.values() if r["zip_part"]}):
        for name, content in zip_members(files, f"documents/{part}").items():
            members[(part, name)] = content
    names = [name for _, name in members]
    assert len({n.casefold() for n in names}) == len(names)
    for name in names:
        assert "/" not in name and "\\" not in name and ".." not in name
        assert name == unicodedata.normalize("NFC", name)
        assert all(unicodedata.category(ch) != "Cc" for ch in name)
    for _, doc_id, _filename, _key, blob in t1_docs:
        row = index[str(doc_id)]
        if blob is None:
            assert row["status"] == "missing" and row["zip_part"] is None
            continue
        assert row["status"] == "ok"
        content = members.pop((row["zip_part"], row["zip_path"]))
        assert content == blob
        assert row["sha256"] == hashlib.sha256(blob).hexdigest()
        assert int(row["bytes"]) == len(blob)
    assert members == {}  # nothing in the ZIP that the index does not list


def test_sqlite_round_trip(sqlite_platform: Platform) -> None:
    result = run_export("t-1")
    files = fetch_package(result)
    package = check_tables(sqlite_platform, files, "sqlite")
    check_documents(sqlite_platform, files)
    loose = next(r for r in package["resources"] if r.get("x-source-table") == "loose")
    mixed = {f["name"]: f for f in loose["schema"]["fields"]}
    assert mixed["mixed"]["type"] == "any"
    assert set(mixed["mixed"]["x-sqlite-storage-classes"]) == {"integer", "real", "text"}
    assert "anything__sqlite_type" in mixed
    members = next(r for r in package["resources"] if r.get("x-source-table") == "members")
    fields = {f["name"]: f for f in members["schema"]["fields"]}
    assert fields["balance"]["type"] == "number"  # NUMERIC affinity: integers and reals
    assert set(fields["balance"]["x-sqlite-storage-classes"]) == {"integer", "real"}
    assert "balance__sqlite_type" not in fields


@pytest.mark.postgres
def test_postgres_round_trip(postgres_platform: Platform) -> None:
    result = run_export("t-1")
    files = fetch_package(result)
    package = check_tables(postgres_platform, files, "postgresql")
    check_documents(postgres_platform, files)
    members = next(r for r in package["resources"] if r.get("x-source-table") == "members")
    types = {f["name"]: f["type"] for f in members["schema"]["fields"]}
    assert types["joined"] == "datetime" and types["balance"] == "number"
    assert types["active"] == "boolean" and types["big"] == "integer"


def test_zip_parts_split_by_size(sqlite_platform: Platform, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TENANT_EXPORT_ZIP_PART_BYTES", "1")  # every document closes its part
    result = run_export("t-1")
    parts = [f["path"] for f in result["files"] if f["path"].startswith("documents/")
             and f["path"].endswith(".zip")]
    present = [d for d in awkward.DOCUMENTS if d[0] == "t-1" and d[4] is not None]
    assert parts == [f"documents/documents-{i:04d}.zip" for i in range(1, len(present) + 1)]
    files = fetch_package(result)
    check_documents(sqlite_platform, files)


def test_manifest_describes_every_file(sqlite_platform: Platform) -> None:
    result = run_export("t-1")
    files = fetch_package(result)
    package = json.loads(files["datapackage.json"])
    described = {r["path"]: r for r in package["resources"]}
    archive = f"export-t-1-{result['export_id']}.zip"
    assert [f["path"] for f in result["files"]][:2] == [archive, "datapackage.json"]
    assert package["x-archive"] == archive  # named, not a resource: it holds the manifest
    assert set(described) | {"datapackage.json", archive} == set(files)
    for path, resource in described.items():
        assert resource["bytes"] == len(files[path])
        assert resource["hash"] == "sha256:" + hashlib.sha256(files[path]).hexdigest()
    assert package["x-tenant-id"] == "t-1"
    kinds = {path: (r["type"], r.get("format")) for path, r in described.items()}
    assert kinds["data/members.csv"] == ("table", "csv")
    assert kinds["data/members.xlsx"] == ("file", "xlsx")
    assert kinds["documents/index.csv"] == ("table", "csv")
    assert kinds["documents/documents-0001.zip"] == ("file", "zip")
    assert kinds["README.html"] == ("file", "html") and kinds["README.txt"] == ("file", "txt")
    assert {p for p in described if p.startswith("data/")} == {
        f"data/{t}.{ext}" for t in ("tenants", "members", "select", "documents", "loose")
        for ext in ("csv", "xlsx")}
    # the bucket holds exactly the listed files and the archive's record: nothing staged or
    # temporary is left behind
    prefix = f"exports/t-1/{result['export_id']}/"
    assert sorted(sqlite_platform.export_keys()) == sorted(
        [prefix + p for p in files] + [prefix + "x-archive.json"])


def test_index_relates_to_the_documents_table(sqlite_platform: Platform) -> None:
    """index.csv: typed like documents.id, declared as referring to it; every row's id is a
    row of the documents table, and the dialect of every CSV is recorded."""
    files = fetch_package(run_export("t-1"))
    package = json.loads(files["datapackage.json"])
    by_path = {r["path"]: r for r in package["resources"]}
    index, documents = by_path["documents/index.csv"], by_path["data/documents.csv"]
    fields = {f["name"]: f for f in index["schema"]["fields"]}
    assert fields["document_id"]["type"] == "integer" == next(
        f["type"] for f in documents["schema"]["fields"] if f["name"] == "id")
    assert fields["uploaded_at"]["type"] == "datetime"
    assert index["schema"]["foreignKeys"] == [
        {"fields": ["document_id"], "reference": {"resource": documents["name"],
                                                  "fields": ["id"]}}]
    _, index_rows = read_table(files, index)
    _, document_rows = read_table(files, documents)
    assert {r[0] for r in index_rows} <= {r[0] for r in document_rows}
    for resource in package["resources"]:
        if resource["type"] == "table":
            assert resource["dialect"]["delimiter"] == ","
            assert resource["dialect"]["x-bom"] is False
            assert "x-formula-prefix" not in resource["dialect"]
