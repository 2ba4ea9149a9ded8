"""sources.unowned: the counts of rows no tenant gets, made beside the reads on a second
connection, are exactly those of the snapshot's own connection (the reference platform's ground
truth, SQLite and PostgreSQL), read the snapshot's instant (a commit after it is not counted),
and a failure is raised for the table it stopped at."""

from __future__ import annotations

import sqlite3
import threading
import tomllib
from pathlib import Path
from typing import Any

import psycopg
import pytest

from kernel.errors import SourceUnavailable
from sources.catalog import Catalog, CatalogConfig, discover
from sources.database import Snapshot, open_engine
from sources.unowned import SideConnection, UnownedAhead
from tenant_export.refplatform import PlatformSpec, create_postgres, create_sqlite
from tests.services import fresh_database


def catalog_of(url: str, toml: str = "") -> Catalog:
    engine = open_engine(url)
    try:
        return discover(engine, CatalogConfig.parse(tomllib.loads(toml)))
    finally:
        engine.dispose()


def counts_both_ways(url: str, catalog: Catalog) -> tuple[dict[str, tuple[int, int]],
                                                          dict[str, tuple[int, int]]]:
    """Per table: the counts made ahead on the side connection, and made inline."""
    engine = open_engine(url)
    try:
        with Snapshot(engine, arrow=True, side=True) as snap:
            ahead = snap.unowned_ahead(catalog.tables)
            assert ahead is not None  # a side connection was opened at the snapshot's instant
            assert "*" not in snap.arrow_fallbacks  # and the ADBC reader kept its own
            with ahead:
                made_ahead = {p.name: ahead.get(p.name) for p in catalog.tables}
            inline = {p.name: snap.unowned(p) for p in catalog.tables}
        return made_ahead, inline
    finally:
        engine.dispose()


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgresql",
                                                            marks=pytest.mark.postgres)])
def test_counts_made_ahead_are_exact(backend: str, tmp_path: Path,
                                     request: pytest.FixtureRequest) -> None:
    if backend == "sqlite":
        platform = create_sqlite(tmp_path / "p.sqlite", PlatformSpec.tiny())
        url = f"sqlite:///{platform.location}"
    else:
        url = fresh_database(request.getfixturevalue("postgres_url"), "ahead")
        platform = create_postgres(url, PlatformSpec.tiny())
    catalog = catalog_of(url, platform.catalog_toml)
    made_ahead, inline = counts_both_ways(url, catalog)
    assert made_ahead == inline
    for plan in catalog.tables:
        assert made_ahead[plan.name] == (platform.cross_tenant.get(plan.name, 0),
                                         platform.orphans.get(plan.name, 0)), plan.name
    assert any(c or o for c, o in made_ahead.values())  # the platform has rows to count


NOTES = """
CREATE TABLE tenants (id TEXT PRIMARY KEY);
CREATE TABLE notes (id INTEGER PRIMARY KEY, tenant_id TEXT REFERENCES tenants(id), body TEXT);
INSERT INTO tenants VALUES ('a'), ('b');
INSERT INTO notes VALUES (1, 'a', 'x'), (2, 'b', 'y'), (3, 'gone', 'orphan');
"""


def _orphans_after_a_late_commit(url: str, commit: Any) -> tuple[int, int]:
    catalog = catalog_of(url)
    engine = open_engine(url)
    try:
        with Snapshot(engine, arrow=True, side=True) as snap:
            snap.first("SELECT count(*) FROM notes", [], "notes")  # the snapshot is taken
            commit()  # two more orphans, committed after the snapshot's instant
            ahead = snap.unowned_ahead(catalog.tables)
            assert ahead is not None and "*" not in snap.arrow_fallbacks
            with ahead:
                return ahead.get("notes")
    finally:
        engine.dispose()


