"""Issue 9, ``restore TENANT --in-place --confirm`` on the reference platform (SQLite and
PostgreSQL): after deleting, altering and adding rows of one tenant (child rows of every depth
included) and damaging its documents, the restore brings the tenant back to its snapshot while
every other row of the platform (the second tenant's, cross-tenant join rows, shared tables)
stays as it was; refusals (no --confirm, the tenant lock held, another tenant's row in the way)
change nothing."""

from __future__ import annotations

import json
import sqlite3
import threading
from typing import Any

import psycopg
import pytest
from typer.testing import CliRunner

from flows import restore
from flows.context import RunContext
from flows.locks import tenant_lock
from kernel.errors import BadInput
from kernel.settings import Settings
from storage import objects
from tenant_export.cli import app
from tenant_export.refplatform import tenant_schema
from tests.test_restore_schema import (
    BACKENDS,
    OTHER,
    TENANT,
    backed_up,
    full_dump,
    ref_platform,  # noqa: F401 - fixture
    tenant_rows,
    wrapper,
)
from tests.test_tenancy import Setup, ref_postgres, ref_schemas, ref_sqlite  # noqa: F401 - fixtures

runner = CliRunner()
PREFIX = f"tenants/{TENANT}/"
NEW_KEY = f"{PREFIX}written-after-the-snapshot.pdf"


