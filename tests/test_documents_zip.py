"""exporters.documents: documents streamed into ZIP parts plus index.csv, all over BytesIO."""

from __future__ import annotations

import hashlib
import io
import random
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from typing import IO

import pyarrow as pa
import pytest

from exporters.csv_writer import UTF8_BOM, CsvDialect
from exporters.documents import (
    INDEX_COLUMNS,
    INDEX_FLUSH_ROWS,
    ZIP_TIME_MAX,
    ZIP_TIME_MIN,
    DocumentInput,
    IndexWriter,
    PartsSummary,
    entry_time,
    write_document_parts,
)
from exporters.fieldtypes import field_type
from tests.csvparse import parse
from tests.csvquoting import check_csv

MODIFIED = datetime(2024, 3, 4, 5, 6, 8, tzinfo=UTC)
BIG = 10**12
HEADER = list(INDEX_COLUMNS)


@dataclass
class Parts:
    """``open_part``: a BytesIO per part, kept only when its block completes."""

    stored: dict[str, bytes] = field(default_factory=dict)
    opened: list[str] = field(default_factory=list)
    failed: dict[str, BaseException] = field(default_factory=dict)

    @contextmanager
    def open_part(self, name: str) -> Iterator[IO[bytes]]:
        assert name not in self.opened, f"part {name} opened twice"
        self.opened.append(name)
        sink = io.BytesIO()
        try:
            yield sink
        except BaseException as exc:
            self.failed[name] = exc
            raise
        self.stored[name] = sink.getvalue()


@dataclass
class Result:
    parts: Parts
    index: list[list[str | None]]
    summary: PartsSummary


def doc(doc_id: str, filename: str, data: bytes | None, chunk: int = 65536) -> DocumentInput:
    def open_() -> Iterator[bytes] | None:
        if data is None:
            return None
        return iter([data[i:i + chunk] for i in range(0, len(data), chunk)])
    return DocumentInput(document_id=doc_id, filename=filename, open=open_)


def run(docs: list[DocumentInput], part_limit: int = BIG) -> Result:
    parts, out = Parts(), io.BytesIO()
    index = IndexWriter(out)
    summary = write_document_parts(docs, parts.open_part, index, part_limit=part_limit,
                                   modified_at=MODIFIED)
    index.close()
    assert not out.closed
    rows = parse(out.getvalue().decode("utf-8"))
    assert rows[0] == HEADER
    assert index.rows == len(rows) - 1
    return Result(parts, rows[1:], summary)


def unzip(blob: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(blob)) as archive:
        assert archive.testzip() is None
        return {info.filename: archive.read(info) for info in archive.infolist()}


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_documents_are_byte_identical_and_indexed() -> None:
    a, b = b"%PDF-1.7 hello", bytes(range(256)) * 10
    result = run([doc("1", "a.pdf", a, chunk=3), doc("2", "photo.jpg", b)])
    assert result.parts.stored.keys() == {"documents-0001.zip"}
    assert result.summary.parts == ["documents-0001.zip"]
    assert unzip(result.parts.stored["documents-0001.zip"]) == {"a.pdf": a, "photo.jpg": b}
    assert result.index == [
        ["1", "documents-0001.zip", "a.pdf", str(len(a)), sha(a), "ok", "a.pdf", None],
        ["2", "documents-0001.zip", "photo.jpg", str(len(b)), sha(b), "ok", "photo.jpg", None],
    ]
    assert (result.summary.documents_ok, result.summary.documents_missing) == (2, 0)
    assert result.summary.document_bytes == len(a) + len(b)


def test_entries_carry_modified_at() -> None:
    result = run([doc("1", "a.txt", b"x")])
    with zipfile.ZipFile(io.BytesIO(result.parts.stored["documents-0001.zip"])) as archive:
        assert archive.getinfo("a.txt").date_time == (2024, 3, 4, 5, 6, 8)


def test_missing_document_is_indexed_not_zipped() -> None:
    result = run([doc("1", "a.txt", b"a"), doc("2", "gone.pdf", None), doc("3", "c.txt", b"c")])
    assert unzip(result.parts.stored["documents-0001.zip"]) == {"a.txt": b"a", "c.txt": b"c"}
    assert result.index[1] == ["2", None, None, None, None, "missing", "gone.pdf", None]
    assert [r[0] for r in result.index] == ["1", "2", "3"]
    assert (result.summary.documents_ok, result.summary.documents_missing) == (2, 1)


def test_only_missing_documents_make_no_part() -> None:
    result = run([doc("1", "a", None), doc("2", "b", None)])
    assert result.parts.opened == []
    assert result.summary.parts == []
    assert [r[5] for r in result.index] == ["missing", "missing"]


