"""Rows fetched from a cursor in batches bounded by rows *and* bytes, and made Arrow batches.

A batch of ``batch_rows`` rows is fine for narrow tables and ruinous for wide ones (20,000 rows
of 1 MB each would be 20 GB): rows are fetched a few at a time, their values measured, and a
batch is cut once it holds about ``batch_bytes``. The next fetch asks only for as many rows as
the average row size says still fit, so a server-side cursor never hands over more than that.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pyarrow as pa

from kernel.errors import SourceUnavailable
from sources.arrow_types import ColumnMapping, render_mixed, storage_class

FIRST_FETCH_ROWS = 1  # the first row tells how wide rows are
_VALUE_OVERHEAD = 16  # a Python object's header, roughly; keeps tiny values from looking free


def value_bytes(value: object) -> int:
    """About how many bytes a fetched value holds (its payload for text and binary)."""
    if isinstance(value, str | bytes | bytearray | memoryview):
        return len(value) + _VALUE_OVERHEAD
    return 8 + _VALUE_OVERHEAD


def row_bytes(row: tuple[Any, ...]) -> int:
    """About how many bytes a fetched row holds."""
    return sum(value_bytes(v) for v in row) + _VALUE_OVERHEAD


def bounded_batches(cursor: Any, batch_rows: int, batch_bytes: int
                    ) -> Iterator[list[tuple[Any, ...]]]:
    """Lists of rows, each at most ``batch_rows`` rows and (except a single row larger than
    the bound) about ``batch_bytes`` bytes."""
    rows: list[tuple[Any, ...]] = []
    size = 0
    seen_rows = seen_bytes = 0
    want = min(batch_rows, FIRST_FETCH_ROWS)
    while True:
        fetched = cursor.fetchmany(max(1, want))
        if not fetched:
            break
        for row in fetched:
            weight = row_bytes(row)
            if rows and size + weight > batch_bytes:
                yield rows
                rows, size = [], 0
            rows.append(row)
            size += weight
            seen_rows += 1
            seen_bytes += weight
            if len(rows) >= batch_rows:
                yield rows
                rows, size = [], 0
        average = max(1, seen_bytes // seen_rows)
        room_rows = batch_rows - len(rows)
        room_bytes = max(batch_bytes - size, average)
        want = max(1, min(room_rows, room_bytes // average))
    if rows:
        yield rows


def to_batch(rows: list[tuple[Any, ...]], schema: pa.Schema, mappings: list[ColumnMapping]
             ) -> pa.RecordBatch:
    """Rows as an Arrow batch of ``schema`` (mixed SQLite columns rendered as text)."""
    columns = list(zip(*rows, strict=True)) if rows else [() for _ in mappings]
    arrays: list[pa.Array] = []
    for values, mapping in zip(columns, mappings, strict=True):
        name = schema.field(len(arrays)).name
        try:
            if mapping.mixed:
                arrays.append(pa.array([render_mixed(v) for v in values], type=pa.string()))
                if mapping.companion:
                    arrays.append(pa.array([storage_class(v) for v in values], type=pa.string()))
            else:
                arrays.append(pa.array(values, type=mapping.arrow_type))
        except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError) as err:
            raise SourceUnavailable(f"column {name!r}: value not representable: {err}") from err
    return pa.RecordBatch.from_arrays(arrays, schema=schema)
