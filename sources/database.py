"""The platform database read from one consistent snapshot, streamed as Arrow record batches.

PostgreSQL: one REPEATABLE READ, READ ONLY transaction with server-side cursors, so every table
of a tenant comes from the same instant and memory stays bounded. SQLite: one explicit read
transaction on the driver connection (pysqlite would otherwise not open one for SELECTs).
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Generator, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import pyarrow as pa
from sqlalchemy import Engine, create_engine, make_url, text
from sqlalchemy.engine import URL
from sqlalchemy.exc import ArgumentError, SQLAlchemyError

from sources.arrow_types import (
    ColumnMapping,
    arrow_field,
    companion_field,
    postgres_mapping,
    render_mixed,
    sqlite_mapping,
    storage_class,
)
from sources.catalog import TablePlan
from tenant_export.errors import BadInput, SourceUnavailable

_cursor_ids = itertools.count(1)


def normalize_url(url: str) -> URL:
    """Parse a SQLAlchemy URL; plain ``postgresql://`` means the psycopg 3 driver we ship."""
    try:
        parsed = make_url(url)
    except ArgumentError as err:
        raise BadInput(f"invalid database URL: {err}") from err
    if parsed.drivername in ("postgresql", "postgres", "postgresql+psycopg2"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed


def describe_url(url: str | URL) -> str:
    """The URL with its password masked, for messages and logs."""
    parsed = url if isinstance(url, URL) else normalize_url(url)
    return parsed.render_as_string(hide_password=True)


def open_engine(url: str) -> Engine:
    """An engine whose database was reached once, or ``SourceUnavailable`` naming the URL."""
    parsed = normalize_url(url)
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database or ""
        if database in ("", ":memory:") or database.startswith("file:"):
            pass
        elif not Path(database).is_file():
            raise SourceUnavailable(f"no SQLite database at {database}")
    elif parsed.get_backend_name() != "postgresql":
        raise BadInput(
            f"unsupported database {parsed.get_backend_name()!r}: use sqlite:// or postgresql://"
        )
    connect_args: dict[str, Any] = {}
    if parsed.get_backend_name() == "postgresql":
        connect_args["connect_timeout"] = 10
    try:
        engine = create_engine(parsed, connect_args=connect_args)
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except SQLAlchemyError as err:
        reason = str(getattr(err, "orig", None) or err).strip().splitlines()[0]
        raise SourceUnavailable(f"cannot reach database {describe_url(parsed)}: {reason}") from err
    return engine


@dataclass
class TableStream:
    """A table's Arrow schema and the lazy batches of one tenant's rows."""

    plan: TablePlan
    schema: pa.Schema
    batches: Iterator[pa.RecordBatch]


class Snapshot(AbstractContextManager["Snapshot"]):
    """Every read inside one ``with`` block sees the database at a single instant."""

    def __init__(self, engine: Engine, batch_rows: int = 20_000) -> None:
        self._engine = engine
        self._batch_rows = batch_rows
        self._backend = engine.dialect.name
        self._quote = engine.dialect.identifier_preparer.quote
        self._raw: Any = None
        self._conn: Any = None

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
                self._conn.execute("BEGIN")
            else:
                import psycopg  # noqa: PLC0415 - only needed for PostgreSQL

                self._conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
                self._conn.read_only = True
                self._conn.execute("SET LOCAL TIME ZONE 'UTC'")
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

    def _close(self) -> None:
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

    def _sql(self, template: str) -> str:
        """Placeholders are written ``?``; psycopg wants ``%s`` and literal ``%`` doubled."""
        if self.is_sqlite:
            return template
        return template.replace("%", "%%").replace("?", "%s")

    def _rows(
        self, sql: str, params: Sequence[object]
    ) -> Generator[list[tuple[Any, ...]], None, None]:
        if self.is_sqlite:
            cursor = self._conn.execute(sql, tuple(params))
        else:
            cursor = self._conn.cursor(name=f"tenant_export_{next(_cursor_ids)}")
            cursor.execute(self._sql(sql), tuple(params))
        try:
            while rows := cursor.fetchmany(self._batch_rows):
                yield rows
        finally:
            # An abandoned reader may be closed after its snapshot; the cursor went with it.
            with contextlib.suppress(Exception):
                cursor.close()

    def _table_ref(self, name: str, schema: str | None) -> str:
        ref = self._quote(name)
        return f"{self._quote(schema)}.{ref}" if schema else ref

    def select(
        self,
        table: str,
        columns: Sequence[str],
        filter_column: str,
        value: str,
        order_by: Sequence[str] = (),
        schema: str | None = None,
    ) -> Generator[tuple[Any, ...], None, None]:
        """Rows of ``columns`` where ``filter_column = value``, lazily."""
        cols = ", ".join(self._quote(c) for c in columns)
        sql = f"SELECT {cols} FROM {self._table_ref(table, schema)} "
        sql += f"WHERE {self._quote(filter_column)} = ?"
        if order_by:
            sql += " ORDER BY " + ", ".join(self._quote(c) for c in order_by)
        batches = self._rows(sql, [value])
        try:
            for rows in batches:
                yield from rows
        finally:
            batches.close()

    def exists(self, table: str, column: str, value: str, schema: str | None = None) -> bool:
        """Whether at least one row has ``column = value``."""
        rows = self.select(table, [column], column, value, schema=schema)
        try:
            return next(rows, None) is not None
        finally:
            rows.close()  # release the cursor now, not when the generator is collected

    def read_table(self, plan: TablePlan, tenant_id: str, schema: str | None = None) -> TableStream:
        """The tenant's rows of one table as Arrow batches, ordered by primary key."""
        mappings = self._mappings(plan, tenant_id, schema)
        taken = {c.name for c in plan.columns}
        fields: list[pa.Field] = []
        for column, mapping in zip(plan.columns, mappings, strict=True):
            fields.append(arrow_field(column.name, mapping, column.declared_text))
            if mapping.companion:
                fields.append(companion_field(column.name, taken))
                taken.add(fields[-1].name)
        arrow_schema = pa.schema(fields)
        exprs = [
            f"CAST({self._quote(c.name)} AS TEXT)" if m.cast_to_text else self._quote(c.name)
            for c, m in zip(plan.columns, mappings, strict=True)
        ]
        sql = f"SELECT {', '.join(exprs) or 'NULL'} FROM {self._table_ref(plan.name, schema)} "
        sql += f"WHERE {self._quote(plan.filter_column)} = ?"
        if plan.primary_key:
            sql += " ORDER BY " + ", ".join(self._quote(c) for c in plan.primary_key)
        batches = (
            _to_batch(rows, arrow_schema, mappings) for rows in self._rows(sql, [tenant_id])
        )
        return TableStream(plan=plan, schema=arrow_schema, batches=batches)

    def _mappings(
        self, plan: TablePlan, tenant_id: str, schema: str | None
    ) -> list[ColumnMapping]:
        if not self.is_sqlite:
            return [postgres_mapping(c.declared) for c in plan.columns]
        if not plan.columns:
            return []
        probes = ", ".join(
            f"group_concat(DISTINCT typeof({self._quote(c.name)}))" for c in plan.columns
        )
        sql = f"SELECT {probes} FROM {self._table_ref(plan.name, schema)} "
        sql += f"WHERE {self._quote(plan.filter_column)} = ?"
        row = self._conn.execute(sql, (tenant_id,)).fetchone()
        return [
            sqlite_mapping(c.declared_text, set((classes or "").split(",")) - {""})
            for c, classes in zip(plan.columns, row, strict=True)
        ]


def _to_batch(
    rows: list[tuple[Any, ...]], schema: pa.Schema, mappings: list[ColumnMapping]
) -> pa.RecordBatch:
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
