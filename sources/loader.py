"""Loading a snapshot's Arrow tables into a database (restores), undoing the sources' text
renderings.

The mirror of :mod:`sources.database`: the same dialect knowledge (SQLite's storage classes,
PostgreSQL types read as text) runs the other way. Every restore mode writes inside one
:func:`transaction`, so a failed or refused load leaves the target as it was. What each mode
does with it: :mod:`sources.ddl` (an empty database), :mod:`sources.existing` (a schema the
platform's migrations made), :mod:`sources.inplace` (one tenant of the live platform).
"""

from __future__ import annotations

import base64
import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
from sqlalchemy import Engine, create_engine, inspect
from sqlalchemy.exc import SQLAlchemyError

from kernel.arrowmeta import META_STORAGE_CLASSES, META_TYPE_OF
from kernel.dburl import describe_url, driver_errors, error_reason, normalize_url
from kernel.errors import BadInput, SourceUnavailable
from sources.tables import ForeignKey

# How the sources rendered values as text (sources.database): parsed back the same way.
_PG_SESSION = (
    "SET LOCAL TIME ZONE 'UTC'",
    "SET LOCAL DateStyle = 'ISO, YMD'",
    "SET LOCAL IntervalStyle = 'postgres'",
    "SET CONSTRAINTS ALL DEFERRED",  # the platform's DEFERRABLE constraints: checked at commit
)


@dataclass(frozen=True)
class TableLoad:
    """One table of a snapshot: its Arrow schema, keys and relations (as the manifest records
    them), the rows it must end with, and its batches (decrypted on demand, once per call)."""

    name: str
    schema: pa.Schema
    primary_key: tuple[str, ...]
    expected_rows: int
    batches: Callable[[], Iterator[pa.RecordBatch]]
    not_null: tuple[str, ...] = ()
    foreign_keys: tuple[ForeignKey, ...] = ()
    db_schema: str | None = None  # where the backup read it, when the manifest says

    @property
    def columns(self) -> tuple[str, ...]:
        """The table's own columns (SQLite storage-class companions are not columns)."""
        return tuple(f.name for f in self.schema if META_TYPE_OF not in (f.metadata or {}))


def load_order(tables: Sequence[TableLoad]) -> list[TableLoad]:
    """Every table after the tables it references (self and circular references ignored), and
    otherwise in the given order: a manifest without relations restores in its own order."""
    todo = list(tables)
    ordered: list[TableLoad] = []
    while todo:
        pending = {t.name for t in todo}
        ready = next((t for t in todo if not any(
            fk.parent in pending and fk.parent != t.name for fk in t.foreign_keys)), todo[0])
        ordered.append(ready)
        todo.remove(ready)
    return ordered


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


def is_new_file(engine: Engine) -> bool:
    """Whether the target is a SQLite file that does not exist yet (inspecting would create
    it)."""
    return engine.dialect.name == "sqlite" and not Path(engine.url.database or "").exists()


def taken_names(engine: Engine) -> set[str]:
    """Tables and views of the target, case-folded (SQLite ignores case in names)."""
    if is_new_file(engine):
        return set()
    inspector = inspect(engine)
    return {n.casefold() for n in [*inspector.get_table_names(), *inspector.get_view_names()]}


