"""Keys that rotate (issue 12): a new active data key for a tenant, the master key rotated with
``keys rewrap``, and key records that cannot be replaced, rolled back or deleted unnoticed.

After a data-key rotation and a rewrap every older snapshot still verifies and restores (its
objects name the data key they were sealed under); a record rolled back to a version from
before a rotation, replaced by another valid one, edited, or deleted is refused by name, never
answered with a new key; a rotation racing a purge never resurrects the record.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import uuid
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr
from typer.testing import CliRunner

from flows import backup, restore
from flows.context import RunContext, using
from flows.keyring import master_key
from kernel.errors import BadInput, VerificationFailed
from kernel.settings import Settings
from storage import backup_store as store
from storage import objects
from storage.datakeys import DataKeys
from storage.key_registry import KeyRegistry
from storage.key_store import KeyStore
from storage.keyring_records import ACTIVE, now_text, seal
from storage.keys import generate_master_key, new_data_key
from tenant_export.cli import app
from tests.conftest import Platform
from tests.snapshot_view import with_table_chunks
from tests.test_keys_kms import make_kms_key

runner = CliRunner()


def run_backup(ctx: RunContext) -> backup.BackupSummary:
    return backup.backup_tenant(ctx, master_key(Settings()), "t-1")


def get(platform: Platform, key: str) -> bytes:
    return bytes(platform.s3.get_object(Bucket=platform.backup_bucket, Key=key)["Body"].read())


def put(platform: Platform, key: str, body: bytes) -> None:
    platform.s3.put_object(Bucket=platform.backup_bucket, Key=key, Body=body)


def header_key_id(platform: Platform, key: str) -> int:
    return int.from_bytes(get(platform, key)[9:13], "big")


def manifest(ctx: RunContext, snapshot_id: str) -> dict[str, Any]:
    """The manifest with its document list read in (from the index since format 3)."""
    keys = ctx.store.data_key(master_key(Settings()), "t-1", create=False)
    described = ctx.store.read_manifest(keys, "t-1", snapshot_id)
    return {**with_table_chunks(ctx.store, keys, "t-1", described),
            "documents": list(ctx.store.documents(keys, "t-1", described))}


def restores(platform: Platform, ctx: RunContext, tmp_path: Path, snapshot_id: str) -> None:
    """Verify, then restore into a new database and bucket: rows and documents as the manifest
    says (whatever the platform holds today)."""
    wrapper = master_key(Settings())
    assert restore.verify_snapshot(ctx, wrapper, "t-1", snapshot_id)["ok"]
    run = uuid.uuid4().hex[:8]
    target, docs = tmp_path / f"{snapshot_id}-{run}.sqlite", f"restored-{run}"
    platform.s3.create_bucket(Bucket=docs)
    result = restore.restore_snapshot(ctx, wrapper, "t-1", f"sqlite:///{target}",
                                      snapshot_id=snapshot_id, documents_bucket=docs)
    described = manifest(ctx, snapshot_id)
    assert result["rows"] == {t["name"]: t["rows"] for t in described["tables"]}
    with sqlite3.connect(target) as db:
        for table in described["tables"]:
            count = db.execute(f'SELECT count(*) FROM "{table["name"]}"').fetchone()[0]
            assert count == table["rows"], table["name"]
    for doc in described["documents"]:
        if doc["status"] == "ok":
            body = platform.s3.get_object(Bucket=docs, Key=doc["storage_key"])["Body"].read()
            expected = doc.get("sha256") or doc["blob"]  # format 1: the name is the SHA-256
            assert hashlib.sha256(body).hexdigest() == expected, doc["storage_key"]


def table_key(described: dict[str, Any], table: str = "members") -> str:
    """The blob name of the table's first chunk (format 4: named by its content)."""
    (entry,) = [t for t in described["tables"] if t["name"] == table]
    return str(entry["chunks"][0]["blob"])


def chunk_key_id(platform: Platform, described: dict[str, Any], table: str = "members") -> int:
    """The data key id in the header of the table's first chunk: an object of its own, or a
    member of a pack of chunks (format 5), whose header starts at its offset."""
    (entry,) = [t for t in described["tables"] if t["name"] == table]
    chunk = entry["chunks"][0]
    if not chunk.get("pack"):
        return header_key_id(platform, store.blob_key("t-1", chunk["blob"]))
    start = chunk["pack_offset"]
    return int.from_bytes(get(platform, store.blob_key("t-1", chunk["pack"]))[
        start + 9:start + 13], "big")


