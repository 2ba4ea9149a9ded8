"""The platform in SQLite: one transaction of ``executemany`` batches, indexes after the data.

Enums, JSON and arrays are TEXT (arrays as JSON text), citext is ``COLLATE NOCASE``; foreign
keys are declared but, as SQLite does by default, not enforced while loading.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path

from .build import platform
from .model import Model, Owned, Row
from .schema import Table, render
from .spec import Platform, PlatformSpec


def create_sqlite(path: str | Path, spec: PlatformSpec) -> Platform:
    """Create the platform in a new SQLite file (refuses to overwrite one)."""
    path = Path(path)
    if path.exists():
        raise FileExistsError(f"{path} exists: the reference platform needs a new file")
    ddl = render("sqlite")
    model = Model(spec)
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode = MEMORY")
        conn.execute("PRAGMA synchronous = OFF")
        conn.execute("BEGIN")
        for statement in ddl.create:
            conn.execute(statement)
        for table, rows in model.generate():
            marks = ", ".join("?" * len(table.columns))
            conn.executemany(f"INSERT INTO {table.name} VALUES ({marks})", _values(table, rows))
        for statement in (*ddl.post, *ddl.views):
            conn.execute(statement)
        conn.execute("COMMIT")
        conn.execute("PRAGMA journal_mode = DELETE")
    except BaseException:
        conn.close()
        path.unlink(missing_ok=True)
        raise
    conn.close()
    return platform(model, "sqlite", str(path))


def _values(table: Table, rows: Owned) -> Iterator[Row]:
    arrays = [i for i, c in enumerate(table.columns) if c.type == "labels"]
    for _, row in rows:
        if arrays:
            cells = list(row)
            for i in arrays:
                if cells[i] is not None:
                    cells[i] = json.dumps(cells[i], ensure_ascii=False)
            row = tuple(cells)  # noqa: PLW2901
        yield row
