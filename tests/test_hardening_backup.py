"""Issue 8, backups and exports: prune beside a running backup, a killed export's debris,
blobs planted in the bucket, a lost data-key record.

Where a finding is a class of input, the class is parametrized: every point at which a backup
can be caught by prune, every kind of object planted at a blob's name, every kind of backup
content left when the key record is gone.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import subprocess
import sys
import textwrap
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import pytest

from flows import backup, backup_documents, prune, restore
from flows.context import RunContext
from flows.locks import tenant_lock
from flows.package_archive import ARCHIVE_INFO
from kernel.errors import VerificationFailed
from kernel.settings import Settings
from storage import backup_store as store
from storage import objects
from storage.keys import KeyWrapper, parse_master_key
from storage.retention import RetentionPolicy
from storage.snapshots import BLOB_OBJECT
from tests import awkward
from tests.conftest import Platform

ROOT = Path(__file__).resolve().parent.parent
BIG = "t1/report"


def wrapper() -> KeyWrapper:
    return parse_master_key(Settings().master_key_value() or "")


def keys(platform: Platform, bucket: str, prefix: str = "") -> list[str]:
    return objects.list_keys(platform.s3, bucket, prefix)


def open_uploads(platform: Platform, bucket: str, prefix: str = "") -> list[str]:
    response = platform.s3.list_multipart_uploads(Bucket=bucket, Prefix=prefix)
    return [u["Key"] for u in response.get("Uploads", [])]


def put(platform: Platform, key: str, data: bytes) -> None:
    platform.s3.put_object(Bucket=platform.backup_bucket, Key=key, Body=data)


def get(platform: Platform, key: str) -> bytes:
    return bytes(platform.s3.get_object(Bucket=platform.backup_bucket, Key=key)["Body"].read())


# -- 1. prune beside a running backup --------------------------------------------------------


class Pause:
    """Holds a backup running in a thread at one point until the test lets it go on."""

    def __init__(self) -> None:
        self.reached, self.resume = threading.Event(), threading.Event()

    def here(self) -> None:
        self.reached.set()
        assert self.resume.wait(120), "the test never resumed the backup"


def pause_mid_blob(monkeypatch: pytest.MonkeyPatch, pause: Pause) -> None:
    """2 MiB of the big document are in its staging multipart upload."""
    real = backup_documents.open_document
    monkeypatch.setattr(backup_documents, "SMALL_BLOB_BYTES", 1024 * 1024)  # multipart path

    def open_document(client: Any, bucket: str, key: str) -> Any:
        opened = real(client, bucket, key)
        if opened is None or key != BIG:
            return opened
        found, chunks = opened

        def paused() -> Iterator[bytes]:
            sent = 0
            for chunk in chunks:
                if sent >= 2 * 1024 * 1024 and not pause.reached.is_set():
                    pause.here()
                sent += len(chunk)
                yield chunk

        return found, paused()

    monkeypatch.setattr(backup_documents, "open_document", open_document)


def pause_blob_written(monkeypatch: pytest.MonkeyPatch, pause: Pause) -> None:
    """A small blob is PUT at its name, not yet read back nor referenced by any manifest."""
    monkeypatch.setattr(backup, "checkpoint",
                        lambda name: pause.here() if name == "blob-written" else None)


def pause_blob_staged(monkeypatch: pytest.MonkeyPatch, pause: Pause) -> None:
    """The big document is complete in staging/, not yet copied to blobs/."""
    monkeypatch.setattr(backup_documents, "SMALL_BLOB_BYTES", 1024 * 1024)  # multipart path
    real = store.copy

    def copy(*args: Any, **kwargs: Any) -> None:
        if not pause.reached.is_set():
            pause.here()
        real(*args, **kwargs)

    monkeypatch.setattr(store, "copy", copy)


def pause_after_table(monkeypatch: pytest.MonkeyPatch, pause: Pause) -> None:
    """A table is written to the new snapshot's folder, which has no manifest yet."""
    monkeypatch.setattr(backup, "checkpoint",
                        lambda name: pause.here() if name == "table:members" else None)


