"""Arrow batches straight from the database driver (ADBC), inside the snapshot's instant.

Reading rows as Python tuples and converting them to Arrow costs about three times what the
database takes to produce them (docs/design.md §2: stdlib sqlite3 -> Arrow 5.1 s against
ADBC 3.3 s for a million rows). ADBC's drivers fill Arrow buffers in C: SQLite's steps the
statement, PostgreSQL's reads ``COPY (SELECT ...) TO STDOUT (FORMAT binary)``, both streamed in
bounded batches. Only the low-level ``adbc_driver_manager`` API is used: its DB-API module
imports ``pyarrow.dataset`` and, through it, pandas (about a second of start-up).

A second connection must see exactly what the snapshot's own connection sees, or a table would
come from another instant than the rest of the export:

- PostgreSQL: the snapshot's transaction exports its snapshot (``pg_export_snapshot()``) and
  this connection adopts it (``SET TRANSACTION SNAPSHOT``) in a read-only repeatable-read
  transaction with the same session settings.
- SQLite has no shared snapshots. :func:`open_sqlite_pair` starts this connection's read
  transaction *between* two readings of ``PRAGMA data_version`` on the snapshot's connection,
  the second taken after that connection's own read transaction began: equal values mean no
  other connection committed in between, so both transactions read the same database state.
  Otherwise it tries again, and after a few tries reads without ADBC.

The caller (``sources.database``) decides per table whether a stream qualifies and checks the
first batch's types against what it expects; anything unexpected falls back to tuples before a
single row has been handed on.
"""

from __future__ import annotations

import contextlib
import re
import urllib.parse
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from kernel.errors import SourceUnavailable

if TYPE_CHECKING:
    import pyarrow as pa

SQLITE_TRIES = 5
_SNAPSHOT_ID = re.compile(r"[0-9A-Fa-f]+(-[0-9A-Fa-f]+)+")
ARROW_BATCH_DIVISOR = 4  # Arrow holds about a quarter of the tuple estimate (16 B per value)



@dataclass(frozen=True)
class TableQuery:
    """One table's statement in parts: the column expressions, and what follows them."""

    name: str
    exprs: Sequence[str]
    tail: str  # "FROM ... WHERE ... [ORDER BY ...]"
    params: Sequence[object]
    key: Sequence[int]  # the primary key's columns (positions in ``exprs``) the tail orders by
    null_keys: int = 0  # rows whose key has a NULL (SQLite allows it): no total order


