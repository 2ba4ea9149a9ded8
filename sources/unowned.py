"""The counts of rows no tenant gets, made beside the export's reads on a connection of their own.

Each count resolves the owner of every row of a table over the whole platform (every tenant's
rows: :func:`sources.scoping.unowned_counts`), so made between tables on the snapshot's own
connection they were about a seventh of a million-row export. :class:`UnownedAhead` runs the
very same statements, table after table in the catalog's order, on a thread with a second
connection that reads the snapshot's instant (``Snapshot.unowned_ahead`` opens it): SQLite's
library (which lets go of the GIL while it steps) or PostgreSQL's server works while this
process writes the CSV and the workbooks. The numbers are exactly those the snapshot's own
connection would give; ``get`` waits for a table's count, and raises its error, if any, there.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any

_SNAPSHOT_ID = re.compile(r"[0-9A-Fa-f]+(-[0-9A-Fa-f]+)+")


@dataclass(frozen=True)
class SideConnection:
    """A second connection at the snapshot's instant, used by one thread at a time.

    Args:
        count: runs one statement and returns its (cross-tenant, orphan) row.
        interrupt: stops the statement running now (callable from any thread).
        release: ends the transaction and gives the connection back (once the thread ended).
        translate: a driver error as the source's error, naming what was read.
    """

    count: Callable[[str], tuple[int, int]]
    interrupt: Callable[[], None]
    release: Callable[[], None]
    translate: Callable[[BaseException, str], Exception]


class UnownedAhead:
    """``get(table)``: the table's (cross-tenant, orphan) rows, computed ahead in order.

    Args:
        statements: per table name, in the order the tables are asked for, its statement
            (None: no row of it can be unowned, the count is (0, 0)).
        side: the connection the thread uses; released by ``close``.
    """

    def __init__(self, statements: Sequence[tuple[str, str | None]],
                 side: SideConnection) -> None:
        self._statements = list(statements)
        self._side = side
        self._done: dict[str, tuple[int, int]] = {}
        self._error: tuple[str, BaseException] | None = None
        self._cond = threading.Condition()
        self._stop = False
        self._thread = threading.Thread(target=self._run, name="unowned-counts", daemon=True)
        self._thread.start()

    def get(self, table: str) -> tuple[int, int]:
        """The table's counts, once computed (waits); raises the error that stopped them."""
        if table not in {name for name, _ in self._statements}:
            raise KeyError(f"no unowned count was started for table {table!r}")
        with self._cond:
            while table not in self._done and self._error is None:
                self._cond.wait()
            if table in self._done:
                return self._done[table]
            assert self._error is not None
            failed, error = self._error
        raise self._side.translate(error, f"table {failed!r} (its rows no tenant gets)"
                                   ) from error

    def close(self) -> None:
        """Stop the thread (interrupting a statement still running) and release the
        connection."""
        with self._cond:
            self._stop = True
            running = self._thread.is_alive() and len(self._done) < len(self._statements)
        if running:
            self._side.interrupt()
        self._thread.join()
        self._side.release()

    def __enter__(self) -> UnownedAhead:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def _run(self) -> None:
        for table, statement in self._statements:
            with self._cond:
                if self._stop:
                    return
            try:
                counts = (0, 0) if statement is None else self._side.count(statement)
            except BaseException as err:  # noqa: BLE001 - raised by ``get`` in the caller
                with self._cond:
                    self._error = (table, err)
                    self._cond.notify_all()
                return
            with self._cond:
                self._done[table] = counts
                self._cond.notify_all()


def open_sqlite_side(raw: Any, translate: Callable[[BaseException, str], Exception]
                     ) -> SideConnection:
    """A pool connection (``raw``, SQLAlchemy's) to the SQLite file in a read transaction that
    holds its snapshot. The caller opens it inside the window in which it proves the
    snapshot's connection reads the same state (``sources.arrowread.open_sqlite_pair``)."""
    conn = raw.driver_connection
    try:
        conn.isolation_level = None  # BEGIN is issued here
        conn.execute("BEGIN")
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
        _usable_from_a_thread(conn)
    except BaseException:
        raw.invalidate()
        raw.close()
        raise

    def release() -> None:
        try:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            conn.isolation_level = ""
        except Exception:  # noqa: BLE001 - a broken connection is discarded
            raw.invalidate()
        finally:
            raw.close()

    return SideConnection(_counter(conn), conn.interrupt, release, translate)


def _counter(conn: Any) -> Callable[[str], tuple[int, int]]:
    """Runs one count statement on ``conn`` (either driver): its (cross-tenant, orphan) row."""

    def count(statement: str) -> tuple[int, int]:
        row = conn.execute(statement, ()).fetchone()
        return (int(row[0]), int(row[1])) if row else (0, 0)

    return count


def _usable_from_a_thread(conn: Any) -> None:
    """Raise the driver's error if ``conn`` refuses another thread (``check_same_thread``, which
    SQLAlchemy turns off for a file database unless the URL turns it back on)."""
    failed: list[BaseException] = []

    def probe() -> None:
        try:
            conn.execute("SELECT 1").fetchone()
        except BaseException as err:  # noqa: BLE001 - raised on the caller's thread
            failed.append(err)

    thread = threading.Thread(target=probe, name="unowned-probe")
    thread.start()
    thread.join()
    if failed:
        raise failed[0]


def open_postgres_side(raw: Any, snapshot_id: str, session: Sequence[str],
                       translate: Callable[[BaseException, str], Exception]) -> SideConnection:
    """A pool connection (``raw``) in a read-only repeatable-read transaction that adopted the
    snapshot's exported ``snapshot_id``, with the snapshot's session settings."""
    import psycopg  # noqa: PLC0415 - only needed for PostgreSQL

    if not _SNAPSHOT_ID.fullmatch(snapshot_id):
        raw.close()
        raise ValueError(f"unexpected snapshot identifier {snapshot_id!r}")
    conn = raw.driver_connection
    try:
        conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        conn.read_only = True
        conn.execute(f"SET TRANSACTION SNAPSHOT '{snapshot_id}'")
        for statement in session:
            conn.execute(statement)
    except BaseException:
        raw.invalidate()
        raw.close()
        raise

    def release() -> None:
        try:
            conn.rollback()
            conn.isolation_level = None
            conn.read_only = None
        except Exception:  # noqa: BLE001 - a broken connection is discarded
            raw.invalidate()
        finally:
            raw.close()

    return SideConnection(_counter(conn), conn.cancel_safe, release, translate)
