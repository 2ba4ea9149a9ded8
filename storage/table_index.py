"""A snapshot's table index (format 7, docs/backup-format.md 9.2.5): one JSON line per table
chunk, tables in the manifest's order, stored as chunks of lines like the document index.

Until format 6 every table chunk was listed inline in the manifest: a backup held one entry per
~256 rows until it wrote the manifest as one sealed object, and every reader parsed it whole, so
memory grew with rows (429 MiB at ten million rows against 292 at one million). Since format 7
the manifest keeps, per table, its row and chunk counts; the chunk entries stream out of the
backup's temporary database into the index and back out of it into readers.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from types import TracebackType
from typing import Any

from kernel.errors import VerificationFailed

FIELDS = ("blob", "rows", "plaintext_bytes", "plaintext_sha256", "data_key", "ciphertext_bytes",
          "ciphertext_sha256", "pack", "pack_offset", "pack_blobs")
_READ = 64 * 1024


def encode(table: str, entry: dict[str, Any]) -> bytes:
    """One line: the chunk's fields (``None`` left out) and its table, keys sorted, ASCII."""
    kept = {k: entry[k] for k in FIELDS if entry.get(k) is not None}
    kept["table"] = table
    return json.dumps(kept, sort_keys=True, separators=(",", ":")).encode("ascii") + b"\n"


def table_entries(lines: Iterable[tuple[int, bytes]], tables: list[dict[str, Any]], what: str
                  ) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    """``(manifest table, chunk entry)`` for each line, checked as it comes: every line names
    the table expected at its place (tables in the manifest's order, each once), and each
    table's lines add up to the row and chunk counts its manifest entry gives."""
    position, count, rows = 0, 0, 0
    places = {t.get("name"): i for i, t in enumerate(tables)}
    if len(places) != len(tables):
        raise VerificationFailed(f"{what}: the manifest lists a table name twice")

    def closed(table: dict[str, Any]) -> None:
        expected = (table.get("chunk_count"), table.get("rows"))
        if any(isinstance(n, bool) for n in expected) or (count, rows) != expected:
            raise VerificationFailed(
                f"{what}: table {table.get('name')!r} has {count} chunk(s) of {rows} row(s) in "
                f"the index; the manifest says {table.get('chunk_count')} of "
                f"{table.get('rows')}")

    for number, line in lines:
        entry = _entry(line, what, number)
        name = entry.pop("table")
        if places.get(name, -1) < position:
            raise VerificationFailed(f"{what}: line {number} names table {name!r}, which the "
                                     "manifest does not list at that place")
        while tables[position].get("name") != name:
            closed(tables[position])
            position, count, rows = position + 1, 0, 0
        count, rows = count + 1, rows + entry["rows"]
        yield tables[position], entry
    for table in tables[position:]:
        closed(table)
        count, rows = 0, 0


def _entry(line: bytes, what: str, number: int) -> dict[str, Any]:
    try:
        entry = json.loads(line)
    except ValueError as err:
        raise VerificationFailed(f"{what}: line {number} is not JSON ({err})") from err
    if (not isinstance(entry, dict) or not isinstance(entry.get("table"), str)
            or not isinstance(entry.get("blob"), str)
            or not all(isinstance(entry.get(k), int) and not isinstance(entry.get(k), bool)
                       and entry[k] >= 0 for k in ("rows", "plaintext_bytes"))
            or not isinstance(entry.get("plaintext_sha256"), str)):
        raise VerificationFailed(f"{what}: line {number} is not a table chunk entry")
    return entry


class TableChunkIndex:
    """Each table's chunk entries on demand and in any order (a restore loads tables in its own
    order), from a temporary file: the whole index is read and checked once, when built."""

    def __init__(self, pairs: Iterable[tuple[dict[str, Any], dict[str, Any]]]) -> None:
        self._file = tempfile.TemporaryFile(prefix="tenant-export-tables-")  # noqa: SIM115 - closed by close()
        self._spans: dict[str, tuple[int, int, int]] = {}  # table -> (start, end, chunks)
        try:
            for table, entry in pairs:
                start = self._file.tell()
                self._file.write(json.dumps(entry, separators=(",", ":")).encode() + b"\n")
                first, _, chunks = self._spans.get(table["name"], (start, 0, 0))
                self._spans[table["name"]] = (first, self._file.tell(), chunks + 1)
            self._file.flush()
        except BaseException:
            self._file.close()
            raise

    def chunks(self, table: str) -> Iterator[dict[str, Any]]:
        """The table's chunk entries in order (none for a table without chunks). Reads with
        ``pread``: several tables' iterators may be open at once."""
        start, end, _ = self._spans.get(table, (0, 0, 0))
        pending = b""
        while start < end:
            block = os.pread(self._file.fileno(), min(_READ, end - start), start)
            start += len(block)
            *whole, pending = (pending + block).split(b"\n")
            for line in whole:
                yield json.loads(line)

    def close(self) -> None:
        """Delete the temporary file."""
        self._file.close()

    def __enter__(self) -> TableChunkIndex:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.close()
