"""exporters.documents: documents streamed into ZIP parts plus index.csv, all over BytesIO."""

from __future__ import annotations

import hashlib
import io
import random
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import IO

import pytest

from exporters.documents import (
    INDEX_COLUMNS,
    DocumentInput,
    IndexWriter,
    PartsSummary,
    write_document_parts,
)
from tests.csvparse import parse

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
        ["1", "documents-0001.zip", "a.pdf", str(len(a)), sha(a), "ok"],
        ["2", "documents-0001.zip", "photo.jpg", str(len(b)), sha(b), "ok"],
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
    assert result.index[1] == ["2", None, None, None, None, "missing"]
    assert [r[0] for r in result.index] == ["1", "2", "3"]
    assert (result.summary.documents_ok, result.summary.documents_missing) == (2, 1)


def test_only_missing_documents_make_no_part() -> None:
    result = run([doc("1", "a", None), doc("2", "b", None)])
    assert result.parts.opened == []
    assert result.summary.parts == []
    assert [r[-1] for r in result.index] == ["missing", "missing"]


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
    assert [(r[0], r[1], r[-1]) for r in result.index] == [
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
    assert result.index == [["1", "documents-0001.zip", "empty.txt", "0", sha(b""), "ok"],
                            ["2", "documents-0001.zip", "e.bin", "0", sha(b""), "ok"]]


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
    assert result.index[0][3:] == [str(len(big)), sha(big), "ok"]
    assert result.summary.document_bytes == len(big) + 1


def test_index_quotes_awkward_document_ids() -> None:
    result = run([doc('a,"b"\nc', "x.txt", b"1"), doc("gone,1", "y", None)])
    assert [r[0] for r in result.index] == ['a,"b"\nc', "gone,1"]