PAUSES = [
    pytest.param(pause_mid_blob, id="mid-blob-upload"),
    pytest.param(pause_blob_staged, id="blob-staged"),
    pytest.param(pause_blob_written, id="blob-written"),
    pytest.param(pause_after_table, id="snapshot-without-manifest"),
]


@pytest.mark.parametrize("pause_at", PAUSES)
def test_prune_never_touches_what_a_running_backup_writes(
        sqlite_platform: Platform, ctx: RunContext, monkeypatch: pytest.MonkeyPatch,
        pause_at: Callable[[pytest.MonkeyPatch, Pause], None]) -> None:
    platform, bucket = sqlite_platform, sqlite_platform.backup_bucket
    first = backup.backup_tenant(ctx, wrapper(), "t-1")  # so prune has blobs to consider
    changed = os.urandom(3 * 1024 * 1024 + 5)  # a new version: streamed through staging/
    platform.s3.put_object(Bucket=platform.documents_bucket, Key=BIG, Body=changed)
    pause = Pause()
    pause_at(monkeypatch, pause)
    outcome: dict[str, Any] = {}

    def run() -> None:
        context = RunContext.open(Settings())
        try:
            outcome["summary"] = backup.backup_tenant(context, wrapper(), "t-1")
        except BaseException as err:  # noqa: BLE001 - handed to the test thread
            outcome["error"] = err
        finally:
            context.close()

    thread = threading.Thread(target=run)
    thread.start()
    try:
        assert pause.reached.wait(120), outcome
        in_flight = (keys(platform, bucket, store.tenant_prefix("t-1")),
                     open_uploads(platform, bucket, store.tenant_prefix("t-1")))
        report = prune.prune_tenant(ctx, wrapper(), "t-1", RetentionPolicy(), dry_run=False)
        assert (keys(platform, bucket, store.tenant_prefix("t-1")),
                open_uploads(platform, bucket, store.tenant_prefix("t-1"))) == in_flight
        assert report["staging_deleted"] == 0 and report["uploads_aborted"] == 0
        assert report["uploads_left"] == len(in_flight[1])  # counted, not aborted
        assert report["incomplete_snapshots_deleted"] == [] and report["blobs_deleted"] == []
    finally:
        pause.resume.set()
        thread.join(120)
    assert "error" not in outcome, outcome.get("error")
    second = outcome["summary"]
    assert ctx.store.list_snapshots("t-1") == sorted([first.snapshot_id, second.snapshot_id])
    restore.verify_snapshot(ctx, wrapper(), "t-1", second.snapshot_id)
    assert keys(platform, bucket, store.staging_prefix("t-1")) == []


# -- 2. a killed export leaves debris the next run removes -----------------------------------

KILLED_EXPORT = textwrap.dedent("""
    import os
    import sys

    from storage import objects

    objects.SINGLE_PUT_BYTES = 1024 * 1024  # the ZIP part streams into a multipart upload
    real_write = objects.HashingSink.write


    def write(self, data):
        written = real_write(self, data)
        if "documents-0001.zip" in self._what and self.bytes >= 2 * 1024 * 1024:
            os._exit(137)  # mid-ZIP, holding the lock: no cleanup, no release
        return written


    objects.HashingSink.write = write

    from flows.export_flow import ExportRequest, offboarding_export

    offboarding_export(ExportRequest(tenant_id="t-1"))
    sys.exit(3)
""")