class Db:
    """The live platform database of a test, in either backend."""

    def __init__(self, setup: Setup) -> None:
        self.setup = setup
        self.sqlite = setup.ref.backend == "sqlite"

    def name(self, table: str) -> str:
        return table if self.sqlite else f"{self.setup.ref.table_schemas[table]}.{table}"

    def run(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        if self.sqlite:
            with sqlite3.connect(self.setup.ref.location) as db:
                cursor = db.execute(sql, params)
                return cursor.fetchall() if cursor.description else [(cursor.rowcount,)]
        with psycopg.connect(self.setup.url) as conn:
            cursor = conn.execute(sql.replace("?", "%s"), params)
            return cursor.fetchall() if cursor.description else [(cursor.rowcount,)]

    def count(self, sql: str, params: tuple[Any, ...] = ()) -> int:
        return int(self.run(sql, params)[0][0])

    def schemas(self) -> dict[str, str]:
        return {} if self.sqlite else dict(self.setup.ref.table_schemas)

    def everything(self) -> dict[str, list[str]]:
        """Every row of every table of the platform."""
        ref = self.setup.ref
        return full_dump(self.setup.url, [*ref.content_tables, *ref.shared_tables],
                         self.schemas())

    def tenant(self, tenant: str) -> dict[str, list[tuple[Any, ...]]]:
        """Every row of the tenant, table by table (the truth says which)."""
        ref = self.setup.ref
        return {t: tenant_rows(ref, self.setup.url, t, tenant, self.schemas().get(t))
                for t in ref.content_tables}


def bucket(setup: Setup) -> dict[str, bytes]:
    s3, name = setup.env.s3, setup.env.documents_bucket
    return {k: s3.get_object(Bucket=name, Key=k)["Body"].read()
            for k in objects.list_keys(s3, name, "")}


def ids(setup: Setup, table: str, tenant: str = TENANT) -> list[int]:
    return [int(k[0]) for k in setup.ref.owned[tenant][table]]


def damage(db: Db) -> dict[str, int]:
    """Delete, alter and add rows of the tenant (children before parents, as the platform's
    foreign keys demand); the counts an in-place restore must undo."""
    s, n = db.setup, db.name
    leaf = db.run(f"SELECT c.id FROM {n('comments')} c WHERE c.id IN "
                  f"({', '.join(map(str, ids(s, 'comments')))}) AND EXISTS (SELECT 1 FROM "
                  f"{n('comment_reactions')} r WHERE r.comment_id = c.id) AND NOT EXISTS "
                  f"(SELECT 1 FROM {n('comments')} x WHERE x.parent_id = c.id) ORDER BY c.id")[0][0]
    deleted = db.count(f"DELETE FROM {n('comment_reactions')} WHERE comment_id = ?", (leaf,))
    deleted += db.count(f"DELETE FROM {n('comments')} WHERE id = ?", (leaf,))
    registration = db.run(f"SELECT p.registration_id FROM {n('registration_payments')} p "
                          f"JOIN {n('payment_refunds')} f ON f.payment_id = p.id WHERE "
                          f"p.registration_id IN ({', '.join(map(str, ids(s, 'event_registrations')))})"
                          " ORDER BY 1")[0][0]
    payments = f"SELECT id FROM {n('registration_payments')} WHERE registration_id = ?"
    deleted += db.count(f"DELETE FROM {n('payment_refunds')} WHERE payment_id IN ({payments})",
                        (registration,))
    deleted += db.count(f"DELETE FROM {n('registration_payments')} WHERE registration_id = ?",
                        (registration,))
    deleted += db.count(f"DELETE FROM {n('event_registrations')} WHERE id = ?", (registration,))
    key = s.ref.owned[TENANT]["tenant_settings"][0]
    deleted += db.count(f"DELETE FROM {n('tenant_settings')} WHERE tenant_id = ? AND key = ?",
                        tuple(key))
    post, tag = s.ref.owned[TENANT]["post_tags"][0]
    deleted += db.count(f"DELETE FROM {n('post_tags')} WHERE post_id = ? AND tag_id = ?",
                        (post, tag))
    altered = db.count(f"UPDATE {n('members')} SET full_name = 'Renamed by mistake', notes = "
                       "NULL WHERE id = ?", (ids(s, "members")[0],))
    altered += db.count(f"UPDATE {n('invoice_lines')} SET quantity = quantity + 5 WHERE id = ?",
                        (ids(s, "invoice_lines")[0],))
    tag_id, name = next((i, t) for i, t in db.run(f"SELECT id, name FROM {n('tags')} ORDER BY id")
                        if i in ids(s, "tags") and str(t).swapcase() != t)
    altered += db.count(f"UPDATE {n('tags')} SET name = ? WHERE id = ?",  # its case only
                        (str(name).swapcase(), tag_id))
    added = db.count(f"INSERT INTO {n('posts')} (id, tenant_id, author_id, title, is_pinned) "
                     "VALUES (900001, ?, NULL, 'Written after the snapshot', ?)", (TENANT, False))
    added += db.count(f"INSERT INTO {n('comments')} (id, post_id, body, created_at) VALUES "
                      "(900001, 900001, 'a reply', '2026-05-01T10:00:00+00:00')")
    added += db.count(f"INSERT INTO {n('post_tags')} VALUES (900001, ?)", (ids(s, "tags")[1],))
    added += db.count(f"INSERT INTO {n('documents')} (id, tenant_id, filename, storage_key, "
                      "size_bytes, uploaded_at) VALUES (900001, ?, 'new.pdf', ?, 3, "
                      "'2026-05-01T10:00:00+00:00')", (TENANT, NEW_KEY))
    return {"deleted": deleted, "altered": altered, "added": added}


def late_thread(db: Db) -> int:
    """Before the backup: a comment of the tenant made the reply of a newer one (id 900010)."""
    comments, mine = db.name("comments"), ", ".join(map(str, ids(db.setup, "comments")))
    reply = int(db.run(f"SELECT min(c.id) FROM {comments} c WHERE c.id IN ({mine}) AND NOT "
                       f"EXISTS (SELECT 1 FROM {comments} x WHERE x.parent_id = c.id)")[0][0])
    db.run(f"INSERT INTO {comments} (id, post_id, body, created_at) VALUES (900010, ?, "
           "'a thread started later', '2026-04-01T10:00:00+00:00')", (ids(db.setup, "posts")[0],))
    db.run(f"UPDATE {comments} SET parent_id = 900010 WHERE id = ?", (reply,))
    return reply


def damage_documents(setup: Setup) -> list[str]:
    """The tenant's first blob deleted, its second overwritten, a new one uploaded."""
    s3, name = setup.env.s3, setup.env.documents_bucket
    mine = sorted(k for k in bucket(setup) if k.startswith(PREFIX))
    s3.delete_object(Bucket=name, Key=mine[0])
    s3.put_object(Bucket=name, Key=mine[1], Body=b"overwritten by mistake")
    s3.put_object(Bucket=name, Key=NEW_KEY, Body=b"new")
    return mine


def cli(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


# -- acceptance --------------------------------------------------------------------------------
@pytest.mark.parametrize("ref_platform", BACKENDS, indirect=True)
def test_in_place_restore_puts_the_tenant_back_and_nothing_else_changes(
        ref_platform: Setup,  # noqa: F811 - fixture
        prefect_server: None) -> None:
    setup, db = ref_platform, Db(ref_platform)
    db.run(f"UPDATE {db.name('members')} SET notes = 'after the snapshot, kept' WHERE id = ?",
           (ids(setup, "members", OTHER)[0],))  # the other tenant changes too: never undone
    reply = late_thread(db)  # a reply whose parent has a greater id: no row order inserts both
    snapshot_id = backed_up()
    platform_then, tenant_then, documents_then = db.everything(), db.tenant(TENANT), bucket(setup)
    changes = damage(db)
    comments = db.name("comments")  # the thread goes too, reply first (damage may have begun)
    changes["deleted"] += db.count(f"DELETE FROM {db.name('comment_reactions')} WHERE "
                                   "comment_id = ?", (reply,))
    changes["deleted"] += db.count(f"DELETE FROM {comments} WHERE id = ?", (reply,))
    changes["deleted"] += db.count(f"DELETE FROM {comments} WHERE id = 900010")
    mine = damage_documents(setup)
    other_before = db.tenant(OTHER)
    assert db.tenant(TENANT) != tenant_then

    code, out, err = cli("restore", TENANT, "--in-place", "--confirm", "--json")
    assert code == 0, err
    result = json.loads(out)
    assert result["snapshot_id"] == snapshot_id and result["mode"] == "in-place"
    assert db.tenant(TENANT) == tenant_then  # back to the snapshot, value by value
    assert db.tenant(OTHER) == other_before  # the second tenant untouched
    assert db.everything() == platform_then  # and every other row: cross-tenant, shared, ...
    assert (result["rows_deleted"], result["rows_inserted"], result["rows_updated"]) == (
        changes["added"], changes["deleted"], changes["altered"])
    assert result["rows"]["posts"]["deleted"] == 1
    counts = result["rows"]["comments"]
    assert (counts["deleted"], counts["updated"]) == (1, 0) and counts["inserted"] >= 2
    assert counts["inserted"] + counts["unchanged"] == len(setup.ref.owned[TENANT]["comments"]) + 1
    assert result["rows_unchanged"] == sum(len(v) for v in tenant_then.values()) + 1 - (
        changes["deleted"] + changes["altered"])
    assert (result["documents_rewritten"], result["documents_unchanged"]) == (2, len(mine) - 2)
    assert result["documents_left"] == [NEW_KEY]
    assert bucket(setup) == {**documents_then, NEW_KEY: b"new"}  # others' objects untouched
    assert any("left in bucket" in w for w in result["warnings"])


@pytest.mark.parametrize("ref_platform", BACKENDS, indirect=True)
def test_in_place_restore_of_an_unchanged_tenant_changes_nothing(
        ref_platform: Setup) -> None:  # noqa: F811 - fixture
    db = Db(ref_platform)
    backed_up()
    platform_then, documents_then = db.everything(), bucket(ref_platform)
    ctx = RunContext.open(Settings())
    try:
        result = restore.restore_in_place(ctx, wrapper(), TENANT)
    finally:
        ctx.close()
    assert result["rows_deleted"] == result["rows_inserted"] == result["rows_updated"] == 0
    assert result["documents_rewritten"] == 0 and result["documents_left"] == []
    assert db.everything() == platform_then and bucket(ref_platform) == documents_then


# -- refusals: each changes nothing ------------------------------------------------------------
@pytest.fixture
def damaged(ref_sqlite: Setup) -> tuple[Db, dict[str, list[str]]]:  # noqa: F811
    """A backed-up tenant damaged afterwards, and the platform as it then is."""
    db = Db(ref_sqlite)
    backed_up()
    damage(db)
    return db, db.everything()


def test_in_place_without_confirm_is_refused(
        damaged: tuple[Db, dict[str, list[str]]], prefect_server: None) -> None:
    db, before = damaged
    code, _, err = cli("restore", TENANT, "--in-place")
    assert code == 2, err
    assert "Add --confirm" in err and "rows created since the snapshot are removed" in err
    assert db.everything() == before
    code, _, err = cli("restore", TENANT, "--in-place", "--confirm", "--target",
                       "sqlite:///elsewhere.sqlite")
    assert code == 2 and "--target" in err
    from flows.restore_flow import restore_in_place  # a deployment run must confirm too

    with pytest.raises(BadInput, match="confirm"):
        restore_in_place.fn(TENANT)
    assert db.everything() == before


def test_in_place_while_the_tenant_lock_is_held_is_refused(
        damaged: tuple[Db, dict[str, list[str]]], prefect_server: None,
        monkeypatch: pytest.MonkeyPatch) -> None:
    db, before = damaged
    monkeypatch.setenv("TENANT_EXPORT_LOCK_WAIT_SECONDS", "1")
    held, release = threading.Event(), threading.Event()

    def hold() -> None:  # an export or backup of the tenant, running
        with tenant_lock(TENANT, 30, control_url=Settings().resolved_control_url()):
            held.set()
            release.wait(60)

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert held.wait(60)
        code, _, err = cli("restore", TENANT, "--in-place", "--confirm")
    finally:
        release.set()
        holder.join(60)
    assert code == 1, err
    assert f"another export or backup of tenant '{TENANT}' is running" in err
    assert db.everything() == before


def test_in_place_refuses_to_take_over_or_orphan_another_tenants_rows(
        damaged: tuple[Db, dict[str, list[str]]]) -> None:
    db, _ = damaged
    setup = db.setup
    ctx = RunContext.open(Settings())
    try:
        moved = ids(setup, "venues")[0]  # now the other tenant's row: never taken back
        db.run("UPDATE venues SET tenant_id = ? WHERE id = ?", (OTHER, moved))
        before = db.everything()
        with pytest.raises(BadInput, match=r"rows that are not the tenant's.*venues \(1 row"):
            restore.restore_in_place(ctx, wrapper(), TENANT)
        assert db.everything() == before
        db.run("UPDATE venues SET tenant_id = ? WHERE id = ?", (TENANT, moved))
        other_group = ids(setup, "groups", OTHER)[0]  # the other tenant's group now lists the
        db.run("INSERT INTO members (id, tenant_id, member_number, full_name, status, "  # new
               "joined_on, is_board) VALUES (900002, ?, 'x', 'New', 'active', '2026-05-01', 0)",
               (TENANT,))  # member, which the snapshot lacks: deleting it would orphan the row
        db.run("INSERT INTO group_members (group_id, member_id, role) VALUES (?, 900002, 'x')",
               (other_group,))
        before = db.everything()
        with pytest.raises(BadInput, match=r"1 row\(s\) of group_members \(group_members"
                                           r"\.member_id → members\.id\)"):
            restore.restore_in_place(ctx, wrapper(), TENANT)
        assert db.everything() == before
    finally:
        ctx.close()


@pytest.mark.postgres
def test_in_place_restore_in_a_schema_per_tenant_platform(
        ref_schemas: Setup) -> None:  # noqa: F811 - fixture
    def everything() -> dict[str, list[str]]:
        with psycopg.connect(ref_schemas.url) as conn:
            conn.execute("SET TIME ZONE 'UTC'")
            tables = conn.execute(
                "SELECT table_schema, table_name FROM information_schema.tables WHERE "
                "table_type = 'BASE TABLE' AND table_schema NOT IN ('pg_catalog', "
                "'information_schema')").fetchall()
            return {f"{s}.{t}": sorted(repr(r) for r in conn.execute(f'SELECT * FROM "{s}"."{t}"'))
                    for s, t in tables}

    backed_up()
    before = everything()
    mine = tenant_schema(TENANT)
    with psycopg.connect(ref_schemas.url) as conn:
        leaf = conn.execute(f"SELECT min(comment_id) FROM {mine}.comment_reactions").fetchone()
        conn.execute(f"DELETE FROM {mine}.comment_reactions WHERE comment_id = %s", leaf)
        conn.execute(f"UPDATE {mine}.members SET full_name = 'Renamed' WHERE id = "
                     f"(SELECT min(id) FROM {mine}.members)")
        conn.execute(f"INSERT INTO {mine}.tags (id, name) VALUES (900001, 'new')")
    assert everything() != before
    ctx = RunContext.open(Settings())
    try:
        result = restore.restore_in_place(ctx, wrapper(), TENANT)
    finally:
        ctx.close()
    assert everything() == before  # the tenant's schema as it was, every other one untouched
    assert (result["rows_deleted"], result["rows_updated"]) == (1, 1)
    assert result["rows_inserted"] >= 1
