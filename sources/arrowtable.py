"""One table's rows as Arrow batches read by ADBC, identical to what the tuple path builds.

``sources.database`` builds the statement and the column mappings; this module decides whether
the ADBC path can read the table *exactly*, and if so assembles batches of the table's schema:

- Columns of one storage class (or of a PostgreSQL type read as bool, integer, float, text or
  bytes) come from ADBC. SQLite's driver infers a column's type from its first batch: a column
  NULL throughout that batch is inferred as integer, and a later text value would stop the
  read, so such a table is read as tuples instead (decided on the first batch, before any row
  is handed on).
- Columns of mixed SQLite storage classes need each value's class (``render_mixed``): they are
  read as tuples by a second statement on the snapshot's own connection, in the same primary
  key order, and joined batch by batch, each row's key checked against ADBC's and the row
  counts to the last row. A table whose key is absent, mixed itself, or NULL in some row has
  no order both reads share: tuples.

Whatever cannot be read exactly returns a reason, never a guess; the caller records it and
reads tuples.
"""

from __future__ import annotations

import contextlib
import itertools
import re
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pyarrow as pa

from kernel.errors import SourceUnavailable
from sources.arrow_types import ColumnMapping
from sources.arrowread import ArrowConnection, TableQuery
from sources.dbdriver import TransientSourceError
from sources.rowbatch import to_batch

# What libpq says when the server or the network drops the connection mid-stream: a retry of
# the run may succeed, as for the tuple path's OperationalError.
_CONNECTION_LOST = re.compile(r"server closed the connection|terminating connection|"
                              r"could not receive data|connection (?:reset|refused|timed out)|"
                              r"no connection to the server", re.IGNORECASE)

# PostgreSQL types ADBC hands over as opaque bytes that are the value's UTF-8 text: their
# binary send function is text's.
_TEXT_LIKE = frozenset({"citext"})


def _text_like(got: pa.DataType) -> bool:
    return (isinstance(got, pa.OpaqueType) and got.vendor_name == "PostgreSQL"
            and got.type_name in _TEXT_LIKE)


def _as(array: pa.Array, want: pa.DataType, table: str, column: str) -> pa.Array:
    """A column of the driver's as the schema's type (exact, :func:`_compatible` decided; a
    column of NULLs only, which SQLite's driver types as integers, as NULLs of ``want``).
    Text is checked to be UTF-8, as the tuple path's decoding does."""
    if array.null_count == len(array) and array.type != want:
        return pa.nulls(len(array), want)
    if _text_like(array.type):
        array = array.storage
    array = array.cast(want)
    if pa.types.is_string(want):
        try:
            array.validate(full=True)
        except pa.ArrowInvalid as err:
            raise SourceUnavailable(f"reading table {table!r}: column {column!r} holds text "
                                    f"that is not valid UTF-8 ({err})") from err
    return array


def _compatible(got: pa.DataType, want: pa.DataType) -> bool:
    """Whether the driver's type holds exactly the values the tuple path would (a widening
    integer or an offset width aside)."""
    if _text_like(got):
        return bool(pa.types.is_string(want))
    for kind in (pa.types.is_integer, pa.types.is_boolean, pa.types.is_floating):
        if kind(want):
            return bool(kind(got)) and (not pa.types.is_floating(want) or got == want)
    if pa.types.is_string(want):
        return bool(pa.types.is_string(got) or pa.types.is_large_string(got))
    if pa.types.is_binary(want):
        return bool(pa.types.is_binary(got) or pa.types.is_large_binary(got))
    return False


