"""exporters.archive: the whole package as one streamed ZIP. A sample package built with the
package's own writers is archived, unpacked, compared byte for byte, and validated with
frictionless; each file is read once, in order, while the archive streams."""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from frictionless import validate

from exporters.archive import ArchiveEntry, ArchiveError, check_path, write_archive
from exporters.csv_writer import DEFAULT_DIALECT, CsvDialect, CsvTableWriter
from exporters.documents import DocumentInput, IndexWriter, write_document_parts
from exporters.fieldtypes import field_type, is_binary
from exporters.guide import GuideFile, PackageGuide, render_guide
from exporters.xlsx_writer import XlsxTableWriter
from kernel.arrowmeta import META_SCHEMA_TYPE, META_STORAGE_CLASSES, META_TYPE_OF
from tests import awkward

CREATED = datetime(2026, 11, 26, 10, 15, 8, tzinfo=UTC)
CHUNK = 64 * 1024

MEMBERS = pa.schema([
    pa.field("id", pa.int64()),
    pa.field("name", pa.string()),
    pa.field("note", pa.string()),
    pa.field("balance", pa.string(), metadata={META_SCHEMA_TYPE: b"number"}),
    pa.field("score", pa.float64()),
    pa.field("active", pa.bool_()),
    pa.field("joined", pa.timestamp("us", tz="UTC")),
    pa.field("born", pa.date32()),
    pa.field("avatar", pa.binary()),
    pa.field("anything", pa.string(), metadata={META_SCHEMA_TYPE: b"any",
                                                META_STORAGE_CLASSES: b"integer,real,text"}),
    pa.field("anything__sqlite_type", pa.string(), metadata={META_TYPE_OF: b"anything"}),
])
DOCUMENTS = pa.schema([pa.field("id", pa.int64()), pa.field("filename", pa.string()),
                       pa.field("uploaded_at", pa.timestamp("us", tz="UTC"))])


def members_batch() -> pa.RecordBatch:
    n = len(awkward.STRINGS)
    ids = list(range(1, n + 1))
    anything = ["hello", "42", "1.5", None, "line\nbreak", "AAE="]
    kinds = ["text", "integer", "real", None, "text", "blob"]
    columns = [
        ids, awkward.STRINGS, list(reversed(awkward.STRINGS)),
        [awkward.NUMERICS[i % len(awkward.NUMERICS)] for i in range(n)],
        [[0.1, None, 3.25, -1e10][i % 4] for i in range(n)],
        [awkward.BOOLS[i % 3] for i in range(n)],
        [awkward.TIMESTAMPS[i % len(awkward.TIMESTAMPS)] for i in range(n)],
        [awkward.DATES[i % 3] for i in range(n)],
        [awkward.BLOBS[i % 4] for i in range(n)],
        [anything[i % 6] for i in range(n)], [kinds[i % 6] for i in range(n)],
    ]
    return pa.record_batch([pa.array(c, type=f.type) for c, f in zip(columns, MEMBERS,
                                                                      strict=True)],
                           schema=MEMBERS)


def schema_of(schema: pa.Schema, primary_key: list[str]) -> dict[str, Any]:
    """The Table Schema datapackage.json records (types from exporters.fieldtypes)."""
    fields = []
    for f in schema:
        spec: dict[str, Any] = {"name": f.name, "type": field_type(f)}
        if is_binary(f.type):
            spec["format"] = "binary"
        fields.append(spec)
    return {"fields": fields, "missingValues": [""], "primaryKey": primary_key}


