"""The awkward-values platform: the same hostile data in SQLite and in PostgreSQL.

Tenant ``t-1`` holds every awkward value; ``t-2`` holds look-alike rows that must never appear
in ``t-1``'s export; ``t-empty`` exists with no rows and no documents. ``audit_global`` has no
tenant column and is marked shared (never exported); ``members.password_hash`` is excluded by
the catalog. Document keys (``t1/...``) sit under no ``tenants/{tenant_id}/`` prefix, so the
catalog says so explicitly (``keys_tenant_scoped = false``).
"""

from __future__ import annotations

import itertools
import os
import sqlite3
from datetime import UTC, date, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

TENANTS = [("t-1", "Tenant One"), ("t-2", "Tenant Two"), ("t-empty", "Nobody home")]

STRINGS: list[str | None] = [
    None, "", "plain", "unicode ünï 日本語 🎉 ẞ", "line1\nline2\r\nline3\r", 'quote " and, comma',
    "=1+2", "+49 170 0000", "-5", "@SUM(A1)", " spaced ", "tab\there", "NULL", "\\N", '""',
    "ä" * 3000,
]
INTS: list[int | None] = [2**63 - 1, -(2**63), 0, None, 7, -1]
FLOATS: list[float | None] = [0.1, 1e-300, -0.0, 5e-324, 1.7976931348623157e308, 1 / 3, None,
                              float("inf"), 123456789.0]
NUMERICS: list[str | None] = ["0.1", "12345678901234567890.0123456789", "-0.0000000001", None, "0"]
BOOLS: list[bool | None] = [True, False, None]
TIMESTAMPS: list[datetime | None] = [
    datetime(2026, 3, 29, 1, 30, tzinfo=timezone(timedelta(hours=1))),
    datetime(2026, 10, 25, 2, 30, tzinfo=ZoneInfo("Europe/Berlin")),
    datetime(1969, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
    None,
    datetime(2026, 11, 26, 10, 15, tzinfo=timezone(timedelta(hours=-9, minutes=-30))),
]
LOCAL_TS: list[datetime | None] = [datetime(2026, 1, 1, 0, 0), None, datetime(1999, 12, 31, 23, 59, 59, 5)]
DATES: list[date | None] = [date(2026, 2, 28), date(1900, 1, 1), None]
BLOBS: list[bytes | None] = [b"", b"\x00\xff binary\r\n", bytes(range(256)), None]
JSONS: list[str | None] = ['{"a": [1, 2.5, "x"], "b": null}', None, '"just a string"']

# SQLite only: one INTEGER column and one untyped column holding several storage classes.
MIXED_INTEGER: list[object] = [7, "abc", 3.5, 2**63 - 1, None, "007x", -0.5]
MIXED_UNTYPED: list[object] = ["hello", 42, 1.5, None, "line\nbreak", b"\x00\x01"]

# (tenant, document id, filename, key, blob or None for a lost blob)
DOCUMENTS: list[tuple[str, int, str, str, bytes | None]] = [
    ("t-1", 1, "report.pdf", "t1/report", os.urandom(3 * 1024 * 1024 + 17)),
    ("t-1", 2, "../../etc/passwd", "t1/passwd", b"root:x:0:0\n"),
    ("t-1", 3, "dup.txt", "t1/dup-a", b"first dup"),
    ("t-1", 4, "DUP.txt", "t1/dup-b", b"second dup, same name ignoring case"),
    ("t-1", 5, "", "t1/noname", b"no name at all"),
    ("t-1", 6, "missing.pdf", "t1/missing", None),
    ("t-1", 7, "empty.bin", "t1/empty", b""),
    ("t-1", 8, "Cafe\u0301\x07 C:\\evil\\name.txt", "t1/nfd", "NFD ✓".encode()),
    ("t-1", 9, "/abs/path.txt", "t1/abs", os.urandom(70_000)),
    ("t-2", 10, "t2-secret.txt", "t2/secret", b"tenant two secret"),
]

PG_DDL = """
CREATE TABLE tenants (id text PRIMARY KEY, name text);
CREATE TABLE members (
    id bigint PRIMARY KEY, tenant_id text NOT NULL, name text, note text,
    balance numeric(40,10), score double precision, ratio real, big bigint, active boolean,
    joined timestamptz, local_ts timestamp, born date, avatar bytea, password_hash text,
    profile jsonb
);
CREATE TABLE "select" (id integer PRIMARY KEY, tenant_id text, "from" text, "order" integer,
                       "group" text);
CREATE TABLE documents (id integer PRIMARY KEY, tenant_id text, filename text, storage_key text);
CREATE TABLE audit_global (id integer PRIMARY KEY, message text);
"""

SQLITE_DDL = """
CREATE TABLE tenants (id TEXT PRIMARY KEY, name TEXT);
CREATE TABLE members (
    id INTEGER PRIMARY KEY, tenant_id TEXT NOT NULL, name TEXT, note TEXT, balance NUMERIC,
    score REAL, ratio REAL, big INTEGER, active BOOLEAN, joined TIMESTAMP, local_ts TEXT,
    born DATE, avatar BLOB, password_hash TEXT, profile TEXT
);
CREATE TABLE "select" (id INTEGER PRIMARY KEY, tenant_id TEXT, "from" TEXT, "order" INTEGER,
                       "group" TEXT);
CREATE TABLE documents (id INTEGER PRIMARY KEY, tenant_id TEXT, filename TEXT, storage_key TEXT);
CREATE TABLE audit_global (id INTEGER PRIMARY KEY, message TEXT);
CREATE TABLE loose (id INTEGER PRIMARY KEY, tenant_id TEXT, mixed INTEGER, anything);
"""

CATALOG = """
tenant_column = "tenant_id"
[tables.members]
exclude_columns = ["password_hash"]
[tables.audit_global]
shared = true
reason = "the platform's own audit log: it mentions every tenant"
[documents]
keys_tenant_scoped = false
"""


def _cycle(values: list[object], n: int) -> list[object]:
    return list(itertools.islice(itertools.cycle(values), n))


def member_rows(sqlite: bool) -> list[tuple[object, ...]]:
    n = max(len(STRINGS), len(FLOATS), len(TIMESTAMPS))
    cols = [
        _cycle(STRINGS, n), _cycle(list(reversed(STRINGS)), n), _cycle(NUMERICS, n),
        _cycle(FLOATS, n), _cycle([0.1, None, 3.25, -1e10], n), _cycle(INTS, n),
        _cycle(BOOLS, n), _cycle(TIMESTAMPS, n), _cycle(LOCAL_TS, n), _cycle(DATES, n),
        _cycle(BLOBS, n), _cycle(JSONS, n),
    ]
    rows: list[tuple[object, ...]] = []
    for i in range(n):
        values = [c[i] for c in cols]
        if sqlite:
            values = [_sqlite_value(v) for v in values]
        tenant = "t-1"
        rows.append((i + 1, tenant, *values[:9], values[9], values[10], f"hash-{i}", values[11]))
    for j in range(3):
        rows.append((1000 + j, "t-2", f"t2-name-{j}", "t2-note", "99", 9.5, 1.5, 99, True,
                     _sqlite_value(TIMESTAMPS[0]) if sqlite else TIMESTAMPS[0], None, None,
                     b"t2", "t2-hash", None))
    return rows


def _sqlite_value(value: object) -> object:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, bool):
        return int(value)
    return value


