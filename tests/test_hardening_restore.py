"""Issue 8, restores: all or nothing, refusals create nothing, the database's own message, and
a snapshot deleted behind our back is noticed (the control database remembers it).
"""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from typer.testing import CliRunner

from flows import backup, prune, restore
from flows.context import RunContext
from kernel.errors import BadInput, ExportError, StorageError, VerificationFailed
from kernel.settings import Settings
from storage import backup_store as store
from storage import objects
from storage.keys import KeyWrapper, parse_master_key
from storage.registry import SnapshotRegistry
from storage.retention import RetentionPolicy
from tenant_export.cli import app
from tests.conftest import Platform
from tests.services import free_port, fresh_database
from tests.snapshot_view import with_table_chunks

runner = CliRunner()


def wrapper() -> KeyWrapper:
    return parse_master_key(Settings().master_key_value() or "")


def docs_bucket(platform: Platform) -> str:
    bucket = f"restored-{uuid.uuid4().hex[:8]}"
    platform.s3.create_bucket(Bucket=bucket)
    return bucket


def bucket_state(platform: Platform, bucket: str) -> tuple[list[str], list[str]]:
    """Objects and open multipart uploads: both must be empty after a failed restore."""
    uploads = platform.s3.list_multipart_uploads(Bucket=bucket).get("Uploads", [])
    return objects.list_keys(platform.s3, bucket, ""), [u["Key"] for u in uploads]


def blob_of(ctx: RunContext, snapshot_id: str, storage_key: str) -> str:
    dek = ctx.store.data_key(wrapper(), "t-1", create=False)
    manifest = ctx.store.read_manifest(dek, "t-1", snapshot_id)
    (sha,) = [d["blob"] for d in ctx.store.documents(dek, "t-1", manifest)
              if d["storage_key"] == storage_key]
    return str(sha)


# -- 4. a document that fails its check leaves no table and no document ---------------------


def swap_blob(platform: Platform, ctx: RunContext, snapshot_id: str, victim: str) -> None:
    """Another valid blob of the tenant copied over ``victim``'s: it decrypts, its hash lies."""
    source = store.blob_key("t-1", blob_of(ctx, snapshot_id, "t1/dup-b"))
    target = store.blob_key("t-1", blob_of(ctx, snapshot_id, victim))
    body = platform.s3.get_object(Bucket=platform.backup_bucket, Key=source)["Body"].read()
    platform.s3.put_object(Bucket=platform.backup_bucket, Key=target, Body=body)


@pytest.mark.usefixtures("unpacked")  # one object per blob, as format 4
@pytest.mark.parametrize("victim", ["t1/report", "t1/abs"])  # restored first / last
def test_a_document_swapped_after_verify_restores_nothing(
        sqlite_platform: Platform, ctx: RunContext, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch, victim: str) -> None:
    platform = sqlite_platform
    snapshot_id = backup.backup_tenant(ctx, wrapper(), "t-1").snapshot_id
    real_verify = restore.verify_snapshot

    def verify_then_swap(*args: Any, **kwargs: Any) -> dict[str, Any]:
        report = real_verify(*args, **kwargs)
        swap_blob(platform, ctx, snapshot_id, victim)  # between the check and the use
        return report

    monkeypatch.setattr(restore, "verify_snapshot", verify_then_swap)
    restore_refused_at(platform, ctx, tmp_path, victim)


def restore_refused_at(platform: Platform, ctx: RunContext, tmp_path: Path, victim: str) -> None:
    """A restore stops at ``victim``'s document: no database file, nothing in a fresh bucket."""
    target, bucket = tmp_path / "r.sqlite", docs_bucket(platform)
    with pytest.raises(VerificationFailed, match=rf"document \d+ \('{victim}'\)"):
        restore.restore_snapshot(ctx, wrapper(), "t-1", f"sqlite:///{target}",
                                 documents_bucket=bucket)
    assert not target.exists()
    assert bucket_state(platform, bucket) == ([], [])


def fail_publishing_third(monkeypatch: pytest.MonkeyPatch) -> None:
    real, calls = store.copy, []

    def copy(*args: Any, **kwargs: Any) -> None:
        calls.append(args)
        if len(calls) == 3:
            raise StorageError("copying: SlowDown, then gave up", tenant_id="t-1")
        real(*args, **kwargs)

    monkeypatch.setattr(store, "copy", copy)


