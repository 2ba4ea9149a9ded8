"""The control database: one per installation (ledger, audit trail, registries, tokens).

Every store in it opens its engine here, so they agree on the URL rules (plain
``postgresql://`` means psycopg 3; a SQLite file's folder is created) and on how a failure to
reach it is reported (``ControlDbError``, naming the database without its password).
"""

from __future__ import annotations

import os
from pathlib import Path

from sqlalchemy import Engine, MetaData, create_engine, event
from sqlalchemy.exc import SQLAlchemyError

from kernel.dburl import describe_url, error_reason, normalize_url
from kernel.errors import ControlDbError


def open_control(url: str, metadata: MetaData) -> Engine:
    """An engine on the control database with ``metadata``'s tables created if missing."""
    parsed = normalize_url(url)
    sqlite = parsed.get_backend_name() == "sqlite"
    if sqlite and parsed.database not in (None, "", ":memory:"):
        try:
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
            # tokens, cases and holds live here: owner-only from the start (SQLite gives its
            # -wal and -shm files the database file's permissions)
            os.close(os.open(parsed.database, os.O_CREAT | os.O_RDWR, 0o600))
        except OSError as err:
            raise ControlDbError(f"cannot create the folder of the control database "
                                 f"{describe_url(parsed)}: {err.strerror or err}") from err
    engine = create_engine(parsed, connect_args={"timeout": 30} if sqlite else {
        "connect_timeout": 10})
    if sqlite:
        event.listen(engine, "connect", _sqlite_pragmas)
    for attempt in range(3):
        try:
            metadata.create_all(engine)
            break
        except SQLAlchemyError as err:
            # two processes creating the same table at once: the loser sees "already
            # exists" (check-then-create is not atomic); the next check finds the table
            if "already exists" in str(err) and attempt < 2:
                continue
            engine.dispose()
            raise ControlDbError(f"cannot open the control database {describe_url(parsed)}: "
                                 f"{error_reason(err)}") from err
    return engine


def _sqlite_pragmas(dbapi_connection: object, _record: object) -> None:
    """WAL lets the CLI, serve and workers read while one of them writes."""
    cursor = dbapi_connection.cursor()  # type: ignore[attr-defined] # a sqlite3.Connection
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()