def test_a_killed_export_is_cleaned_up_by_the_next_run_without_waiting(
        sqlite_platform: Platform, monkeypatch: pytest.MonkeyPatch) -> None:
    from prefect.settings import PREFECT_API_URL

    from flows.export_flow import ExportRequest, offboarding_export

    platform, bucket = sqlite_platform, sqlite_platform.export_bucket
    env = os.environ | {"PYTHONPATH": str(ROOT), "PREFECT_API_URL": str(PREFECT_API_URL.value())}
    child = subprocess.run([sys.executable, "-c", KILLED_EXPORT], env=env, cwd=ROOT,
                           capture_output=True, text=True, timeout=300, check=False)
    try:
        assert child.returncode == 137, (child.returncode, child.stderr[-3000:])
        orphans = objects.list_prefixes(platform.s3, bucket, "exports/t-1/")
        assert len(orphans) == 1  # CSVs of the killed run, no datapackage.json
        assert not [k for k in keys(platform, bucket) if k.endswith("datapackage.json")]
        assert open_uploads(platform, bucket)  # the ZIP part's upload, left open

        monkeypatch.setenv("TENANT_EXPORT_LOCK_WAIT_SECONDS", "0")  # the dead lease stays
        result = offboarding_export(ExportRequest(tenant_id="t-1", link_ttl_seconds=600))
    finally:  # whatever failed above, later tests of this session must find t-1's lock free
        with contextlib.suppress(Exception), tenant_lock("t-1", wait_seconds=0):
            pass
    assert objects.list_prefixes(platform.s3, bucket, "exports/t-1/") == [
        f"exports/t-1/{result['export_id']}/"]
    folder = f"exports/t-1/{result['export_id']}/"
    assert sorted(keys(platform, bucket)) == sorted(  # the files and the archive's own record
        [folder + ARCHIVE_INFO, *(folder + f["path"] for f in result["files"])])
    assert open_uploads(platform, bucket) == []


# -- 3. blobs are reused only when the previous manifest lists them --------------------------


def plant_random(ctx: RunContext, platform: Platform, key: str) -> None:
    put(platform, key, os.urandom(4096))


def plant_empty(ctx: RunContext, platform: Platform, key: str) -> None:
    put(platform, key, b"")


def _sealed(ctx: RunContext, tenant: str, key: str, content: bytes) -> None:
    dek = ctx.store.data_key(wrapper(), tenant, create=True)

    def write(sink: IO[bytes]) -> None:
        sink.write(content)

    ctx.store.seal(dek, tenant, key, BLOB_OBJECT, write)


def plant_own_blob_of_other_content(ctx: RunContext, platform: Platform, key: str) -> None:
    """A valid blob of this tenant (it authenticates) holding other bytes."""
    _sealed(ctx, "t-1", key, b"not the document")


def plant_other_tenants_blob(ctx: RunContext, platform: Platform, key: str) -> None:
    staging = f"backups/t-2/staging/{uuid.uuid4().hex}"
    _sealed(ctx, "t-2", staging, b"tenant two")
    put(platform, key, get(platform, staging))


Plant = Callable[[RunContext, Platform, str], None]
PLANTS = [
    pytest.param(plant_random, id="random-bytes"),
    pytest.param(plant_empty, id="empty"),
    pytest.param(plant_own_blob_of_other_content, id="own-blob-other-content"),
    pytest.param(plant_other_tenants_blob, id="other-tenants-blob"),
]


def restored_documents(platform: Platform, ctx: RunContext, tmp_path: Path,
                       snapshot_id: str) -> dict[str, bytes]:
    bucket = f"restored-{uuid.uuid4().hex[:8]}"
    platform.s3.create_bucket(Bucket=bucket)
    restore.restore_snapshot(ctx, wrapper(), "t-1", f"sqlite:///{tmp_path}/{bucket}.sqlite",
                             snapshot_id=snapshot_id, documents_bucket=bucket)
    return {k: bytes(platform.s3.get_object(Bucket=bucket, Key=k)["Body"].read())
            for k in keys(platform, bucket)}