def select_rows() -> list[tuple[object, ...]]:
    return [
        (1, "t-1", "from-value", 1, "group,with,commas"),
        (2, "t-1", None, None, ""),
        (3, "t-2", "t2-from", 3, "t2"),
    ]


def create_sqlite(path: str) -> None:
    with sqlite3.connect(path) as db:
        db.executescript(SQLITE_DDL)
        _fill(db, "?", sqlite=True)
        for i, (a, b) in enumerate(zip(MIXED_INTEGER, _cycle(MIXED_UNTYPED, len(MIXED_INTEGER)),
                                       strict=True)):
            db.execute("INSERT INTO loose VALUES (?, 't-1', ?, ?)", (i + 1, a, b))
        db.execute("INSERT INTO loose VALUES (100, 't-2', 'leak', 'leak')")


def create_postgres(url: str) -> None:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("DROP SCHEMA public CASCADE; CREATE SCHEMA public")
        conn.execute(PG_DDL)
        with conn.cursor() as cur:
            _fill(cur, "%s", sqlite=False)


def _fill(db: object, mark: str, *, sqlite: bool) -> None:
    execute = db.execute  # type: ignore[attr-defined]

    def insert(table: str, rows: list[tuple[object, ...]]) -> None:
        for row in rows:
            marks = ", ".join([mark] * len(row))
            execute(f'INSERT INTO {table} VALUES ({marks})', row)

    insert("tenants", TENANTS)
    insert("members", member_rows(sqlite))
    insert('"select"', select_rows())
    insert("documents", [(d[1], d[0], d[2], d[3]) for d in DOCUMENTS])
    insert("audit_global", [(1, "global secret: t-1 and t-2 both appear here")])


def blobs() -> dict[str, bytes]:
    return {key: content for _, _, _, key, content in DOCUMENTS if content is not None}