def arrow_batches(conn: ArrowConnection, query: TableQuery, schema: pa.Schema,
                  mappings: Sequence[ColumnMapping], tuples: Callable[[str], Iterator[
                      list[tuple[Any, ...]]]], *, batch_rows: int, batch_bytes: int
                  ) -> Iterator[pa.RecordBatch] | str:
    """The table's batches, or why the ADBC path cannot read it exactly.

    ``tuples(sql)`` runs a statement on the snapshot's own connection and yields its rows in
    batches (used for mixed columns). ``batch_rows`` bounds SQLite's batches (the caller sizes
    it by the widest row), ``batch_bytes`` PostgreSQL's.
    """
    fast = [i for i, m in enumerate(mappings) if not m.mixed]
    mixed = [i for i, m in enumerate(mappings) if m.mixed]
    if not fast:
        return "every column holds values of several SQLite storage classes"
    why_not = _why_not_joined(query, mappings) if mixed else None
    if why_not:
        return why_not
    sql = f"SELECT {', '.join(query.exprs[i] for i in fast)} {query.tail}"
    reader = conn.reader(sql, query.params, batch_rows=batch_rows, batch_bytes=batch_bytes)
    fields = _fields_by_column(schema, mappings)
    try:
        first = _next(reader, query.name)
        why_not = _mistyped(first, fast, mappings, fields, sqlite=conn.backend == "sqlite")
    except BaseException:
        reader.close()
        raise
    if first is None or why_not:
        reader.close()
        return why_not or iter(())
    return _assemble(reader, first, query, fast, mixed, mappings, schema, fields, tuples,
                     batch_rows)


def _why_not_joined(query: TableQuery, mappings: Sequence[ColumnMapping]) -> str | None:
    """Why the mixed columns' tuples cannot be joined to ADBC's rows by position, if so: both
    reads must follow one total order (a key without NULLs, read by ADBC so it can be compared
    row by row)."""
    if not query.key:
        return "columns of several storage classes and no primary key to align two reads"
    if any(mappings[i].mixed for i in query.key):
        return "a primary key column holds values of several storage classes"
    if query.null_keys:
        return (f"{query.null_keys} row(s) with NULL in the primary key: no order two reads "
                "share")
    return None


def _mistyped(first: pa.RecordBatch | None, fast: list[int], mappings: Sequence[ColumnMapping],
              fields: list[list[pa.Field]], *, sqlite: bool) -> str | None:
    """Why the driver's types are not exactly the schema's, if so. SQLite's driver infers a
    type from the first batch: a column NULL throughout it reads as integers, fine only when
    the column holds no value at all (its storage classes are none)."""
    if first is None:
        return None
    for pos, i in enumerate(fast):
        got, want = first.column(pos).type, mappings[i].arrow_type
        if _compatible(got, want):
            continue
        nulls = first.column(pos).null_count == first.num_rows
        if sqlite and nulls and not mappings[i].storage_classes:
            continue
        why = " from a first batch of NULLs" if nulls and sqlite else ""
        return f"column {fields[i][0].name!r}: the driver reads {got}{why}, {want} expected"
    return None


def _assemble(reader: pa.RecordBatchReader, first: pa.RecordBatch, query: TableQuery,
              fast: list[int], mixed: list[int], mappings: Sequence[ColumnMapping],
              schema: pa.Schema, fields: list[list[pa.Field]],
              tuples: Callable[[str], Iterator[list[tuple[Any, ...]]]], batch_rows: int
              ) -> Iterator[pa.RecordBatch]:
    mixed_rows: _Rows | None = None
    mixed_schema: pa.Schema | None = None
    keys = [fast.index(i) for i in query.key] if mixed else []  # positions in ADBC's batch
    slots = list(itertools.accumulate((len(f) for f in fields[:-1]), initial=0))
    if mixed:
        exprs = [query.exprs[i] for i in (*query.key, *mixed)]
        mixed_rows = _Rows(tuples(f"SELECT {', '.join(exprs)} {query.tail}"))
        mixed_schema = pa.schema([f for i in mixed for f in fields[i]])
    mixed_maps = [mappings[i] for i in mixed]
    try:
        batch: pa.RecordBatch | None = first
        while batch is not None:
            for start in range(0, batch.num_rows, max(1, batch_rows)):
                part = batch.slice(start, batch_rows)
                other = None
                if mixed_rows is not None and mixed_schema is not None:
                    rows = mixed_rows.take(part.num_rows, query.name)
                    _same_keys(part, keys, rows, query.name)
                    other = to_batch([r[len(keys):] for r in rows], mixed_schema, mixed_maps)
                yield _combine(part, other, fast, mixed, fields, slots, schema, query.name)
            batch = _next(reader, query.name)
        if mixed_rows is not None:
            mixed_rows.done(query.name)
    finally:
        with contextlib.suppress(Exception):
            reader.close()
        if mixed_rows is not None:
            mixed_rows.close()


