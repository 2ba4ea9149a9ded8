"""Parquet for backups: every value and every Arrow type comes back exactly, batch after batch."""

from __future__ import annotations

import io
import math

import pyarrow as pa
import pyarrow.parquet as pq

from exporters.parquet_writer import ParquetTableWriter


class WriteOnly(io.RawIOBase):
    """A sink that cannot seek or tell, like an encrypting S3 upload."""

    def __init__(self) -> None:
        self.data = bytearray()

    def writable(self) -> bool:
        return True

    def write(self, b: bytes) -> int:  # type: ignore[override]
        self.data += bytes(b)
        return len(b)


def test_round_trip_of_awkward_values_through_a_write_only_sink() -> None:
    schema = pa.schema([
        pa.field("i", pa.int64(), metadata={b"source_type": b"BIGINT"}),
        ("f", pa.float64()), ("s", pa.string()), ("b", pa.binary()), ("t", pa.bool_()),
    ])
    batches = [
        pa.record_batch([[2**63 - 1, None], [0.1, -0.0], ["", None], [b"\x00\xff", b""],
                         [True, None]], schema=schema),
        pa.record_batch([[-(2**63)], [5e-324], ["é\r\n\"x\""], [None], [False]], schema=schema),
        pa.record_batch([[], [], [], [], []], schema=schema),
    ]
    sink = WriteOnly()
    writer = ParquetTableWriter(sink, schema)  # type: ignore[arg-type]
    for batch in batches:
        writer.write_batch(batch)
    writer.close()
    assert writer.rows == 3
    assert not sink.closed
    table = pq.read_table(io.BytesIO(bytes(sink.data)))
    assert table.schema.field("i").metadata == {b"source_type": b"BIGINT"}
    assert table.column("i").to_pylist() == [2**63 - 1, None, -(2**63)]
    floats = table.column("f").to_pylist()
    assert floats[0] == 0.1 and math.copysign(1, floats[1]) == -1 and floats[2] == 5e-324
    assert table.column("s").to_pylist() == ["", None, "é\r\n\"x\""]
    assert table.column("b").to_pylist() == [b"\x00\xff", b"", None]
    assert table.column("t").to_pylist() == [True, None, False]
    assert pq.ParquetFile(io.BytesIO(bytes(sink.data))).metadata.row_group(0).column(
        0).compression == "ZSTD"
