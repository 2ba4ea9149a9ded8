"""Loading Arrow tables back into a database (restores), undoing the sources' text renderings.

The mirror of :mod:`sources.database`: the same dialect knowledge (SQLite's storage classes,
PostgreSQL types read as text) runs the other way. Everything happens in one transaction, with
row counts checked before the commit, so a failed load leaves the target as it was.
"""

from __future__ import annotations

import base64
import contextlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
from sqlalchemy import Engine, create_engine, inspect
from sqlalchemy.exc import SQLAlchemyError

from kernel.arrowmeta import META_SOURCE_TYPE, META_STORAGE_CLASSES, META_TYPE_OF
from kernel.dburl import describe_url, driver_errors, error_reason, normalize_url
from kernel.errors import BadInput, SourceUnavailable, VerificationFailed

_TEXT_TYPES = ("TEXT", "VARCHAR", "CHAR", "CHARACTER", "CLOB", "STRING")


@dataclass(frozen=True)
class TableLoad:
    """One table to create and fill: its schema, key, expected rows and a batch source."""

    name: str
    schema: pa.Schema
    primary_key: tuple[str, ...]
    expected_rows: int
    batches: Callable[[], Iterator[pa.RecordBatch]]


def open_target(url: str, tenant_id: str | None = None) -> Engine:
    """An engine on the restore target, reached once; nothing is created on a refusal.

    A SQLite target file that does not exist yet is fine (the load creates it), but its folder
    must exist; the file itself is only created by the load.
    """
    parsed = normalize_url(url)
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database or ""
        if database in ("", ":memory:"):
            raise BadInput("restore target must be a SQLite file, not an in-memory database",
                           tenant_id=tenant_id)
        if not Path(database).parent.is_dir():
            raise BadInput(f"restore target folder {Path(database).parent} does not exist",
                           tenant_id=tenant_id)
    engine = create_engine(parsed)
    if parsed.get_backend_name() == "sqlite" and not Path(parsed.database or "").exists():
        return engine  # an empty new file: nothing to reach yet
    try:
        with engine.connect():
            pass
    except SQLAlchemyError as err:
        engine.dispose()
        raise SourceUnavailable(f"cannot reach target database {describe_url(parsed)}: "
                                f"{error_reason(err)}", tenant_id=tenant_id) from err
    return engine


def taken_names(engine: Engine) -> set[str]:
    """Tables and views of the target, case-folded (SQLite ignores case in names)."""
    if engine.dialect.name == "sqlite" and not Path(engine.url.database or "").exists():
        return set()  # inspecting would create the file
    inspector = inspect(engine)
    return {n.casefold() for n in [*inspector.get_table_names(), *inspector.get_view_names()]}


def load_tables(engine: Engine, source_backend: str, tables: Iterable[TableLoad],
                tenant_id: str | None = None, *,
                before_commit: Callable[[], None] | None = None) -> dict[str, int]:
    """Create and fill every table in one transaction; row counts checked before commit.

    ``before_commit`` runs once every table is loaded and counted, just before the commit (a
    restore publishes its documents there); if it raises, nothing is committed.
    """
    url = engine.url
    same_backend = engine.dialect.name == source_backend
    rows: dict[str, int] = {}
    sqlite = engine.dialect.name == "sqlite"
    target_file = Path(url.database or "")
    new_file = target_file if sqlite and not target_file.exists() else None
    raw = engine.raw_connection()
    driver: Any = raw.driver_connection
    if sqlite:  # pysqlite would commit each CREATE TABLE by itself
        driver.isolation_level = None
        driver.execute("BEGIN")
    try:
        cursor = raw.cursor()
        for table in tables:
            loader = TableLoader(engine.dialect, table.name, table.schema, same_backend,
                                 list(table.primary_key))
            cursor.execute(loader.create_sql())
            for batch in table.batches():
                cursor.executemany(loader.insert_sql(), loader.rows(batch))
            cursor.execute(f"SELECT count(*) FROM {loader.plain_table}")
            counted = cursor.fetchone()
            rows[table.name] = int(counted[0]) if counted else 0
            if rows[table.name] != table.expected_rows:
                raise VerificationFailed(f"table {table.name!r}: restored {rows[table.name]} "
                                         f"rows, the manifest has {table.expected_rows}",
                                         tenant_id=tenant_id)
        if before_commit is not None:
            before_commit()
        if sqlite:
            driver.execute("COMMIT")
        else:
            raw.commit()
    except BaseException as failure:
        with contextlib.suppress(Exception):
            if sqlite:
                driver.execute("ROLLBACK")
            else:
                raw.rollback()
        if new_file is not None:  # the file this failed load created holds nothing of use
            raw.close()
            engine.dispose()
            new_file.unlink(missing_ok=True)
        if isinstance(failure, (SQLAlchemyError, *driver_errors())):
            raise SourceUnavailable(f"restoring into {describe_url(url)}: "
                                    f"{error_reason(failure)}", tenant_id=tenant_id) from failure
        raise
    finally:
        raw.close()
    return rows