def fail_row_count(monkeypatch: pytest.MonkeyPatch) -> None:
    real = restore._table_load

    def off_by_one(*args: Any) -> Any:
        load = real(*args)
        return load if load.name != "select" else type(load)(
            load.name, load.schema, load.primary_key, load.expected_rows + 1, load.batches)

    monkeypatch.setattr(restore, "_table_load", off_by_one)


FAILURES = [
    pytest.param(fail_publishing_third, StorageError, "SlowDown", id="publishing-a-document"),
    pytest.param(fail_row_count, VerificationFailed, "restored 2 rows", id="row-count"),
]


@pytest.mark.parametrize(("inject", "error", "message"), FAILURES)
def test_a_failure_after_staging_leaves_the_target_as_it_was(
        sqlite_platform: Platform, ctx: RunContext, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch, inject: Callable[[pytest.MonkeyPatch], None],
        error: type[Exception], message: str) -> None:
    backup.backup_tenant(ctx, wrapper(), "t-1")
    inject(monkeypatch)
    target, bucket = tmp_path / "r.sqlite", docs_bucket(sqlite_platform)
    with pytest.raises(error, match=message):
        restore.restore_snapshot(ctx, wrapper(), "t-1", f"sqlite:///{target}",
                                 documents_bucket=bucket)
    assert not target.exists()
    assert bucket_state(sqlite_platform, bucket) == ([], [])


# -- 7. a refused restore creates nothing --------------------------------------------------


def refuse_unknown_snapshot(ctx: RunContext, platform: Platform) -> dict[str, Any]:
    return {"snapshot_id": "20200101T000000Z-00000000"}


def refuse_missing_documents_bucket(ctx: RunContext, platform: Platform) -> dict[str, Any]:
    return {"documents_bucket": f"no-such-{uuid.uuid4().hex[:8]}"}


def refuse_document_exists(ctx: RunContext, platform: Platform) -> dict[str, Any]:
    bucket = docs_bucket(platform)
    platform.s3.put_object(Bucket=bucket, Key="t1/abs", Body=b"someone else's")
    return {"documents_bucket": bucket}


def refuse_tampered(ctx: RunContext, platform: Platform) -> dict[str, Any]:
    (snapshot_id,) = ctx.store.list_snapshots("t-1")
    keys = ctx.store.data_key(wrapper(), "t-1", create=False)
    (members,) = [t for t in with_table_chunks(
        ctx.store, keys, "t-1", ctx.store.read_manifest(keys, "t-1", snapshot_id))["tables"]
                  if t["name"] == "members"]
    chunk = members["chunks"][0]  # format 5: a chunk in a pack, else a blob of its own
    key = store.blob_key("t-1", chunk.get("pack") or chunk["blob"])
    body = bytearray(platform.s3.get_object(Bucket=platform.backup_bucket, Key=key)["Body"].read())
    body[chunk.get("pack_offset", 0) + 100] ^= 1
    platform.s3.put_object(Bucket=platform.backup_bucket, Key=key, Body=bytes(body))
    return {}


def refuse_no_key(ctx: RunContext, platform: Platform) -> dict[str, Any]:
    platform.s3.delete_object(Bucket=platform.backup_bucket, Key=store.key_record_key("t-1"))
    return {}


REFUSALS = [
    pytest.param(refuse_unknown_snapshot, BadInput, id="unknown-snapshot"),
    pytest.param(refuse_missing_documents_bucket, StorageError, id="missing-documents-bucket"),
    pytest.param(refuse_document_exists, BadInput, id="document-exists"),
    pytest.param(refuse_tampered, VerificationFailed, id="tampered-table"),
    pytest.param(refuse_no_key, VerificationFailed, id="no-data-key"),
]


@pytest.mark.parametrize(("refusal", "error"), REFUSALS)
def test_a_refused_restore_creates_no_target_file(
        sqlite_platform: Platform, ctx: RunContext, tmp_path: Path,
        refusal: Callable[[RunContext, Platform], dict[str, Any]],
        error: type[Exception]) -> None:
    backup.backup_tenant(ctx, wrapper(), "t-1")
    options = refusal(ctx, sqlite_platform)
    target = tmp_path / "never.sqlite"
    with pytest.raises(error) as refused:
        restore.restore_snapshot(ctx, wrapper(), "t-1", f"sqlite:///{target}", **options)
    assert "'t-1'" in str(refused.value)  # every failure names the tenant
    assert list(tmp_path.glob("never.sqlite*")) == []
    if "documents_bucket" in options and not options["documents_bucket"].startswith("no-such"):
        assert objects.list_keys(sqlite_platform.s3, options["documents_bucket"], "") == [
            "t1/abs"]