def test_zero_documents_give_header_only_index_and_no_part() -> None:
    result = run([])
    assert result.parts.opened == []
    assert result.index == []
    assert result.summary == PartsSummary(parts=[])


def test_part_limit_one_gives_one_part_per_present_document() -> None:
    docs = [doc("1", "a.txt", b"aa"), doc("2", "gone", None), doc("3", "b.txt", b"bb"),
            doc("4", "c.txt", b""), doc("5", "gone2", None)]
    result = run(docs, part_limit=1)
    expected = ["documents-0001.zip", "documents-0002.zip", "documents-0003.zip"]
    assert result.summary.parts == expected
    assert result.parts.opened == expected
    assert unzip(result.parts.stored[expected[0]]) == {"a.txt": b"aa"}
    assert unzip(result.parts.stored[expected[1]]) == {"b.txt": b"bb"}
    assert unzip(result.parts.stored[expected[2]]) == {"c.txt": b""}
    assert [(r[0], r[1], r[5]) for r in result.index] == [
        ("1", "documents-0001.zip", "ok"), ("2", None, "missing"),
        ("3", "documents-0002.zip", "ok"), ("4", "documents-0003.zip", "ok"),
        ("5", None, "missing"),
    ]


def test_parts_split_by_size_without_splitting_documents() -> None:
    rng = random.Random(7)
    blobs = [rng.randbytes(100_000) for _ in range(5)]  # incompressible, > stream_zip's 64 KiB
    result = run([doc(str(i), f"{i}.bin", b) for i, b in enumerate(blobs)], part_limit=150_000)
    assert result.summary.parts == [f"documents-{n:04d}.zip" for n in (1, 2, 3)]
    seen: dict[str, bytes] = {}
    for number, name in enumerate(result.summary.parts):
        members = unzip(result.parts.stored[name])
        assert len(members) == (2 if number < 2 else 1)
        if number < 2:
            assert len(result.parts.stored[name]) >= 150_000
        seen.update(members)
    assert seen == {f"{i}.bin": b for i, b in enumerate(blobs)}
    for row in result.index:
        assert row[1] in result.summary.parts
        assert row[2] in unzip(result.parts.stored[str(row[1])])


def test_part_is_closed_after_the_document_that_reaches_the_limit() -> None:
    rng = random.Random(3)
    blobs = [rng.randbytes(40_000) for _ in range(3)]
    result = run([doc(str(i), f"{i}.bin", b) for i, b in enumerate(blobs)], part_limit=30_000)
    assert len(result.summary.parts) == 3
    for name in result.summary.parts:
        assert len(unzip(result.parts.stored[name])) == 1


def test_large_part_limit_gives_one_part() -> None:
    docs = [doc(str(i), f"f{i}.txt", f"doc {i}".encode()) for i in range(50)]
    result = run(docs, part_limit=BIG)
    assert result.summary.parts == ["documents-0001.zip"]
    assert len(unzip(result.parts.stored["documents-0001.zip"])) == 50


def test_zero_byte_documents() -> None:
    result = run([doc("1", "empty.txt", b""), DocumentInput("2", "e.bin", lambda: iter(()))])
    assert unzip(result.parts.stored["documents-0001.zip"]) == {"empty.txt": b"", "e.bin": b""}
    assert result.index == [
        ["1", "documents-0001.zip", "empty.txt", "0", sha(b""), "ok", "empty.txt", None],
        ["2", "documents-0001.zip", "e.bin", "0", sha(b""), "ok", "e.bin", None]]


def test_duplicate_and_hostile_filenames_get_unique_safe_paths() -> None:
    names = ["report.pdf", "report.pdf", "REPORT.PDF", "../../etc/passwd", "/abs/x",
             "C:\\win\\x", "", "e\u0301.txt", "\u00e9.txt", "CON"]
    docs = [doc(str(i), n, f"{i}".encode()) for i, n in enumerate(names)]
    result = run(docs)
    paths = [str(r[2]) for r in result.index]
    assert paths[:3] == ["report.pdf", "report (2).pdf", "REPORT (3).PDF"]
    assert paths[6] == "document-6"
    assert paths[9] == "_CON"
    assert len({p.casefold() for p in paths}) == len(paths)
    for path in paths:
        assert "/" not in path
        assert "\\" not in path
        assert ".." not in path
    members = unzip(result.parts.stored["documents-0001.zip"])
    assert sorted(members) == sorted(paths)
    assert all(members[str(r[2])] == str(r[0]).encode() for r in result.index)


def test_fallback_name_from_hostile_document_id_is_safe() -> None:
    result = run([doc("../../x", "", b"data")])
    path = str(result.index[0][2])
    assert "/" not in path
    assert ".." not in path