@pytest.mark.parametrize("when", ["first-backup", "changed-document"])
@pytest.mark.parametrize("plant", PLANTS)
def test_an_object_planted_at_a_blob_name_is_never_reused(
        sqlite_platform: Platform, ctx: RunContext, tmp_path: Path, plant: Plant,
        when: str) -> None:
    platform = sqlite_platform
    expected = {k: v for k, v in awkward.blobs().items() if k.startswith("t1/")}
    ctx.store.data_key(wrapper(), "t-1", create=True)  # a tenant with a key, as in production
    if when == "changed-document":
        backup.backup_tenant(ctx, wrapper(), "t-1")
        expected["t1/passwd"] = b"root:x:0:0:changed\n"
        platform.s3.put_object(Bucket=platform.documents_bucket, Key="t1/passwd",
                               Body=expected["t1/passwd"])
    target = store.blob_key("t-1", hashlib.sha256(expected["t1/passwd"]).hexdigest())
    plant(ctx, platform, target)

    first = backup.backup_tenant(ctx, wrapper(), "t-1")
    second = backup.backup_tenant(ctx, wrapper(), "t-1")  # unchanged: reuses via the manifest
    for snapshot_id in (first.snapshot_id, second.snapshot_id):
        restore.verify_snapshot(ctx, wrapper(), "t-1", snapshot_id)
    assert second.blobs_uploaded == 0
    assert restored_documents(platform, ctx, tmp_path, second.snapshot_id) == expected


# -- 5. a lost data-key record is never silently replaced ------------------------------------


def remove(platform: Platform, *kinds: str) -> None:
    for kind in kinds:
        objects.delete_prefix(platform.s3, platform.backup_bucket,
                              f"{store.tenant_prefix('t-1')}{kind}/")


REMAINS = [
    pytest.param((), id="snapshots-and-blobs"),
    pytest.param(("snapshots",), id="blobs-only"),
    pytest.param(("blobs",), id="snapshots-only"),
]


@pytest.mark.parametrize("removed", REMAINS)
def test_a_missing_key_record_is_refused_while_backups_remain(
        sqlite_platform: Platform, ctx: RunContext, removed: tuple[str, ...]) -> None:
    platform, bucket = sqlite_platform, sqlite_platform.backup_bucket
    backup.backup_tenant(ctx, wrapper(), "t-1")
    record = store.key_record_key("t-1")
    platform.s3.delete_object(Bucket=bucket, Key=record)
    remove(platform, *removed)
    before = keys(platform, bucket)
    with pytest.raises(VerificationFailed) as refused:
        backup.backup_tenant(ctx, wrapper(), "t-1")
    assert record in str(refused.value) and "'t-1'" in str(refused.value)
    assert keys(platform, bucket) == before  # no new key, no new snapshot folder
    assert open_uploads(platform, bucket) == []


def test_a_key_is_created_once_nothing_of_the_tenant_remains(
        sqlite_platform: Platform, ctx: RunContext) -> None:
    backup.backup_tenant(ctx, wrapper(), "t-1")
    objects.delete_prefix(sqlite_platform.s3, sqlite_platform.backup_bucket,
                          store.tenant_prefix("t-1"))  # a deliberate fresh start
    summary = backup.backup_tenant(ctx, wrapper(), "t-1")
    restore.verify_snapshot(ctx, wrapper(), "t-1", summary.snapshot_id)


def test_the_prune_flow_aborts_a_dead_backups_upload_under_the_lock(
        sqlite_platform: Platform) -> None:
    """The flow holds the tenant lock, so it may abort open uploads (a hand-run prune_tenant
    without it only counts them, as the paused-backup test shows)."""
    from flows.backup_flow import prune_backups
    from tests.test_backup_faults import KILLED, run_killed_backup

    platform, bucket = sqlite_platform, sqlite_platform.backup_bucket
    child = run_killed_backup("mid-blob")
    assert child.returncode == KILLED, child.stderr[-3000:]
    assert open_uploads(platform, bucket, store.staging_prefix("t-1"))
    (report,) = prune_backups()
    assert report["uploads_aborted"] == 1 and report["uploads_left"] == 0
    assert open_uploads(platform, bucket) == []