@pytest.mark.parametrize("url", ["sqlite:///{tmp}/no/such/folder/x.sqlite", "sqlite://",
                                 "sqlite:///:memory:", "mysql://x@localhost/db"])
def test_a_refused_target_url_exits_2_and_creates_nothing(
        sqlite_platform: Platform, ctx: RunContext, tmp_path: Path, url: str) -> None:
    backup.backup_tenant(ctx, wrapper(), "t-1")
    state = tmp_path / "state"  # the control database's files come and go (WAL)

    def files() -> list[Path]:
        return sorted(p for p in tmp_path.rglob("*") if state not in p.parents and p != state)

    before = files()
    result = runner.invoke(app, ["restore", "t-1", "--target", url.format(tmp=tmp_path)])
    assert result.exit_code == 2, (result.stdout, result.stderr)
    assert files() == before


# -- 8. the database's own message ----------------------------------------------------------


@pytest.mark.postgres
def test_a_nul_in_text_fails_with_postgresqls_message_and_leaves_nothing(
        sqlite_platform: Platform, ctx: RunContext, postgres_url: str) -> None:
    db = sqlite_platform.source_url.removeprefix("sqlite:///")
    with sqlite3.connect(db) as conn:  # SQLite stores a NUL inside a text value
        conn.execute("UPDATE members SET note = ? WHERE tenant_id = 't-1' AND id = "
                     "(SELECT min(id) FROM members WHERE tenant_id = 't-1')", ("a\x00b",))
    backup.backup_tenant(ctx, wrapper(), "t-1")
    target, bucket = fresh_database(postgres_url, "nul"), docs_bucket(sqlite_platform)
    result = runner.invoke(app, ["restore", "t-1", "--target", target,
                                 "--documents-bucket", bucket])
    assert result.exit_code == 1, (result.stdout, result.stderr)
    assert "PostgreSQL text fields cannot contain NUL (0x00) bytes" in result.stderr
    assert "'t-1'" in result.stderr and "unexpected" not in result.stderr
    with psycopg.connect(target) as conn:
        tables = conn.execute("SELECT table_name FROM information_schema.tables "
                              "WHERE table_schema = 'public'").fetchall()
    assert tables == []
    assert bucket_state(sqlite_platform, bucket) == ([], [])


# -- 6. a deleted snapshot is noticed --------------------------------------------------------