def build_package(root: Path, dialect: CsvDialect = DEFAULT_DIALECT) -> list[str]:
    """A small package as the export writes it; returns its paths, manifest last."""
    (root / "data").mkdir(parents=True)
    (root / "documents").mkdir()
    resources: list[dict[str, Any]] = []

    def record(path: str, **extra: Any) -> None:
        data = (root / path).read_bytes()
        resources.append({"name": path.replace("/", "-").lower(), "path": path,
                          "bytes": len(data), "hash": "sha256:" + hashlib.sha256(data).hexdigest(),
                          **extra})

    def csv_resource(path: str, schema: dict[str, Any], rows: int) -> None:
        record(path, type="table", format="csv", mediatype="text/csv", encoding="utf-8",
               dialect=dialect.to_descriptor(), schema=schema, rows=rows)

    batch = members_batch()
    with (root / "data/members.csv").open("wb") as sink:
        writer = CsvTableWriter(sink, MEMBERS, dialect=dialect)
        writer.write_batch(batch)
        writer.close()
    csv_resource("data/members.csv", schema_of(MEMBERS, ["id"]), batch.num_rows)
    with (root / "data/members.xlsx").open("wb") as sink:
        book = XlsxTableWriter(sink, MEMBERS, sheet_name="members", created=CREATED)
        book.write_batch(batch)
        book.close()
    record("data/members.xlsx", type="file", format="xlsx",
           mediatype="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet")

    docs = [(1, "report.pdf", b"%PDF-1.7 " * 5000, CREATED - timedelta(days=400)),
            (2, "../../etc/passwd", b"root:x:0:0\n", None),
            (3, "missing.pdf", None, CREATED - timedelta(days=3))]
    documents = pa.record_batch([pa.array([d[0] for d in docs]), pa.array([d[1] for d in docs]),
                                 pa.array([d[3] for d in docs], pa.timestamp("us", tz="UTC"))],
                                schema=DOCUMENTS)
    with (root / "data/documents.csv").open("wb") as sink:
        writer = CsvTableWriter(sink, DOCUMENTS, dialect=dialect)
        writer.write_batch(documents)
        writer.close()
    csv_resource("data/documents.csv", schema_of(DOCUMENTS, ["id"]), len(docs))

    def opener(blob: bytes | None) -> Any:
        return lambda: None if blob is None else iter([blob])

    inputs = [DocumentInput(str(i), name, opener(blob), document_key=i, uploaded_at=when)
              for i, name, blob, when in docs]
    parts: list[str] = []

    def open_part(name: str) -> Any:
        parts.append(f"documents/{name}")
        return (root / "documents" / name).open("wb")

    with (root / "documents/index.csv").open("wb") as sink:
        index = IndexWriter(sink, id_field=DOCUMENTS.field("id"), dialect=dialect)
        write_document_parts(inputs, open_part, index, part_limit=10**9, modified_at=CREATED)
        index.close()
    index_schema = schema_of(index.schema, ["document_id"])
    index_schema["foreignKeys"] = [{"fields": ["document_id"], "reference": {
        "resource": "data-documents.csv", "fields": ["id"]}}]
    csv_resource("documents/index.csv", index_schema, index.rows)
    for part in parts:
        record(part, type="file", format="zip", mediatype="application/zip")

    listed = tuple(GuideFile(r["path"], r["bytes"], r["hash"][7:], kind) for r, kind in
                   zip(resources, ["table", "workbook", "table", "index", "documents"],
                       strict=True))
    guide = render_guide(PackageGuide(
        tenant_id="t-1", tenant_name="Tenant One", export_id="20261126T101508Z-0a1b2c3d",
        created_at=CREATED, links_expire_at=CREATED + timedelta(days=7), files=listed,
        dialect=dialect, language="fr"))
    (root / "README.html").write_bytes(guide.html)
    (root / "README.txt").write_bytes(guide.text)
    record("README.html", type="file", format="html", mediatype="text/html")
    record("README.txt", type="file", format="txt", mediatype="text/plain")
    descriptor = {"$schema": "https://datapackage.org/profiles/2.0/datapackage.json",
                  "name": "tenant-t-1-export", "created": CREATED.isoformat(),
                  "resources": resources}
    (root / "datapackage.json").write_text(json.dumps(descriptor, indent=2, ensure_ascii=False))
    return [r["path"] for r in resources] + ["datapackage.json"]