def test_exception_in_chunk_iterator_propagates_and_part_is_discarded() -> None:
    def broken() -> Iterator[bytes]:
        yield b"first chunk"
        raise ConnectionError("blob read failed mid-stream")

    docs = [doc("1", "ok.txt", b"fine"), DocumentInput("2", "bad.bin", broken),
            doc("3", "never.txt", b"x")]
    parts, out = Parts(), io.BytesIO()
    index = IndexWriter(out)
    with pytest.raises(ConnectionError, match="mid-stream"):
        write_document_parts(docs, parts.open_part, index, part_limit=1, modified_at=MODIFIED)
    index.close()
    assert list(parts.stored) == ["documents-0001.zip"]
    assert isinstance(parts.failed.get("documents-0002.zip"), ConnectionError)
    rows = parse(out.getvalue().decode())
    assert [r[0] for r in rows[1:]] == ["1"]  # the failed document has no row


def test_exception_in_first_part_stores_nothing() -> None:
    def broken() -> Iterator[bytes]:
        raise OSError("gone")
        yield b""  # pragma: no cover

    parts, out = Parts(), io.BytesIO()
    with pytest.raises(OSError, match="gone"):
        write_document_parts([DocumentInput("1", "a", broken)], parts.open_part,
                             IndexWriter(out), part_limit=BIG, modified_at=MODIFIED)
    assert parts.stored == {}
    assert list(parts.failed) == ["documents-0001.zip"]


def test_member_over_one_megabyte_is_readable_by_zipfile() -> None:
    rng = random.Random(42)
    big = rng.randbytes(1_500_000) + b"\x00" * 700_000
    result = run([doc("1", "big.bin", big, chunk=100_000), doc("2", "small.txt", b"s")])
    blob = result.parts.stored["documents-0001.zip"]
    assert unzip(blob) == {"big.bin": big, "small.txt": b"s"}
    with zipfile.ZipFile(io.BytesIO(blob)) as archive:
        info = archive.getinfo("big.bin")
        assert info.file_size == len(big)
        assert info.compress_type == zipfile.ZIP_DEFLATED
        with archive.open(info) as stream:
            assert hashlib.sha256(stream.read()).hexdigest() == sha(big)
    assert result.index[0][3:6] == [str(len(big)), sha(big), "ok"]
    assert result.summary.document_bytes == len(big) + 1


def test_index_quotes_awkward_document_ids() -> None:
    result = run([doc('a,"b"\nc', "x.txt", b"1"), doc("gone,1", "y", None)])
    assert [r[0] for r in result.index] == ['a,"b"\nc', "gone,1"]


# --- index.csv: typed ids, original filenames, upload dates; entries dated by upload ---------

def index_resource(index: IndexWriter) -> dict[str, object]:
    """What datapackage.json says of index.csv, as far as the quoting check needs it."""
    return {"dialect": index.dialect.to_descriptor(),
            "schema": {"fields": [{"name": f.name, "type": field_type(f)} for f in index.schema]}}


def write_index(docs: list[DocumentInput], **options: object) -> tuple[list[list[tuple[str | None, bool]]], Parts]:
    parts, out = Parts(), io.BytesIO()
    index = IndexWriter(out, **options)  # type: ignore[arg-type]
    write_document_parts(docs, parts.open_part, index, part_limit=BIG, modified_at=MODIFIED)
    index.close()
    rows = check_csv(out.getvalue(), index_resource(index))
    assert [v for v, _ in rows[0]] == HEADER
    return rows[1:], parts


def keyed(key: object, filename: str | None, data: bytes | None,
          uploaded_at: datetime | None = None) -> DocumentInput:
    plain = doc(str(key), filename or "", data)
    return DocumentInput(str(key), filename, plain.open, document_key=key, uploaded_at=uploaded_at)


def test_header_keeps_the_contract_columns_first() -> None:
    assert HEADER[:6] == ["document_id", "zip_part", "zip_path", "bytes", "sha256", "status"]
    assert HEADER[6:] == ["filename", "uploaded_at"]


def test_integer_document_id_is_written_unquoted_with_its_type() -> None:
    rows, _ = write_index([keyed(7, "a.txt", b"a"), keyed(2**63 - 1, "gone", None)],
                          id_field=pa.field("id", pa.int64()))
    assert [r[0] for r in rows] == [("7", False), (str(2**63 - 1), False)]
    assert rows[0][3] == ("1", False)  # bytes: a number
    assert rows[1][1:5] == [(None, False)] * 4  # missing: NULL part, path, size, hash
    assert all(r[5][1] for r in rows)  # status: text


