"""One table as Parquet (zstd), from the same Arrow batches the CSV export uses (backups).

The writer never seeks: it streams into any byte sink (an encrypting writer over an S3 upload),
row group by row group, so memory is bounded by one batch.
"""

from __future__ import annotations

from typing import IO

import pyarrow as pa
import pyarrow.parquet as pq

ROW_GROUP_ROWS = 128 * 1024


class ParquetTableWriter:
    """Streams one table's batches as a Parquet file into ``sink``."""

    def __init__(self, sink: IO[bytes], schema: pa.Schema) -> None:
        self._writer = pq.ParquetWriter(sink, schema, compression="zstd",
                                        write_statistics=False, store_schema=True)
        self.rows = 0

    def write_batch(self, batch: pa.RecordBatch) -> None:
        """Append one batch (a row group per batch, at most ``ROW_GROUP_ROWS`` rows)."""
        self._writer.write_batch(batch, row_group_size=ROW_GROUP_ROWS)
        self.rows += batch.num_rows

    def close(self) -> None:
        """Write the footer; the sink stays open (its owner closes it)."""
        self._writer.close()
