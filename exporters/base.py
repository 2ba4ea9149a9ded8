"""The contract every table writer follows (one module per format, like dlt's DataWriter)."""

from __future__ import annotations

from typing import Protocol

import pyarrow as pa


class TableWriter(Protocol):
    """Writes Arrow batches of one table to the byte sink it was built with."""

    rows: int

    def write_batch(self, batch: pa.RecordBatch) -> None:
        """Append the rows of one batch."""

    def close(self) -> None:
        """Flush; the sink stays open (its owner closes it)."""