def test_text_document_id_is_quoted_even_when_it_looks_like_a_number() -> None:
    rows, _ = write_index([keyed("007", "a.txt", b"a"), keyed(42, "b.txt", b"b")])
    assert [r[0] for r in rows] == [("007", True), ("42", True)]


def test_original_filename_kept_exactly_null_and_empty_apart() -> None:
    names = ["../../etc/passwd", "Cafe\u0301\x07 C:\\evil\\name.txt", "", None, "=HYPERLINK(1)"]
    docs = [keyed(i, n, f"{i}".encode()) for i, n in enumerate(names)]
    rows, parts = write_index(docs, id_field=pa.field("id", pa.int32()))
    assert [r[6] for r in rows] == [(n, True) for n in names[:3]] + [(None, False),
                                                                      ("=HYPERLINK(1)", True)]
    members = unzip(parts.stored["documents-0001.zip"])
    assert sorted(members) == sorted(str(r[2][0]) for r in rows)
    assert [r[2][0] for r in rows][2:4] == ["document-2", "document-3"]


def test_upload_date_in_index_utc_with_offset_or_as_recorded() -> None:
    zoned = datetime(2026, 3, 29, 1, 30, tzinfo=timezone(timedelta(hours=1)))
    naive = datetime(2025, 12, 31, 23, 59, 59, 5)
    rows, _ = write_index([keyed(1, "a", b"a", zoned), keyed(2, "b", None, naive),
                           keyed(3, "c", b"c")])
    assert [r[7] for r in rows] == [("2026-03-29T00:30:00+00:00", False),
                                    ("2025-12-31T23:59:59.000005", False), (None, False)]


def test_zip_entries_carry_the_upload_date_where_known() -> None:
    uploaded = datetime(2021, 6, 7, 8, 9, 10, tzinfo=timezone(timedelta(hours=2)))
    docs = [keyed(1, "known.txt", b"k", uploaded), keyed(2, "unknown.txt", b"u"),
            keyed(3, "naive.txt", b"n", datetime(2019, 1, 2, 3, 4, 6)),
            keyed(4, "ancient.txt", b"o", datetime(1975, 1, 1, tzinfo=UTC)),
            keyed(5, "future.txt", b"f", datetime(2040, 1, 1, tzinfo=UTC))]
    _, parts = write_index(docs)
    with zipfile.ZipFile(io.BytesIO(parts.stored["documents-0001.zip"])) as archive:
        dates = {i.filename: i.date_time for i in archive.infolist()}
    assert dates == {
        "known.txt": (2021, 6, 7, 6, 9, 10),  # in UTC, like every time in the package
        "unknown.txt": (2024, 3, 4, 5, 6, 8),  # the export's time
        "naive.txt": (2019, 1, 2, 3, 4, 6),
        "ancient.txt": (2024, 3, 4, 5, 6, 8),  # before 1980: a ZIP cannot say it
        "future.txt": (2024, 3, 4, 5, 6, 8),  # past stream-zip's 32-bit Unix time
    }


def test_entry_time_bounds() -> None:
    assert entry_time(None, MODIFIED) == MODIFIED
    assert entry_time(ZIP_TIME_MIN, MODIFIED) == ZIP_TIME_MIN
    assert entry_time(ZIP_TIME_MAX, MODIFIED) == ZIP_TIME_MAX
    assert entry_time(ZIP_TIME_MIN - timedelta(seconds=1), MODIFIED) == MODIFIED


def test_excel_index_has_bom_and_neutralised_text() -> None:
    parts, out = Parts(), io.BytesIO()
    index = IndexWriter(out, dialect=CsvDialect.excel(semicolon=True),
                        id_field=pa.field("id", pa.int64()))
    write_document_parts([keyed(1, "=cmd|' /C calc'!A0.csv", b"x")], parts.open_part, index,
                         part_limit=BIG, modified_at=MODIFIED)
    index.close()
    data = out.getvalue()
    assert data.startswith(UTF8_BOM + b'"document_id";"zip_part"')
    [row] = check_csv(data, index_resource(index))[1:]
    assert row[0] == ("1", False)
    assert row[6] == ("'=cmd|' /C calc'!A0.csv", True)


def test_index_of_many_documents_is_flushed_in_batches_and_complete() -> None:
    n = 3 * INDEX_FLUSH_ROWS + 5
    docs = [keyed(i, f"f{i}.txt", None if i % 10 == 0 else b"d") for i in range(n)]
    rows, parts = write_index(docs, id_field=pa.field("id", pa.int64()))
    assert [r[0][0] for r in rows] == [str(i) for i in range(n)]
    assert [r[5][0] for r in rows] == ["missing" if i % 10 == 0 else "ok" for i in range(n)]
    assert len(unzip(parts.stored["documents-0001.zip"])) == n - len(range(0, n, 10))
