"""One table as RFC 4180 CSV, following the value rules of DESIGN §3.4 exactly.

NULL is an empty unquoted field and every string is quoted, so ``""`` is an empty string.
Integers are exact, floats use the shortest text that parses back to the same value, booleans
are ``true``/``false``, temporal values ISO 8601 (``+00:00`` for zoned timestamps, normalised to
UTC), binary base64. pyarrow's writer does the heavy lifting; only the types it would render
differently are converted first, column by column.
"""

from __future__ import annotations

import base64
from typing import IO

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

UTF8_BOM = b"\xef\xbb\xbf"
_OPTIONS = pacsv.WriteOptions(
    include_header=True, quoting_style="needed", eol="\r\n", null_string=""
)


def _csv_type(arrow_type: pa.DataType) -> pa.DataType:
    if pa.types.is_temporal(arrow_type) or pa.types.is_binary(arrow_type):
        return pa.string()
    if pa.types.is_large_binary(arrow_type) or pa.types.is_large_string(arrow_type):
        return pa.large_string()
    return arrow_type


def _convert(array: pa.Array) -> pa.Array:
    kind = array.type
    if pa.types.is_timestamp(kind):
        if kind.tz:  # same instant, rendered in UTC with an explicit offset
            utc = pc.cast(array, pa.timestamp(kind.unit, "UTC"))
            text = pc.strftime(utc, format="%Y-%m-%dT%H:%M:%S")
            return pc.binary_join_element_wise(text, "+00:00", "")
        return pc.strftime(array, format="%Y-%m-%dT%H:%M:%S")
    if pa.types.is_date(kind):
        return pc.strftime(array, format="%Y-%m-%d")
    if pa.types.is_time(kind):
        return pc.cast(array, pa.string())
    if pa.types.is_binary(kind) or pa.types.is_large_binary(kind):
        return pa.array(
            [None if v is None else base64.b64encode(v).decode("ascii") for v in array.to_pylist()],
            type=_csv_type(kind),
        )
    return array


class CsvTableWriter:
    """Streams one table's batches as CSV into ``sink``; the header is written at once."""

    def __init__(self, sink: IO[bytes], schema: pa.Schema, *, excel: bool = False) -> None:
        if excel:
            sink.write(UTF8_BOM)
        self._schema = pa.schema([pa.field(f.name, _csv_type(f.type)) for f in schema])
        self._writer = pacsv.CSVWriter(sink, self._schema, write_options=_OPTIONS)
        self.rows = 0

    def write_batch(self, batch: pa.RecordBatch) -> None:
        """Append one batch; values are converted but never altered."""
        arrays = [_convert(column) for column in batch.columns]
        self._writer.write_batch(pa.RecordBatch.from_arrays(arrays, schema=self._schema))
        self.rows += batch.num_rows

    def close(self) -> None:
        """Flush the writer; the sink is its owner's to close."""
        self._writer.close()