def document_key_id(platform: Platform, described: dict[str, Any], storage_key: str) -> int:
    """The data key id in the header of a document's sealed blob: an object of its own, or a
    member of a pack (format 5), whose header starts at its offset."""
    (doc,) = [d for d in described["documents"] if d["storage_key"] == storage_key]
    if not doc.get("pack"):
        return header_key_id(platform, store.blob_key("t-1", doc["blob"]))
    start = doc["pack_offset"]
    return int.from_bytes(get(platform, store.blob_key("t-1", doc["pack"]))[
        start + 9:start + 13], "big")


def blob_name(described: dict[str, Any], storage_key: str) -> str:
    (name,) = [d["blob"] for d in described["documents"] if d["storage_key"] == storage_key]
    return str(name)


# -- data key rotation ---------------------------------------------------------------------------


def test_rotation_seals_new_objects_under_the_new_key_and_old_snapshots_restore(
        sqlite_platform: Platform, ctx: RunContext, tmp_path: Path) -> None:
    platform = sqlite_platform
    first = run_backup(ctx)
    assert first.data_key == 1

    rotated = runner.invoke(app, ["keys", "rotate", "t-1", "--json"])
    assert rotated.exit_code == 0, rotated.stderr
    assert json.loads(rotated.stdout)["active"] == 2 and json.loads(rotated.stdout)[
        "retired"] == [1]
    platform.s3.put_object(Bucket=platform.documents_bucket, Key="t1/passwd",
                           Body=b"root:x:0:0:rotated\n")  # one new blob after the rotation
    second = run_backup(ctx)
    assert second.data_key == 2 and second.blobs_uploaded == 1

    before, after = manifest(ctx, first.snapshot_id), manifest(ctx, second.snapshot_id)
    prefix = store.snapshot_prefix("t-1", second.snapshot_id)
    assert header_key_id(platform, prefix + store.MANIFEST) == 2  # new objects: the new key
    # an unchanged table's chunk keeps its name (names come from data key 1) but is sealed
    # again under the new key: chunks sealed before a rotation are not reused
    assert table_key(after) == table_key(before)
    assert chunk_key_id(platform, after) == 2
    (members,) = [t for t in after["tables"] if t["name"] == "members"]
    assert members["uploaded_bytes"] > 0 and {c["data_key"] for c in members["chunks"]} == {2}
    assert document_key_id(platform, after, "t1/passwd") == 2
    for unchanged in ("t1/report", "t1/dup-a", "t1/abs"):  # names survive the rotation
        assert blob_name(before, unchanged) == blob_name(after, unchanged)
        assert document_key_id(platform, after, unchanged) == 1

    for snapshot_id in (first.snapshot_id, second.snapshot_id):
        restores(platform, ctx, tmp_path, snapshot_id)

    shown = runner.invoke(app, ["keys", "show", "t-1", "--json"])
    assert shown.exit_code == 0, shown.stderr
    listed = json.loads(shown.stdout)
    assert [(k["id"], k["state"]) for k in listed["data_keys"]] == [(1, "retired"),
                                                                     (2, "active")]
    assert "wrapped" not in shown.stdout and "nonce" not in shown.stdout


# -- master key rotation -----------------------------------------------------------------------