class Transaction:
    """A driver connection inside one transaction.

    Statements always run with a parameter tuple: SQLAlchemy's quoting doubles ``%`` in
    identifiers for psycopg, which undoes it only when parameters are passed.
    """

    def __init__(self, engine: Engine, raw: Any) -> None:
        self.backend = engine.dialect.name
        self.sqlite = self.backend == "sqlite"
        self.param = "?" if self.sqlite else "%s"
        self._quote = engine.dialect.identifier_preparer.quote
        self.cursor = raw.cursor()
        self._savepoints = 0

    def quote(self, name: str) -> str:
        """A quoted identifier."""
        return str(self._quote(name))

    def table(self, name: str, schema: str | None = None) -> str:
        """A quoted, schema-qualified table reference (SQLite: ``main``, never a temp
        table of the same name)."""
        if self.sqlite:
            schema = schema or "main"
        return f"{self.quote(schema)}.{self.quote(name)}" if schema else self.quote(name)

    def run(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Execute one statement; the number of rows it changed."""
        self.cursor.execute(sql, tuple(params))
        return int(self.cursor.rowcount or 0)

    def many(self, sql: str, rows: list[tuple[Any, ...]]) -> None:
        """Execute one statement for each row."""
        if rows:
            self.cursor.executemany(sql, rows)

    def rows(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Every row of a query."""
        self.cursor.execute(sql, tuple(params))
        return [tuple(r) for r in self.cursor.fetchall()]

    def scalar(self, sql: str, params: Sequence[Any] = ()) -> Any:
        """The first column of the first row of a query (None when there is none)."""
        found = self.rows(sql, params)
        return found[0][0] if found else None

    def attempt(self, work: Callable[[], Any]) -> str | None:
        """Run ``work`` under a savepoint: None if it succeeded, else the database's reason
        (its changes undone, the transaction still usable)."""
        self._savepoints += 1
        name = f"te_attempt_{self._savepoints}"
        self.run(f"SAVEPOINT {name}")
        try:
            work()
        except driver_errors() as err:
            self.run(f"ROLLBACK TO SAVEPOINT {name}")
            self.run(f"RELEASE SAVEPOINT {name}")
            return error_reason(err)
        self.run(f"RELEASE SAVEPOINT {name}")
        return None


@contextlib.contextmanager
def transaction(engine: Engine, what: str, tenant_id: str | None = None, *,
                foreign_keys_off: bool = False) -> Iterator[Transaction]:
    """One transaction on ``engine``: committed when the block ends, rolled back on any error
    (a SQLite file it created is removed). Database errors become ``SourceUnavailable``
    starting with ``what`` and carrying the database's own message.

    ``foreign_keys_off``: SQLite does not check foreign keys on this connection (an empty
    database being filled); otherwise the checks it makes wait for the commit, as PostgreSQL's
    deferrable constraints do.
    """
    sqlite = engine.dialect.name == "sqlite"
    new_file = Path(engine.url.database or "") if is_new_file(engine) else None
    raw = engine.raw_connection()
    driver: Any = raw.driver_connection
    try:
        if sqlite:  # pysqlite would commit each CREATE TABLE by itself
            driver.isolation_level = None
            if foreign_keys_off:  # only outside a transaction; otherwise as configured
                driver.execute("PRAGMA foreign_keys = OFF")
            driver.execute("BEGIN")
            driver.execute("PRAGMA defer_foreign_keys = ON")
        tx = Transaction(engine, raw)
        if not sqlite:
            for statement in _PG_SESSION:
                tx.run(statement)
        yield tx
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
            raise SourceUnavailable(f"{what}: {error_reason(failure)}",
                                    tenant_id=tenant_id) from failure
        raise
    finally:
        if sqlite:
            with contextlib.suppress(Exception):
                driver.isolation_level = ""
        raw.close()


class RowConverter:
    """A snapshot table's batches as driver rows, each value in its original storage class
    (a SQLite companion column gives the class of each value of a mixed column)."""

    def __init__(self, schema: pa.Schema) -> None:
        self.fields = [f for f in schema if META_TYPE_OF not in (f.metadata or {})]
        self.companions = {
            (f.metadata or {})[META_TYPE_OF].decode(): f.name
            for f in schema if META_TYPE_OF in (f.metadata or {})}

    @property
    def columns(self) -> list[str]:
        """The table's own columns, in order."""
        return [f.name for f in self.fields]

    def rows(self, batch: pa.RecordBatch) -> list[tuple[Any, ...]]:
        """The batch's rows as driver values."""
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


def insert_sql(tx: Transaction, table: str, columns: Sequence[str]) -> str:
    """A parameterised ``INSERT`` of ``columns`` into the quoted table reference ``table``."""
    names = ", ".join(tx.quote(c) for c in columns)
    marks = ", ".join(tx.param for _ in columns)
    return f"INSERT INTO {table} ({names}) VALUES ({marks})"


def fill(tx: Transaction, table: str, load: TableLoad) -> int:
    """Insert every row of ``load`` into ``table`` (a quoted reference); rows inserted."""
    converter = RowConverter(load.schema)
    statement = insert_sql(tx, table, converter.columns)
    written = 0
    for batch in load.batches():
        rows = converter.rows(batch)
        tx.many(statement, rows)
        written += len(rows)
    return written


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