@pytest.fixture
def three_days(sqlite_platform: Platform, ctx: RunContext,
               monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Snapshots of three nights, oldest first."""
    days = [datetime(2026, 11, 1, 2, 30, tzinfo=UTC) + timedelta(days=d) for d in range(3)]
    ids = iter(f"{d:%Y%m%dT%H%M%SZ}-{i:08x}" for i, d in enumerate(days))
    monkeypatch.setattr(backup, "new_snapshot_id", lambda now=None: next(ids))
    made = [backup.backup_tenant(ctx, wrapper(), "t-1").snapshot_id for _ in days]
    with SnapshotRegistry(Settings().resolved_control_url()) as registry:
        assert [r.snapshot_id for r in registry.expected("t-1")] == made
    return made


def delete_manifest(platform: Platform, snapshot_id: str) -> None:
    platform.s3.delete_object(Bucket=platform.backup_bucket,
                              Key=store.snapshot_prefix("t-1", snapshot_id) + store.MANIFEST)


def delete_folder(platform: Platform, snapshot_id: str) -> None:
    objects.delete_prefix(platform.s3, platform.backup_bucket,
                          store.snapshot_prefix("t-1", snapshot_id))


DELETIONS = [pytest.param(delete_manifest, id="manifest"),
             pytest.param(delete_folder, id="folder")]


@pytest.mark.parametrize("delete", DELETIONS)
def test_a_deleted_newest_snapshot_is_a_rollback_warning(
        sqlite_platform: Platform, ctx: RunContext, tmp_path: Path, three_days: list[str],
        delete: Callable[[Platform, str], None]) -> None:
    newest, older = three_days[-1], three_days[-2]
    delete(sqlite_platform, newest)
    for result in (restore.verify_snapshot(ctx, wrapper(), "t-1"),
                   restore.restore_snapshot(ctx, wrapper(), "t-1",
                                            f"sqlite:///{tmp_path}/r.sqlite")):
        assert result["snapshot_id"] == older
        assert result["expected_newest"] == newest
        assert result["missing_snapshots"] == [newest]
        assert len(result["warnings"]) == 1
        assert f"rollback: the newest snapshot of tenant 't-1', {newest}" in result["warnings"][0]
    cli = runner.invoke(app, ["verify", "t-1", "--json"])  # the flow logs it, the CLI shows it
    assert cli.exit_code == 0, cli.stderr
    assert f"rollback: the newest snapshot of tenant 't-1', {newest}" in cli.stdout


@pytest.mark.parametrize("delete", DELETIONS)
def test_every_snapshot_deleted_or_the_one_asked_for_fails(
        sqlite_platform: Platform, ctx: RunContext, three_days: list[str],
        delete: Callable[[Platform, str], None]) -> None:
    delete(sqlite_platform, three_days[0])
    with pytest.raises(VerificationFailed, match=f"snapshot {three_days[0]} of tenant 't-1'"):
        restore.verify_snapshot(ctx, wrapper(), "t-1", three_days[0])
    report = restore.verify_snapshot(ctx, wrapper(), "t-1")  # the newest is there: no rollback
    assert report["snapshot_id"] == three_days[-1]
    assert report["missing_snapshots"] == [three_days[0]] and len(report["warnings"]) == 1
    assert "rollback" not in report["warnings"][0]
    for snapshot_id in three_days[1:]:
        delete(sqlite_platform, snapshot_id)
    with pytest.raises(VerificationFailed, match=f"snapshot {three_days[-1]} of tenant 't-1'"):
        restore.verify_snapshot(ctx, wrapper(), "t-1")
    cli = runner.invoke(app, ["verify", "t-1"])
    assert cli.exit_code == 1 and three_days[-1] in cli.stderr


def test_prune_tells_the_registry_what_it_forgot(sqlite_platform: Platform, ctx: RunContext,
                                                 three_days: list[str]) -> None:
    report = prune.prune_tenant(ctx, wrapper(), "t-1", RetentionPolicy(daily=1, weekly=0,
                                                                       monthly=0),
                                dry_run=False)
    assert report["forget"] == three_days[1::-1] and report["keep"] == [three_days[-1]]
    with SnapshotRegistry(Settings().resolved_control_url()) as registry:
        assert [r.snapshot_id for r in registry.expected("t-1")] == [three_days[-1]]
    verified = restore.verify_snapshot(ctx, wrapper(), "t-1")
    assert verified["missing_snapshots"] == [] and verified["warnings"] == []


def test_a_restore_works_without_the_control_database(
        sqlite_platform: Platform, ctx: RunContext, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """In a disaster the control database may be gone: restore warns and goes on."""
    backup.backup_tenant(ctx, wrapper(), "t-1")
    monkeypatch.setenv("TENANT_EXPORT_CONTROL_URL", f"postgresql://nobody@127.0.0.1:{free_port()}/x")
    lost = RunContext.open(Settings())
    try:
        result = restore.restore_snapshot(lost, wrapper(), "t-1",
                                          f"sqlite:///{tmp_path}/r.sqlite")
        assert result["rows"]["members"] > 0
        assert len(result["warnings"]) == 1 and "snapshot registry" in result["warnings"][0]
        bucket = sqlite_platform.backup_bucket

        def stored() -> list[str]:
            pages = lost.s3.get_paginator("list_objects_v2").paginate(Bucket=bucket)
            return sorted(o["Key"] for page in pages for o in page.get("Contents", []))

        before = stored()
        # a backup checks the tenant's data keys against the control database's key registry
        # (a replaced key record is refused): without it, it is refused before writing anything
        with pytest.raises(ExportError, match=r"cannot open the control database"):
            backup.backup_tenant(lost, wrapper(), "t-1")
        assert stored() == before
    finally:
        lost.close()