class ArrowConnection:
    """One ADBC connection in an open read-only transaction; queries return batch readers."""

    def __init__(self, database: Any, connection: Any, backend: str) -> None:
        self._database = database
        self._connection = connection
        self.backend = backend
        # Statements still open, with their readers: ADBC refuses to close a connection with
        # an open statement, and an abandoned stream would hold the transaction (and on
        # PostgreSQL the exported snapshot, holding back vacuum) until garbage collection.
        self._open: dict[int, tuple[Any, Any]] = {}

    def reader(self, sql: str, params: Sequence[object], *, batch_rows: int,
               batch_bytes: int) -> pa.RecordBatchReader:
        """The rows of ``sql`` as Arrow batches of about ``batch_rows`` rows (SQLite) or
        ``batch_bytes`` bytes (PostgreSQL); parameters are bound (SQLite) or already inlined."""
        import adbc_driver_manager as adbc  # noqa: PLC0415 - only when reading with ADBC
        import pyarrow as pa  # noqa: PLC0415

        statement = adbc.AdbcStatement(self._connection)
        try:
            if self.backend == "sqlite":
                statement.set_options(**{"adbc.sqlite.query.batch_rows": str(max(1, batch_rows))})
            else:
                hint = max(1, batch_bytes // ARROW_BATCH_DIVISOR)
                statement.set_options(**{"adbc.postgresql.batch_size_hint_bytes": str(hint)})
            statement.set_sql_query(sql)
            if params:
                bound = pa.record_batch([pa.array([p]) for p in params],
                                        names=[f"p{i}" for i in range(len(params))])
                schema_capsule, array_capsule = bound.__arrow_c_array__()
                statement.bind(array_capsule, schema_capsule)
            stream, _ = statement.execute_query()
            source = pa.RecordBatchReader.from_stream(stream)
        except BaseException:
            statement.close()
            raise
        self._open[id(statement)] = (source, statement)
        return _closing(source, statement, lambda: self._open.pop(id(statement), None))

    def execute(self, sql: str) -> None:
        """A statement whose result is not read (SET, BEGIN)."""
        import adbc_driver_manager as adbc  # noqa: PLC0415 - only when reading with ADBC

        statement = adbc.AdbcStatement(self._connection)
        try:
            statement.set_sql_query(sql)
            statement.execute_update()
        finally:
            statement.close()

    def first_value(self, sql: str) -> object:
        """The first value of a one-row query (starts SQLite's read transaction)."""
        reader = self.reader(sql, (), batch_rows=1, batch_bytes=1 << 20)
        try:
            table = reader.read_all()
        finally:
            reader.close()
        return table.column(0)[0].as_py() if table.num_rows else None

    def close(self) -> None:
        """Ends the transaction (nothing was written) and the connection; never raises."""
        for source, statement in list(self._open.values()):  # abandoned streams first
            with contextlib.suppress(Exception):
                source.close()
            with contextlib.suppress(Exception):
                statement.close()
        self._open.clear()
        with contextlib.suppress(Exception):
            self._connection.rollback()
        with contextlib.suppress(Exception):
            self._connection.close()
        with contextlib.suppress(Exception):
            self._database.close()


def _closing(reader: pa.RecordBatchReader, statement: Any, forget: Callable[[], object]
             ) -> pa.RecordBatchReader:
    """A reader that closes its ADBC statement once read to the end or closed."""
    import pyarrow as pa  # noqa: PLC0415

    def batches() -> Iterator[pa.RecordBatch]:
        try:
            yield from reader
        finally:
            with contextlib.suppress(Exception):
                reader.close()
            with contextlib.suppress(Exception):
                statement.close()
            forget()

    return pa.RecordBatchReader.from_batches(reader.schema, batches())


def sqlite_uri(path: str) -> str:
    """A read-only SQLite URI for a database file path (``%``, ``?``, ``#`` escaped)."""
    return f"file:{urllib.parse.quote(path)}?mode=ro"


def open_sqlite_pair(path: str, data_version: Callable[[], int],
                     begin: Callable[[], None], rollback: Callable[[], None]
                     ) -> ArrowConnection | None:
    """An ADBC connection reading the same state as the snapshot's own SQLite connection.

    ``data_version`` reads ``PRAGMA data_version`` on the snapshot's connection; ``begin``
    starts that connection's read transaction (and reads, so it holds its snapshot);
    ``rollback`` ends it before another try. Returns None when ADBC cannot open the file or
    the database kept changing under the tries; ``begin`` has then been called (once more).
    """
    for _ in range(SQLITE_TRIES):
        before = data_version()
        conn = _connect_sqlite(path)
        if conn is None:
            begin()
            return None
        try:
            begin()
            same = data_version() == before
        except BaseException:
            conn.close()
            raise
        if same:
            return conn
        conn.close()
        rollback()
    begin()
    return None


def _connect_sqlite(path: str) -> ArrowConnection | None:
    try:
        import adbc_driver_manager as adbc  # noqa: PLC0415 - only when reading with ADBC
        import adbc_driver_sqlite  # noqa: PLC0415

        database = adbc_driver_sqlite.connect(sqlite_uri(path))
        connection = adbc.AdbcConnection(database)
    except Exception:  # noqa: BLE001 - no ADBC: the tuple path reads everything
        return None
    conn = ArrowConnection(database, connection, "sqlite")
    try:
        connection.set_autocommit(False)
        conn.first_value("SELECT count(*) FROM sqlite_master")  # the read transaction starts
    except Exception:  # noqa: BLE001
        conn.close()
        return None
    return conn


def open_postgres(url: str, snapshot_id: str, session: Sequence[str]) -> ArrowConnection:
    """An ADBC connection in a read-only repeatable-read transaction on ``snapshot_id``.

    ``session`` are the snapshot's ``SET LOCAL`` statements (time zone, float digits, date
    styles), so server-side text renderings are identical on both connections.
    """
    try:
        import adbc_driver_manager as adbc  # noqa: PLC0415 - only when reading with ADBC
        import adbc_driver_postgresql  # noqa: PLC0415

        database = adbc_driver_postgresql.connect(url)
        connection = adbc.AdbcConnection(database)
    except Exception as err:
        raise SourceUnavailable(f"cannot open an Arrow reader on the snapshot: {err}") from err
    if not _SNAPSHOT_ID.fullmatch(snapshot_id):
        raise SourceUnavailable(f"unexpected snapshot identifier {snapshot_id!r}")
    conn = ArrowConnection(database, connection, "postgresql")
    try:
        connection.set_autocommit(False)
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        conn.execute(f"SET TRANSACTION SNAPSHOT '{snapshot_id}'")
        conn.execute("SET LOCAL client_encoding = 'UTF8'")  # as psycopg reads text
        for statement in session:
            conn.execute(statement)
    except Exception as err:
        conn.close()
        raise SourceUnavailable(f"cannot adopt the snapshot {snapshot_id!r}: {err}") from err
    return conn