def _same_keys(part: pa.RecordBatch, keys: list[int], rows: list[tuple[Any, ...]],
               table: str) -> None:
    """The tuples belong to ADBC's rows, key by key: two reads of one snapshot in one order
    agree, and a disagreement (a collation that ties distinct keys, say) stops the read."""
    ours = list(zip(*(part.column(k).to_pylist() for k in keys), strict=True))
    theirs = [row[:len(keys)] for row in rows]
    if ours != theirs:
        at = next(n for n, (a, b) in enumerate(zip(ours, theirs, strict=True)) if a != b)
        raise SourceUnavailable(
            f"reading table {table!r}: the two reads of the snapshot disagree on the order of "
            f"rows (key {ours[at]!r} against {theirs[at]!r}); TENANT_EXPORT_ARROW_READS=false "
            "reads the table in one statement")


def _combine(part: pa.RecordBatch, other: pa.RecordBatch | None, fast: list[int],
             mixed: list[int], fields: list[list[pa.Field]], slots: list[int],
             schema: pa.Schema, table: str) -> pa.RecordBatch:
    """Columns in the table's order: ADBC's cast to the schema's types, then the tuples'
    (``slots``: where each source column's first field sits in the schema)."""
    arrays: list[pa.Array] = [pa.nulls(0)] * len(schema)
    for pos, i in enumerate(fast):
        field = fields[i][0]
        arrays[slots[i]] = _as(part.column(pos), field.type, table, field.name)
    if other is not None:
        at = 0
        for i in mixed:
            for k in range(len(fields[i])):
                arrays[slots[i] + k] = other.column(at)
                at += 1
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


def _fields_by_column(schema: pa.Schema, mappings: Sequence[ColumnMapping]
                      ) -> list[list[pa.Field]]:
    """The schema's fields grouped by source column (a mixed column's companion with it)."""
    grouped: list[list[pa.Field]] = []
    at = 0
    for mapping in mappings:
        width = 2 if mapping.companion else 1
        grouped.append([schema.field(at + k) for k in range(width)])
        at += width
    return grouped


def _next(reader: pa.RecordBatchReader, table: str) -> pa.RecordBatch | None:
    """The next batch, or None at the end; a driver failure is the source's."""
    import adbc_driver_manager as adbc  # noqa: PLC0415 - loaded with the reader already

    try:
        return reader.read_next_batch()
    except StopIteration:
        return None
    except (pa.ArrowException, OSError, adbc.Error) as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        if isinstance(err, adbc.OperationalError) or _CONNECTION_LOST.search(reason):
            raise TransientSourceError(f"reading table {table!r}: {reason}") from err
        raise SourceUnavailable(f"reading table {table!r}: {reason}") from err


class _Rows:
    """The mixed columns' tuples, taken n at a time to match ADBC's batches."""

    def __init__(self, batches: Iterator[list[tuple[Any, ...]]]) -> None:
        self._batches = batches
        self._held: list[tuple[Any, ...]] = []

    def take(self, n: int, table: str) -> list[tuple[Any, ...]]:
        while len(self._held) < n:
            more = next(self._batches, None)
            if more is None:
                raise SourceUnavailable(
                    f"reading table {table!r}: the two reads of the snapshot disagree "
                    f"(fewer rows in the second)")
            self._held.extend(more)
        rows, self._held = self._held[:n], self._held[n:]
        return rows

    def done(self, table: str) -> None:
        if self._held or next(self._batches, []):
            raise SourceUnavailable(f"reading table {table!r}: the two reads of the snapshot "
                                    "disagree (more rows in the second)")

    def close(self) -> None:
        close = getattr(self._batches, "close", None)
        if close is not None:
            with contextlib.suppress(Exception):
                close()