class Reads:
    """Chunk iterators over the package's files that log every read (the flow's read-back)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.log: list[str] = []

    def chunks(self, path: str) -> Iterator[bytes]:
        with (self.root / path).open("rb") as source:
            while block := source.read(CHUNK):
                self.log.append(path)
                yield block
        self.log.append(f"end {path}")

    def entries(self, paths: list[str]) -> Iterator[ArchiveEntry]:
        for path in paths:
            self.log.append(f"next {path}")
            size = (self.root / path).stat().st_size
            yield ArchiveEntry(path, size, CREATED, self.chunks(path))


def archive(root: Path, paths: list[str], name: str = "export") -> tuple[bytes, Reads]:
    reads, sink = Reads(root), io.BytesIO()
    summary = write_archive(reads.entries(paths), sink, root=name)
    assert summary.entries == len(paths)
    assert summary.archive_bytes == len(sink.getvalue())
    assert summary.content_bytes == sum((root / p).stat().st_size for p in paths)
    return sink.getvalue(), reads


def unpack(blob: bytes, into: Path) -> None:
    with zipfile.ZipFile(io.BytesIO(blob)) as zipped:
        assert zipped.testzip() is None
        zipped.extractall(into)


@pytest.mark.parametrize("dialect", [DEFAULT_DIALECT, CsvDialect.excel(semicolon=True)],
                         ids=["exact", "excel"])
def test_archive_unpacks_to_the_same_bytes_and_validates(tmp_path: Path,
                                                         dialect: CsvDialect) -> None:
    package = tmp_path / "package"
    paths = build_package(package, dialect)
    blob, _ = archive(package, paths)
    unpack(blob, tmp_path / "out")
    unpacked = tmp_path / "out" / "export"
    found = sorted(str(p.relative_to(unpacked)) for p in unpacked.rglob("*") if p.is_file())
    assert found == sorted(paths)
    for path in paths:
        assert (unpacked / path).read_bytes() == (package / path).read_bytes(), path
    report = validate(str(unpacked / "datapackage.json"))
    assert report.valid, report.flatten(["resourcePath", "rowNumber", "fieldName", "type",
                                         "note"])
    assert report.stats["tasks"] == len(paths) - 1


def test_validation_notices_a_damaged_file(tmp_path: Path) -> None:
    package = tmp_path / "package"
    paths = build_package(package)
    blob, _ = archive(package, paths)
    unpack(blob, tmp_path / "out")
    damaged = tmp_path / "out" / "export" / "data" / "members.csv"
    data = bytearray(damaged.read_bytes())
    data[-3] ^= 0x01
    damaged.write_bytes(bytes(data))
    report = validate(str(tmp_path / "out" / "export" / "datapackage.json"))
    assert not report.valid
    assert "hash-count" in {e[0] for e in report.flatten(["type"])}


def test_each_file_is_read_once_in_order_while_the_archive_streams(tmp_path: Path) -> None:
    package = tmp_path / "package"
    paths = build_package(package)
    _, reads = archive(package, paths)
    expected: list[str] = []
    for path in paths:  # the next file is asked for only once the previous one is consumed
        expected.append(f"next {path}")
        blocks = -(-(package / path).stat().st_size // CHUNK)
        expected += [path] * blocks
        expected.append(f"end {path}")
    assert reads.log == expected


def test_text_is_deflated_and_compressed_files_are_stored(tmp_path: Path) -> None:
    package = tmp_path / "package"
    paths = build_package(package)
    blob, _ = archive(package, paths, name="")
    with zipfile.ZipFile(io.BytesIO(blob)) as zipped:
        infos = {i.filename: i for i in zipped.infolist()}
    assert sorted(infos) == sorted(paths)  # no root folder when none is asked for
    assert infos["documents/index.csv"].compress_size < infos["documents/index.csv"].file_size
    assert infos["README.html"].compress_size < infos["README.html"].file_size / 2
    for stored in ("data/members.xlsx", "documents/documents-0001.zip"):
        assert infos[stored].compress_size >= infos[stored].file_size
    assert all(i.date_time == (2026, 11, 26, 10, 15, 8) for i in infos.values())


def test_an_entry_that_does_not_deliver_its_size_is_refused() -> None:
    for data, size in ((b"abc", 4), (b"abcde", 4)):
        entry = ArchiveEntry("data/t.csv", size, CREATED, iter([data]))
        with pytest.raises(ArchiveError, match=r"data/t\.csv"):
            write_archive([entry], io.BytesIO())


@pytest.mark.parametrize("path", ["../x", "/abs", "a\\b", "C:/x", "", "a//b", "a/./b",
                                  "x/..", "ctl\x07", "dir/"])
def test_unsafe_paths_are_refused(path: str) -> None:
    with pytest.raises(ArchiveError, match="unsafe"):
        check_path(path)
    with pytest.raises(ArchiveError, match="unsafe"):
        write_archive([ArchiveEntry(path, 0, CREATED, iter(()))], io.BytesIO())


def test_duplicate_paths_are_refused_ignoring_case() -> None:
    entries = [ArchiveEntry("data/a.csv", 0, CREATED, iter(())),
               ArchiveEntry("DATA/A.csv", 0, CREATED, iter(()))]
    with pytest.raises(ArchiveError, match="duplicate"):
        write_archive(entries, io.BytesIO())


def test_unsafe_root_is_refused() -> None:
    with pytest.raises(ArchiveError, match="unsafe"):
        write_archive([], io.BytesIO(), root="../up")


def test_a_failing_source_propagates_its_error() -> None:
    def broken() -> Iterator[bytes]:
        yield b"first"
        raise ConnectionError("read-back failed")

    with pytest.raises(ConnectionError, match="read-back"):
        write_archive([ArchiveEntry("data/t.csv", 10, CREATED, broken())], io.BytesIO())