class TableLoader:
    """DDL and rows for one table in the target, undoing the export's text renderings."""

    def __init__(self, dialect: Any, name: str, schema: pa.Schema, same_backend: bool,
                 primary_key: list[str]) -> None:
        self.dialect = dialect
        self.quote = dialect.identifier_preparer.quote
        self.table = self.quote(name)  # in parameterised statements (psycopg doubles %)
        self.plain_table = self.table.replace("%%", "%") if dialect.name != "sqlite" else (
            self.table)
        self.fields = [f for f in schema if META_TYPE_OF not in (f.metadata or {})]
        self.companions = {
            (f.metadata or {})[META_TYPE_OF].decode(): f.name
            for f in schema if META_TYPE_OF in (f.metadata or {})}
        self.same_backend = same_backend
        # PostgreSQL only: in SQLite an INTEGER PRIMARY KEY becomes the rowid and would refuse
        # or renumber values that SQLite's loose typing let the source keep
        self.primary_key = [c for c in primary_key if c in {f.name for f in self.fields}] if (
            dialect.name != "sqlite") else []
        self.param = "?" if dialect.name == "sqlite" else "%s"

    def _declared(self, field: pa.Field) -> str:
        declared = str((field.metadata or {}).get(META_SOURCE_TYPE, b"").decode())
        if self.same_backend and declared and declared != "NullType":
            return declared
        kind = field.type
        if pa.types.is_integer(kind):
            return "BIGINT"
        if pa.types.is_floating(kind):
            return "REAL" if self.dialect.name == "sqlite" else "DOUBLE PRECISION"
        if pa.types.is_boolean(kind):
            return "BOOLEAN"
        if pa.types.is_binary(kind):
            return "BLOB" if self.dialect.name == "sqlite" else "BYTEA"
        return "" if self.dialect.name == "sqlite" else "TEXT"

    def create_sql(self) -> str:
        """``CREATE TABLE`` with the declared types (same backend) or their nearest kin."""
        quote = self._plain_quote
        columns = [f"{quote(f.name)} {self._declared(f)}".rstrip() for f in self.fields]
        if self.primary_key:
            columns.append(f"PRIMARY KEY ({', '.join(quote(c) for c in self.primary_key)})")
        return f"CREATE TABLE {self.plain_table} ({', '.join(columns)})"

    def _plain_quote(self, name: str) -> str:
        """Quoted for a statement run without parameters (no ``%`` doubling)."""
        quoted = str(self.quote(name))
        return quoted.replace("%%", "%") if self.dialect.name != "sqlite" else quoted

    def insert_sql(self) -> str:
        """A parameterised ``INSERT`` of every column."""
        names = ", ".join(self.quote(f.name) for f in self.fields)
        marks = ", ".join(self._mark(f) for f in self.fields)
        return f"INSERT INTO {self.table} ({names}) VALUES ({marks})"

    def _mark(self, field: pa.Field) -> str:
        declared = self._declared(field)
        text_rendered = pa.types.is_string(field.type) and declared and not declared.upper(
        ).startswith(_TEXT_TYPES)
        if self.dialect.name == "postgresql" and text_rendered:
            return f"CAST({self.param} AS {declared})"
        return self.param

    def rows(self, batch: pa.RecordBatch) -> list[tuple[Any, ...]]:
        """The batch's rows as driver values, each in its original storage class."""
        columns: list[list[Any]] = []
        for field in self.fields:
            values = batch.column(field.name).to_pylist()
            companion = self.companions.get(field.name)
            classes = (field.metadata or {}).get(META_STORAGE_CLASSES, b"").decode()
            if companion is not None:
                kinds = batch.column(companion).to_pylist()
                values = [_by_class(v, k) for v, k in zip(values, kinds, strict=True)]
            elif pa.types.is_string(field.type) and set(classes.split(",")) == {"integer",
                                                                               "real"}:
                values = [_number(v) for v in values]
            columns.append(values)
        return list(zip(*columns, strict=True)) if columns else []


def _by_class(text: str | None, storage: str | None) -> Any:
    if text is None or storage is None:
        return None
    if storage == "integer":
        return int(text)
    if storage == "real":
        return float(text)
    if storage == "blob":
        return base64.b64decode(text)
    return text


def _number(text: str | None) -> int | float | None:
    if text is None:
        return None
    if any(marker in text.lower() for marker in (".", "e", "inf", "nan")):
        return float(text)
    return int(text)
