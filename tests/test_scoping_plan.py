"""A table reaching the tenant through two relations that are both columns of its composite key
(``group_members(group_id, member_id)``) is read with one index range per parent key, never by
probing every pair of the two parents' keys: SQLite's planner would otherwise turn
``group_id IN (...) AND member_id IN (...)`` into len(groups) x len(members) index lookups
(12k x 120k for a tenant of the benchmark's 1M rows: the export never finished). The rows and
their order are those of the plain query."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from sources.catalog import discover
from sources.catalog_config import CatalogConfig
from sources.database import Snapshot, open_engine
from sources.scoping import Owned
from sources.tenants import tenant_key

SCHEMA = """
CREATE TABLE tenants (id TEXT PRIMARY KEY);
CREATE TABLE groups (id INTEGER PRIMARY KEY, tenant_id TEXT NOT NULL REFERENCES tenants (id));
CREATE INDEX ix_groups_tenant_id ON groups (tenant_id);
CREATE TABLE members (id INTEGER PRIMARY KEY, tenant_id TEXT NOT NULL REFERENCES tenants (id));
CREATE INDEX ix_members_tenant_id ON members (tenant_id);
CREATE TABLE group_members (
    group_id INTEGER NOT NULL REFERENCES groups (id),
    member_id INTEGER NOT NULL REFERENCES members (id),
    role TEXT,
    PRIMARY KEY (group_id, member_id)
);
CREATE INDEX ix_group_members_member_id ON group_members (member_id);
"""


def _platform(path: Path) -> None:
    with sqlite3.connect(path) as db:
        db.executescript(SCHEMA)
        db.executemany("INSERT INTO tenants VALUES (?)", [("a",), ("b",)])
        db.executemany("INSERT INTO groups VALUES (?, ?)",
                       [(i, "ab"[i % 2]) for i in range(1, 201)])
        db.executemany("INSERT INTO members VALUES (?, ?)",
                       [(i, "ab"[i % 2]) for i in range(1, 401)])
        rows = [(g, m, f"r{g}-{m}") for g in range(1, 201) for m in range(g % 2 + 1, 401, 37)]
        rows.append((2, 1, "cross-tenant"))  # group of b, member of a: nobody's
        db.executemany("INSERT OR IGNORE INTO group_members VALUES (?, ?, ?)", rows)


def test_two_relations_of_a_composite_key_do_not_probe_every_pair(tmp_path: Path) -> None:
    path = tmp_path / "platform.sqlite"
    _platform(path)
    engine = open_engine(f"sqlite:///{path}")
    catalog = discover(engine, CatalogConfig())
    plan = next(p for p in catalog.tables if p.name == "group_members")
    with Snapshot(engine) as snap:
        key = tenant_key(catalog, snap, "b")
        owned = Owned(snap.sql, key)
        where = owned.where(plan.effective_scope, "t")
        with sqlite3.connect(path) as db:
            steps = [row[3] for row in db.execute(
                f"EXPLAIN QUERY PLAN SELECT * FROM group_members t WHERE {where} "
                "ORDER BY t.group_id, t.member_id", owned.params)]
        batches = list(snap.read_table(plan, key).batches)
    assert not any("group_id=? AND member_id=?" in step for step in steps), steps
    got = [(r["group_id"], r["member_id"], r["role"]) for b in batches for r in b.to_pylist()]
    with sqlite3.connect(path) as db:
        expected = db.execute(
            "SELECT gm.* FROM group_members gm JOIN groups g ON g.id = gm.group_id "
            "JOIN members m ON m.id = gm.member_id WHERE g.tenant_id = 'b' "
            "AND m.tenant_id = 'b' ORDER BY gm.group_id, gm.member_id").fetchall()
    assert got == expected
    assert len(got) == 500
    assert all(role != "cross-tenant" for _, _, role in got)