@pytest.mark.parametrize("new_kind", ["local", "kms"])
def test_after_a_rotation_and_a_rewrap_every_older_snapshot_restores(
        sqlite_platform: Platform, ctx: RunContext, monkeypatch: pytest.MonkeyPatch,
        tmp_path: Path, new_kind: str) -> None:
    from flows.keyring import rewrap_key_records

    platform = sqlite_platform
    old_value = Settings().master_key_value() or ""
    old_id = master_key(Settings()).key_id
    first = run_backup(ctx)
    assert runner.invoke(app, ["keys", "rotate", "t-1"]).exit_code == 0
    second = run_backup(ctx)
    record_before = json.loads(get(platform, store.key_record_key("t-1")))

    if new_kind == "kms":
        new_value = f"kms:{make_kms_key(platform, monkeypatch).alias}"
    else:
        new_value = generate_master_key()
    monkeypatch.setenv("TENANT_EXPORT_MASTER_KEY", new_value)
    new_id = master_key(Settings()).key_id
    with pytest.raises(VerificationFailed, match="was wrapped by master key") as refused:
        run_backup(ctx)  # the new key alone cannot open the record: refused, no new key
    assert old_id in str(refused.value) and new_id in str(refused.value)

    with using(Settings().model_copy(update={"previous_master_key": SecretStr(old_value)})):
        (rewrapped,) = rewrap_key_records(["t-1"])
    assert rewrapped["status"] == "rewrapped"
    assert (rewrapped["from"], rewrapped["to"]) == (old_id, new_id)
    record = json.loads(get(platform, store.key_record_key("t-1")))
    assert record["key_id"] == new_id and record["alg"] == ("KMS" if new_kind == "kms"
                                                            else "A256GCM")
    assert [(k["id"], k["state"], k["created_at"]) for k in record["data_keys"]] == [
        (k["id"], k["state"], k["created_at"]) for k in record_before["data_keys"]]
    assert record["created_at"] == record_before["created_at"]

    third = run_backup(ctx)  # under the new master key, still data key 2
    assert third.data_key == 2
    for snapshot_id in (first.snapshot_id, second.snapshot_id, third.snapshot_id):
        restores(platform, ctx, tmp_path, snapshot_id)
    again = runner.invoke(app, ["keys", "rewrap", "--all", "--json"])
    assert again.exit_code == 0, again.stderr
    assert [r["status"] for r in json.loads(again.stdout)] == ["current"]

    monkeypatch.setenv("TENANT_EXPORT_MASTER_KEY", old_value)  # the old key is done with
    with pytest.raises(VerificationFailed, match="was wrapped by master key"):
        restore.verify_snapshot(ctx, master_key(Settings()), "t-1", first.snapshot_id)


def test_rewrap_upgrades_a_version_1_record(sqlite_platform: Platform, ctx: RunContext,
                                            tmp_path: Path) -> None:
    from tests.test_blob_names import version_1_record

    platform = sqlite_platform
    first = run_backup(ctx)
    keys = ctx.store.data_key(master_key(Settings()), "t-1", create=False)
    put(platform, store.key_record_key("t-1"), version_1_record("t-1", keys.key(1)))
    second = run_backup(ctx)  # a version-1 record still opens: its key is data key 1
    assert second.data_key == 1
    upgraded = runner.invoke(app, ["keys", "rewrap", "t-1", "--json"])
    assert upgraded.exit_code == 0, upgraded.stderr
    assert json.loads(upgraded.stdout)[0]["status"] == "upgraded"
    record = json.loads(get(platform, store.key_record_key("t-1")))
    assert record["version"] == 2 and record["mac"]
    for snapshot_id in (first.snapshot_id, second.snapshot_id):
        restores(platform, ctx, tmp_path, snapshot_id)


def test_key_commands_refuse_bad_requests(sqlite_platform: Platform) -> None:
    for args, message in [(["keys", "rewrap"], "name tenants or pass --all"),
                          (["keys", "rewrap", "t-1", "--all"], "not both"),
                          (["keys", "rotate", "t-2"], "has no key record"),
                          (["keys", "rewrap", "t-2"], "has no key record"),
                          (["keys", "show", "t-2"], "has no key record")]:
        result = runner.invoke(app, args)
        assert result.exit_code == 2, (args, result.stdout, result.stderr)
        assert message in result.stderr, (args, result.stderr)


# -- replaced, rolled back, edited, deleted ----------------------------------------------------


def versioned(platform: Platform) -> None:
    platform.s3.put_bucket_versioning(Bucket=platform.backup_bucket,
                                      VersioningConfiguration={"Status": "Enabled"})


