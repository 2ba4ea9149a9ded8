"""What a restore benchmark checks in the database it restored: row counts per table and a
fingerprint of every column of ``members``, compared with the source tenant's (SQLite)."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from common import BIG_TENANT, BenchError, Platform

TABLES = ("tenants", "members", "documents")

MEMBERS_FINGERPRINT_SQL = """
SELECT count(*), total(id), total(length(email)), count(display_name),
       total(length(display_name)), total(age), sum(typeof(age) = 'integer'),
       total(CAST(round(balance * 100) AS INTEGER)), sum(typeof(balance) = 'real'),
       total(length(created_at)), total(is_active), count(notes), total(length(notes)),
       sum(typeof(avatar_hash) = 'blob'), total(length(avatar_hash))
FROM members {where}
"""


def table_counts(db: Path, tenant: str | None) -> dict[str, int]:
    """Rows per table; only the tenant's when ``tenant`` is given (the source database)."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        counts: dict[str, int] = {}
        for table in TABLES:
            column = "id" if table == "tenants" else "tenant_id"
            where = f" WHERE {column} = ?" if tenant else ""
            row = conn.execute(f"SELECT count(*) FROM {table}{where}",
                               (tenant,) if tenant else ()).fetchone()
            counts[table] = int(row[0])
        return counts
    finally:
        conn.close()


def members_fingerprint(db: Path, tenant: str | None) -> tuple[Any, ...]:
    """Aggregates over every column of ``members`` (the tenant's rows only in the source)."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        where = "WHERE tenant_id = ?" if tenant else ""
        row = conn.execute(MEMBERS_FINGERPRINT_SQL.format(where=where),
                           (tenant,) if tenant else ()).fetchone()
        return tuple(row)
    finally:
        conn.close()


def check_restored(name: str, db: Path, plat: Platform, expected: dict[str, int],
                   warnings: list[str]) -> int:
    """Row counts must equal the source's (else BenchError); content differences are noted."""
    counts = table_counts(db, None)
    if counts != expected:
        raise BenchError(f"{name}: restored row counts {counts}, the source has {expected}")
    if members_fingerprint(db, None) != members_fingerprint(plat.db, BIG_TENANT):
        warnings.append(f"{name}: restored members differ from the source in content "
                        "(counts, lengths, sums or storage classes of some column)")
    return sum(counts.values())
