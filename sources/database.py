"""The platform database read from one consistent snapshot, streamed as Arrow record batches.

PostgreSQL: one REPEATABLE READ, READ ONLY transaction with server-side cursors, so every table
of a tenant comes from the same instant and memory stays bounded. SQLite: one explicit read
transaction on the driver connection (pysqlite would otherwise not open one for SELECTs).
Which rows are a tenant's is :mod:`sources.scoping`; batches are bounded by rows and bytes
(:mod:`sources.rowbatch`).
"""

from __future__ import annotations

import contextlib
import itertools
import sqlite3
from collections.abc import Generator, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, replace
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine, create_engine, text
from sqlalchemy.exc import SQLAlchemyError

from kernel.dburl import describe_url, driver_errors, error_reason, normalize_url
from kernel.errors import SourceUnavailable
from sources.arrowread import ARROW_BATCH_DIVISOR, ArrowConnection, TableQuery
from sources.dbdriver import NotForArrow, inline_params, translate_error
from sources.scoping import Owned, Sql, unowned_counts
from sources.tables import Place, TablePlan, TenantRef
from sources.unowned import (
    SideConnection,
    UnownedAhead,
    open_postgres_side,
    open_sqlite_side,
)

if TYPE_CHECKING:  # Arrow only where rows become batches: opening and probing need none
    import pyarrow as pa

    from sources.arrow_types import ColumnMapping

DEFAULT_BATCH_BYTES = 64 * 1024**2
_ARROW_VALUE_BYTES = 16  # a value's offsets, validity and fixed width in Arrow, at most
_PROBED_COLUMNS = 900  # SQLite returns at most 2,000 columns: wider tables are read as tuples

# Session settings that change how PostgreSQL renders values as text: pinned, so an export does
# not depend on what a DBA set for the database or role (extra_float_digits=0 would round floats).
_PG_SESSION = (
    "SET LOCAL TIME ZONE 'UTC'",
    "SET LOCAL extra_float_digits = 3",
    "SET LOCAL DateStyle = 'ISO, YMD'",
    "SET LOCAL IntervalStyle = 'postgres'",
    "SET LOCAL bytea_output = 'hex'",
)


_cursor_ids = itertools.count(1)


def open_engine(url: str) -> Engine:
    """An engine whose database was reached once, or ``SourceUnavailable`` naming the URL."""
    parsed = normalize_url(url)
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database or ""
        if database in ("", ":memory:") or database.startswith("file:"):
            pass
        elif not Path(database).is_file():
            raise SourceUnavailable(f"no SQLite database at {database}")
    connect_args: dict[str, Any] = {}
    if parsed.get_backend_name() == "postgresql":
        connect_args["connect_timeout"] = 10
    try:
        engine = create_engine(parsed, connect_args=connect_args)
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except SQLAlchemyError as err:
        raise SourceUnavailable(f"cannot reach database {describe_url(parsed)}: "
                                f"{error_reason(err)}") from err
    return engine


@dataclass
class TableStream:
    """A table's Arrow schema and the lazy batches of one tenant's rows."""

    plan: TablePlan
    schema: pa.Schema
    batches: Iterator[pa.RecordBatch]