def test_a_record_rolled_back_to_before_a_rotation_is_refused(
        sqlite_platform: Platform, ctx: RunContext) -> None:
    platform = sqlite_platform
    versioned(platform)
    run_backup(ctx)
    record_key = store.key_record_key("t-1")
    before_rotation = get(platform, record_key)
    assert runner.invoke(app, ["keys", "rotate", "t-1"]).exit_code == 0
    run_backup(ctx)  # objects sealed under data key 2
    put(platform, record_key, before_rotation)  # an older, valid version put back
    snapshots = ctx.store.list_snapshots("t-1")
    with pytest.raises(VerificationFailed, match="replaced or rolled back") as refused:
        run_backup(ctx)
    assert "data key 2" in str(refused.value) and "is missing from it" in str(refused.value)
    assert ctx.store.list_snapshots("t-1") == snapshots
    rotate = runner.invoke(app, ["keys", "rotate", "t-1"])
    assert rotate.exit_code == 1 and "replaced or rolled back" in rotate.stderr


def test_a_record_replaced_by_another_valid_one_is_refused(
        sqlite_platform: Platform, ctx: RunContext) -> None:
    """What a second installation with the same master key (or a bug) would write."""
    platform = sqlite_platform
    first = run_backup(ctx)
    record_key = store.key_record_key("t-1")
    other = seal(master_key(Settings()), "t-1", DataKeys.single(new_data_key()),
                 {1: ACTIVE}, {1: now_text()})
    put(platform, record_key, other)
    with pytest.raises(VerificationFailed, match="holds another key there") as refused:
        run_backup(ctx)
    assert "data key 1" in str(refused.value) and record_key in str(refused.value)
    with pytest.raises(VerificationFailed, match="fails authentication"):
        restore.verify_snapshot(ctx, master_key(Settings()), "t-1", first.snapshot_id)
    assert get(platform, record_key) == other  # nothing overwritten by the refusal


def test_an_edited_record_fails_its_mac(sqlite_platform: Platform, ctx: RunContext) -> None:
    platform = sqlite_platform
    run_backup(ctx)
    assert runner.invoke(app, ["keys", "rotate", "t-1"]).exit_code == 0
    record_key = store.key_record_key("t-1")
    record = json.loads(get(platform, record_key))
    record["data_keys"][0]["state"], record["data_keys"][1]["state"] = "active", "retired"
    put(platform, record_key, json.dumps(record).encode())  # key 1 made active again
    with pytest.raises(VerificationFailed, match="fails its MAC") as refused:
        run_backup(ctx)
    assert record_key in str(refused.value)


def test_a_deleted_record_is_refused_and_a_fresh_start_is_reported(
        sqlite_platform: Platform, ctx: RunContext) -> None:
    platform = sqlite_platform
    run_backup(ctx)
    record_key = store.key_record_key("t-1")
    platform.s3.delete_object(Bucket=platform.backup_bucket, Key=record_key)
    with pytest.raises(VerificationFailed, match="is missing, but the tenant still has"):
        run_backup(ctx)
    assert store.head(platform.s3, platform.backup_bucket, record_key) is None

    objects.delete_prefix(platform.s3, platform.backup_bucket, store.tenant_prefix("t-1"))
    fresh = run_backup(ctx)  # everything gone: a new key, and the run says so
    (warning,) = fresh.warnings
    assert "marked lost" in warning and "[1]" in warning
    with KeyRegistry(Settings().resolved_control_url()) as registry:
        (known,) = registry.known("t-1")
    keys = ctx.store.data_key(master_key(Settings()), "t-1", create=False)
    assert known.check_value == keys.checks()[1]
    assert run_backup(ctx).warnings == []


def test_a_rotation_racing_a_purge_never_resurrects_the_record(
        sqlite_platform: Platform, ctx: RunContext) -> None:
    platform = sqlite_platform
    run_backup(ctx)
    record_key = store.key_record_key("t-1")

    def purge_meanwhile() -> None:  # the purge deletes the record between read and write
        platform.s3.delete_object(Bucket=platform.backup_bucket, Key=record_key)

    with (KeyRegistry(Settings().resolved_control_url()) as registry,
          pytest.raises(VerificationFailed, match="changed or was deleted")):
        KeyStore(platform.s3, platform.backup_bucket).rotate(
            master_key(Settings()), "t-1", registry, fence=purge_meanwhile)
    assert store.head(platform.s3, platform.backup_bucket, record_key) is None
    with pytest.raises(BadInput, match="has no key record"), KeyRegistry(
            Settings().resolved_control_url()) as registry:
        KeyStore(platform.s3, platform.backup_bucket).rotate(master_key(Settings()), "t-1",
                                                             registry)