def test_sqlite_counts_ahead_read_the_snapshots_instant(tmp_path: Path) -> None:
    db = tmp_path / "n.sqlite"
    with sqlite3.connect(db) as conn:
        conn.execute("PRAGMA journal_mode=WAL")  # a writer may commit while we read
        conn.executescript(NOTES)

    def commit() -> None:
        with sqlite3.connect(db) as writer:
            writer.execute("INSERT INTO notes VALUES (4, 'nobody', ''), (5, NULL, '')")

    assert _orphans_after_a_late_commit(f"sqlite:///{db}", commit) == (0, 1)
    with sqlite3.connect(db) as conn:  # the rows were committed: a new snapshot counts them
        assert conn.execute("SELECT count(*) FROM notes").fetchone()[0] == 5


@pytest.mark.postgres
def test_postgres_counts_ahead_read_the_snapshots_instant(postgres_url: str) -> None:
    url = fresh_database(postgres_url, "instant")
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(NOTES.replace("REFERENCES tenants(id)", ""))

    def commit() -> None:
        with psycopg.connect(url, autocommit=True) as writer:
            writer.execute("INSERT INTO notes VALUES (4, 'nobody', ''), (5, NULL, '')")

    assert _orphans_after_a_late_commit(url, commit) == (0, 1)


class FakeSide:
    """A side connection whose statements answer from a table, fail, or block until
    interrupted."""

    def __init__(self, answers: dict[str, Any]) -> None:
        self.answers = answers
        self.interrupted = threading.Event()
        self.released = False

    def count(self, statement: str) -> tuple[int, int]:
        answer = self.answers[statement]
        if answer == "block":
            assert self.interrupted.wait(10)
            raise sqlite3.OperationalError("interrupted")
        if isinstance(answer, BaseException):
            raise answer
        return answer  # type: ignore[no-any-return]

    def side(self) -> SideConnection:
        def translate(err: BaseException, what: str) -> Exception:
            return SourceUnavailable(f"reading {what}: {err}")

        return SideConnection(self.count, self.interrupted.set, self.release, translate)

    def release(self) -> None:
        self.released = True


def test_a_failure_is_raised_for_the_table_it_stopped_at() -> None:
    fake = FakeSide({"s1": (1, 2), "s3": sqlite3.DatabaseError("disk I/O error"), "s4": (0, 0)})
    with UnownedAhead([("t1", "s1"), ("t2", None), ("t3", "s3"), ("t4", "s4")],
                      fake.side()) as ahead:
        assert ahead.get("t1") == (1, 2)
        assert ahead.get("t2") == (0, 0)  # no statement: no row of it can be unowned
        with pytest.raises(SourceUnavailable, match=r"table 't3'.*disk I/O error"):
            ahead.get("t3")
        with pytest.raises(SourceUnavailable, match=r"table 't3'"):
            ahead.get("t4")  # never counted: the failure that stopped the counts is raised
        with pytest.raises(KeyError, match="t9"):
            ahead.get("t9")
    assert fake.released


def test_closing_interrupts_a_running_count_and_releases_the_connection() -> None:
    fake = FakeSide({"s1": "block"})
    ahead = UnownedAhead([("t1", "s1")], fake.side())
    ahead.close()
    assert fake.interrupted.is_set() and fake.released
    assert not ahead._thread.is_alive()


def test_without_a_side_connection_the_counts_stay_inline(tmp_path: Path) -> None:
    db = tmp_path / "n.sqlite"
    with sqlite3.connect(db) as conn:
        conn.executescript(NOTES)
    url = f"sqlite:///{db}"
    catalog = catalog_of(url)
    _without_a_side(url, catalog, ({"arrow": True}, {"arrow": False, "side": True}))
    # a connection that refuses other threads is not used by one: the counts stay inline
    _without_a_side(f"sqlite:///{db}?check_same_thread=true", catalog,
                    ({"arrow": True, "side": True},))


def _without_a_side(url: str, catalog: Catalog, variants: tuple[dict[str, bool], ...]
                    ) -> None:
    engine = open_engine(url)
    try:
        for options in variants:
            with Snapshot(engine, **options) as snap:
                assert snap.unowned_ahead(catalog.tables) is None, options
                plan = catalog.table("notes")
                assert plan is not None
                assert snap.unowned(plan) == (0, 1)
    finally:
        engine.dispose()