class Snapshot(AbstractContextManager["Snapshot"]):
    """Every read inside one ``with`` block sees the database at a single instant."""

    def __init__(self, engine: Engine, batch_rows: int = 20_000,
                 batch_bytes: int = DEFAULT_BATCH_BYTES, *, arrow: bool = False,
                 side: bool = False) -> None:
        """``arrow``: read tables with ADBC where that is exact (``sources.arrowtable``);
        ``arrow_fallbacks`` then says which tables were read as tuples, and why. ``side``: a
        second connection at the snapshot's instant counts the rows no tenant gets beside
        the reads (``unowned_ahead``); SQLite opens it with the ADBC one, or not at all."""
        self._engine = engine
        self._batch_rows = batch_rows
        self._batch_bytes = batch_bytes
        self._backend = engine.dialect.name
        self._quote_name = engine.dialect.identifier_preparer.quote
        self._raw: Any = None
        self._conn: Any = None
        self._use_arrow = arrow
        self._arrow: ArrowConnection | None = None
        self._arrow_tried = False
        self._want_side = side
        self._side: SideConnection | None = None
        self.arrow_fallbacks: dict[str, str] = {}  # table -> why it was read as tuples
        # SQLite table -> (bytes its widest tenant row may hold, rows with a NULL key), for ADBC
        self._facts: dict[str, tuple[int | None, int]] = {}

    @property
    def is_sqlite(self) -> bool:
        """Whether the source is SQLite (loose typing rules apply)."""
        return self._backend == "sqlite"

    def __enter__(self) -> Snapshot:
        try:
            self._raw = self._engine.raw_connection()
            self._conn = self._raw.driver_connection
            if self.is_sqlite:
                self._conn.isolation_level = None  # we issue BEGIN ourselves
                self._begin_sqlite()
            else:
                import psycopg  # noqa: PLC0415 - only needed for PostgreSQL

                self._conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
                self._conn.read_only = True
                for statement in _PG_SESSION:
                    self._conn.execute(statement)
        except Exception as err:
            self._close()
            raise SourceUnavailable(f"cannot open a read snapshot: {err}") from err
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._close()

    def _begin_sqlite(self) -> None:
        """BEGIN, and with an ADBC connection on the file when it can read the same state."""
        path = self._engine.url.database or ""
        if not self._use_arrow or not path or path == ":memory:" or path.startswith("file:"):
            if self._use_arrow:  # another connection cannot see an in-memory database
                self.arrow_fallbacks["*"] = "the SQLite database is not a plain file path"
            self._conn.execute("BEGIN")
            return
        from sources.arrowread import open_sqlite_pair  # noqa: PLC0415 - Arrow, when read

        def begin() -> None:
            self._conn.execute("BEGIN")
            self._conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
            if self._want_side:  # inside the same window: proved to read the same state
                try:
                    self._side = open_sqlite_side(self._engine.raw_connection(), translate_error)
                except (SQLAlchemyError, sqlite3.Error):  # (check_same_thread=True)
                    self._side = None  # the counts are made on this connection instead

        def rollback() -> None:
            self._conn.execute("ROLLBACK")
            self._release_side()

        self._arrow_tried = True
        self._arrow = open_sqlite_pair(
            str(Path(path).absolute()),
            lambda: int(self._conn.execute("PRAGMA data_version").fetchone()[0]),
            begin, rollback)
        if self._arrow is None:
            self._release_side()  # its last begin() was not checked: counts stay inline
            self.arrow_fallbacks["*"] = "ADBC could not open the file at the snapshot's instant"

    def _arrow_connection(self) -> ArrowConnection | None:
        """The snapshot's ADBC connection (PostgreSQL: opened on first use), or None."""
        if self._arrow is not None or self._arrow_tried or not self._use_arrow:
            return self._arrow
        self._arrow_tried = True
        from sources.arrowread import open_postgres  # noqa: PLC0415 - Arrow, when read

        try:  # not in a savepoint: PostgreSQL exports no snapshot from a subtransaction
            if self._conn.execute("SELECT pg_is_in_recovery()").fetchone()[0]:
                self.arrow_fallbacks["*"] = "a standby in recovery exports no snapshot"
                return None
            exported = self._conn.execute("SELECT pg_export_snapshot()").fetchone()[0]
        except driver_errors() as err:
            raise translate_error(err, "the snapshot (exporting it)") from err
        try:
            url = self._engine.url.set(drivername="postgresql")
            self._arrow = open_postgres(url.render_as_string(hide_password=False),
                                        str(exported), _PG_SESSION)
        except SourceUnavailable as err:
            self.arrow_fallbacks["*"] = f"no ADBC reader on the snapshot: {error_reason(err)}"
        return self._arrow

    def _release_side(self) -> None:
        side, self._side = self._side, None
        if side is not None:
            side.release()

    def _close(self) -> None:
        self._release_side()
        if self._arrow is not None:
            self._arrow.close()
            self._arrow = None
        if self._raw is None:
            return
        try:
            if self.is_sqlite:
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
                self._conn.isolation_level = ""
            else:
                self._conn.rollback()
                self._conn.isolation_level = None
                self._conn.read_only = None
        except Exception:  # noqa: BLE001 - a broken connection is discarded below
            self._raw.invalidate()
        finally:
            self._raw.close()
            self._raw = None

    # -- queries -----------------------------------------------------------------------------

    @property
    def sql(self) -> Sql:
        """Quoting and parameter marker of this database."""
        return Sql(self._quote, "?" if self.is_sqlite else "%s", self._backend)

    def _quote(self, name: str) -> str:
        """A quoted identifier (SQLAlchemy's psycopg dialect already doubles ``%`` in it)."""
        return str(self._quote_name(name))

    def batches(self, sql: str, params: Sequence[object], what: str
                ) -> Generator[list[tuple[Any, ...]], None, None]:
        """The rows of a statement in batches bounded by rows and bytes, lazily."""
        from sources.rowbatch import bounded_batches  # noqa: PLC0415 - Arrow, when read

        cursor: Any = None
        try:
            if self.is_sqlite:
                cursor = self._conn.execute(sql, tuple(params))
            else:
                cursor = self._conn.cursor(name=f"tenant_export_{next(_cursor_ids)}")
                cursor.execute(sql, tuple(params))
            yield from bounded_batches(cursor, self._batch_rows, self._batch_bytes)
        except driver_errors() as err:
            raise translate_error(err, what) from err
        finally:
            # An abandoned reader may be closed after its snapshot; the cursor went with it.
            if cursor is not None:
                with contextlib.suppress(Exception):
                    cursor.close()

    def rows(self, sql: str, params: Sequence[object], what: str
             ) -> Generator[tuple[Any, ...], None, None]:
        """The rows of a statement one by one, lazily (the cursor is released on close)."""
        batches = self.batches(sql, params, what)
        try:
            for batch in batches:
                yield from batch
        finally:
            batches.close()

    def first(self, sql: str, params: Sequence[object], what: str) -> tuple[Any, ...] | None:
        """The first row of a statement, or None; the cursor is released at once."""
        rows = self.rows(sql, params, what)
        try:
            return next(rows, None)
        finally:
            rows.close()

    def _table_ref(self, name: str, schema: str | None) -> str:
        ref = self._quote(name)
        return f"{self._quote(schema)}.{ref}" if schema else ref

    def source(self, plan: TablePlan, tenant: TenantRef | None, schema: str | None = None
               ) -> str:
        """The table a plan reads (the tenant's own schema in the schema-per-tenant layout).

        ``schema`` only places a plan that does not know its schema (built by hand).
        """
        scope = plan.effective_scope
        if scope.kind == "schema":
            if tenant is None or not tenant.schema:
                raise SourceUnavailable(f"table {plan.name!r} lives in each tenant's schema, "
                                        "but no tenant schema was resolved")
            return self._table_ref(plan.table_name, tenant.schema)
        return self._table_ref(plan.table_name, plan.schema or schema)

    def select_owned(self, plan: TablePlan, columns: Sequence[str], tenant: object,
                     order_by: Sequence[str] = (), schema: str | None = None
                     ) -> Generator[tuple[Any, ...], None, None]:
        """Rows of ``columns`` of the tenant's rows of a table, lazily."""
        ref = TenantRef.of(tenant)
        owned = Owned(self.sql, ref)
        cols = ", ".join(self.sql.column("t", c) for c in columns)
        sql = (f"SELECT {cols} FROM {self.source(plan, ref, schema)} t "
               f"WHERE {owned.where(plan.effective_scope, 't')}")
        if order_by:
            sql += " ORDER BY " + ", ".join(self.sql.column("t", c) for c in order_by)
        return self.rows(sql, owned.params, f"table {plan.name!r}")

    def select_all(self, table: str, column: str, schema: str | None = None
                   ) -> Generator[tuple[Any, ...], None, None]:
        """Every value of one column (the tenants table is small)."""
        sql = f"SELECT {self._quote(column)} FROM {self._table_ref(table, schema)} "
        sql += f"ORDER BY {self._quote(column)}"
        return self.rows(sql, [], f"table {table!r}")

    def unowned(self, plan: TablePlan, schema: str | None = None) -> tuple[int, int]:
        """Rows of the table no tenant gets, platform-wide: (cross-tenant, orphans)."""
        place = Place(plan.schema or schema, plan.table_name)
        statement = unowned_counts(self.sql, place, plan.effective_scope)
        if statement is None:
            return 0, 0
        row = self.first(statement, [], f"table {plan.name!r}")
        return (int(row[0]), int(row[1])) if row else (0, 0)

    def unowned_ahead(self, plans: Sequence[TablePlan]) -> UnownedAhead | None:
        """``unowned`` of every plan, computed in order on the side connection while the
        caller goes on (close it when done); None without a side connection: call
        ``unowned`` then."""
        if self._want_side and self._side is None and not self.is_sqlite:
            self._side = self._postgres_side()
        side, self._side = self._side, None
        if side is None:
            return None
        statements = [(plan.name, unowned_counts(self.sql, Place(plan.schema, plan.table_name),
                                                 plan.effective_scope)) for plan in plans]
        return UnownedAhead(statements, side)

    def _postgres_side(self) -> SideConnection | None:
        """A pool connection adopting this transaction's exported snapshot, or None (a
        standby exports none)."""
        try:
            if self._conn.execute("SELECT pg_is_in_recovery()").fetchone()[0]:
                return None
            exported = str(self._conn.execute("SELECT pg_export_snapshot()").fetchone()[0])
        except driver_errors() as err:
            raise translate_error(err, "the snapshot (exporting it)") from err
        failures: tuple[type[BaseException], ...] = (SQLAlchemyError, ValueError,
                                                     *driver_errors())
        try:
            return open_postgres_side(self._engine.raw_connection(), exported, _PG_SESSION,
                                      translate_error)
        except failures:
            return None  # the counts are made on this connection, as without a side one

    def read_table(self, plan: TablePlan, tenant_id: object,
                   schema: str | None = None) -> TableStream:
        """The tenant's rows of one table as Arrow batches, ordered by primary key.

        ``tenant_id`` is the tenant's :class:`TenantRef` (or its bare stored key); ``schema``
        only places a plan built without one.
        """
        import pyarrow as pa  # noqa: PLC0415 - Arrow, when read

        from sources.arrow_types import arrow_field, companion_field  # noqa: PLC0415
        from sources.rowbatch import to_batch  # noqa: PLC0415

        tenant = TenantRef.of(tenant_id)
        mappings = self._mappings(plan, tenant, schema)
        taken = {c.name for c in plan.columns}
        fields: list[pa.Field] = []
        for column, mapping in zip(plan.columns, mappings, strict=True):
            fields.append(arrow_field(column.name, mapping, column.declared_text))
            if mapping.companion:
                fields.append(companion_field(column.name, taken))
                taken.add(fields[-1].name)
        arrow_schema = pa.schema(fields)
        exprs = [self._expression(c.name, m) for c, m in zip(plan.columns, mappings, strict=True)]
        owned = Owned(self.sql, tenant)
        tail = (f"FROM {self.source(plan, tenant, schema)} t "
                f"WHERE {owned.where(plan.effective_scope, 't')}")
        if plan.primary_key:
            tail += " ORDER BY " + ", ".join(self.sql.column("t", c) for c in plan.primary_key)
        names = [c.name for c in plan.columns]
        key = [names.index(c) for c in plan.primary_key] if set(plan.primary_key) <= set(
            names) else []
        null_keys = self._facts.get(plan.name, (None, 0))[1]
        query = TableQuery(plan.name, exprs, tail, owned.params, key, null_keys)
        fast = self._arrow_batches(query, arrow_schema, mappings)
        if fast is not None:
            return TableStream(plan=plan, schema=arrow_schema, batches=fast)
        sql = f"SELECT {', '.join(exprs) or 'NULL'} {tail}"
        batches = (
            to_batch(rows, arrow_schema, mappings)
            for rows in self.batches(sql, owned.params, f"table {plan.name!r}")
        )
        return TableStream(plan=plan, schema=arrow_schema, batches=batches)

    def _arrow_batches(self, query: TableQuery, schema: pa.Schema,
                       mappings: list[ColumnMapping]) -> Iterator[pa.RecordBatch] | None:
        """The table read by ADBC when that is exact, else None (the reason recorded)."""
        from sources.arrowtable import arrow_batches  # noqa: PLC0415 - Arrow, when read

        conn = self._arrow_connection() if query.exprs else None
        if conn is None:
            return None
        params: Sequence[object] = query.params
        tail = query.tail
        rows = self._batch_rows
        widest = self._facts.get(query.name, (None, 0))[0]
        try:
            if self.is_sqlite and widest is None:
                raise NotForArrow(f"more than {_PROBED_COLUMNS} columns: no row size probed")
            if self.is_sqlite:
                room = self._batch_bytes // ARROW_BATCH_DIVISOR
                rows = max(1, min(rows, room // max(1, widest or 1)))
            else:  # COPY takes no parameters: the tenant's key is inlined as a quoted literal
                tail = inline_params(self._conn, tail, params)
                params = ()
            result = arrow_batches(
                conn, replace(query, tail=tail, params=params), schema, mappings,
                lambda sql: self.batches(sql, query.params, f"table {query.name!r}"),
                batch_rows=rows, batch_bytes=self._batch_bytes)
        except NotForArrow as err:
            result = str(err)
        except Exception as err:  # noqa: BLE001 - reported, and the tuple path reads it
            result = f"the ADBC read failed: {error_reason(err)}"
        if isinstance(result, str):
            self.arrow_fallbacks[query.name] = result
            return None
        return result

    def _expression(self, name: str, mapping: ColumnMapping) -> str:
        column = self.sql.column("t", name)
        if mapping.as_json_text:
            return f"(to_json({column}) #>> '{{}}')"
        return f"CAST({column} AS TEXT)" if mapping.cast_to_text else column

    def _mappings(self, plan: TablePlan, tenant: TenantRef, schema: str | None
                  ) -> list[ColumnMapping]:
        from sources.arrow_types import postgres_mapping, sqlite_mapping  # noqa: PLC0415

        if not self.is_sqlite:
            return [postgres_mapping(c.declared) for c in plan.columns]
        if not plan.columns:
            return []
        columns = [self.sql.column("t", c.name) for c in plan.columns]
        probes = [f"group_concat(DISTINCT typeof({c}))" for c in columns]
        sized = self._use_arrow and len(columns) <= _PROBED_COLUMNS
        if sized:  # for ADBC: each column's largest value (its driver counts rows only) and
            # the rows whose key has a NULL (no order two reads would share)
            probes += [f"max(length(CAST({c} AS BLOB)))" for c in columns]
            keyed = [self.sql.column("t", k) for k in plan.primary_key]
            probes.append(f"sum({' OR '.join(f'{k} IS NULL' for k in keyed)})" if keyed
                          else "0")
        owned = Owned(self.sql, tenant)
        sql = (f"SELECT {', '.join(probes)} FROM {self.source(plan, tenant, schema)} t "
               f"WHERE {owned.where(plan.effective_scope, 't')}")
        try:
            row = self._conn.execute(sql, tuple(owned.params)).fetchone()
        except sqlite3.Error as err:
            raise translate_error(err, f"table {plan.name!r}") from err
        if sized:  # a bound: the sum of the columns' largest values
            most = sum(int(v or 0) for v in row[len(columns):2 * len(columns)])
            self._facts[plan.name] = (most + _ARROW_VALUE_BYTES * len(columns),
                                      int(row[-1] or 0))
        return [
            sqlite_mapping(c.declared_text, set((classes or "").split(",")) - {""})
            for c, classes in zip(plan.columns, row[:len(columns)], strict=True)
        ]
