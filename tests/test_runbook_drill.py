"""Issue 13: the runbooks, executed as written (a scripted restore drill).

Every ```` ```sh drill ```` block of docs/restore-runbook.md, then of docs/operator-runbook.md,
runs in document order in its own ``bash -euo pipefail``, in an operator's environment: the
test platform's settings (``TENANT_EXPORT_*``, the AWS variables of the moto endpoint),
``PREFECT_API_URL`` of the session's Prefect server, and ``tenant-export`` and ``prefect``
resolving to this checkout. The test only sets the placeholders and does what the runbook
leaves to others (deleting a tenant by mistake, the platform's own migrations, a Prefect
restart that strands a lock slot); then it checks the outcome row by row and object by object:

* daily operation: backup of every tenant, snapshots, verify, prune dry-run;
* into a new database (bucket created as the runbook says): ``$TENANT`` and ``$OTHER_TENANT``
  together, value for value with the platform;
* a tenant deleted entirely from the live platform: back with ``--data-only``, its documents
  with ``--in-place --confirm``;
* the whole platform lost: a new database from the platform's migrations and a new documents
  bucket, every tenant listed from the backup bucket and restored, the new platform backed up
  and its counts checked; the shared table is in no backup;
* a lock slot stranded by the server: freed with ``prefect gcl update`` (both runbooks).
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import sys
import uuid
from pathlib import Path

import pytest

from kernel.errors import TenantBusy
from tests import awkward
from tests.conftest import Platform
from tests.runbook import Block, Drill, drill_blocks

ROOT = Path(__file__).resolve().parent.parent
RESTORE_RUNBOOK = ROOT / "docs" / "restore-runbook.md"
OPERATOR_RUNBOOK = ROOT / "docs" / "operator-runbook.md"
TENANT, OTHER_TENANT = "t-1", "t-2"
TENANTS = [t for t, _ in awkward.TENANTS]
CONTENT_TABLES = ["tenants", "members", "select", "documents", "loose"]  # the SQLite platform's
SHARED_TABLE = "audit_global"  # catalog: shared = true

# The headings of the steps the test prepares or checks around (a renamed heading fails here).
DELETED_BY_MISTAKE = "Data only"
DISASTER = "Whole platform lost (disaster recovery)"
STUCK_LOCK = {RESTORE_RUNBOOK.name: "Tenant locks and killed runs",
              OPERATOR_RUNBOOK.name: "Scaling"}

Rows = list[tuple[object, ...]]


def sqlite_path(url: str) -> Path:
    return Path(url.removeprefix("sqlite:///"))


def tenant_rows(db: Path, table: str, tenant: str) -> Rows:
    """The tenant's rows of ``table``, every column by name with its SQLite storage class, in a
    stable order: equal only when every value is the same value of the same type."""
    owner = "id" if table == "tenants" else "tenant_id"
    with contextlib.closing(sqlite3.connect(db)) as conn:
        names = sorted(r[1] for r in conn.execute(f'PRAGMA table_info("{table}")'))
        assert names, f"{db.name} has no table {table}"
        select = ", ".join(f"'{n}', typeof(\"{n}\"), \"{n}\"" for n in names)
        rows = conn.execute(f'SELECT {select} FROM "{table}" WHERE "{owner}" = ?',
                            (tenant,)).fetchall()
    return sorted(rows, key=repr)


def all_rows(db: Path, table: str) -> Rows:
    with contextlib.closing(sqlite3.connect(db)) as conn:
        return sorted(conn.execute(f'SELECT * FROM "{table}"').fetchall(), key=repr)


def snapshot_of(db: Path, tenants: list[str]) -> dict[tuple[str, str], Rows]:
    return {(table, t): tenant_rows(db, table, t) for table in CONTENT_TABLES for t in tenants}


def bucket_objects(platform: Platform, bucket: str) -> dict[str, bytes]:
    pages = platform.s3.get_paginator("list_objects_v2").paginate(Bucket=bucket)
    keys = [o["Key"] for page in pages for o in page.get("Contents", [])]
    return {k: bytes(platform.s3.get_object(Bucket=bucket, Key=k)["Body"].read()) for k in keys}


def blobs_of(tenants: list[str]) -> dict[str, bytes]:
    return {key: blob for tenant, _, _, key, blob in awkward.DOCUMENTS
            if tenant in tenants and blob is not None}


def set_slots(name: str, active: int) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitUpdate

    with get_client(sync_client=True) as client:
        client.update_global_concurrency_limit(name, GlobalConcurrencyLimitUpdate(
            active_slots=active))


def operator_env(platform: Platform, tmp_path: Path, placeholders: dict[str, str]
                 ) -> dict[str, str]:
    """The fixtures' settings (already in os.environ), the session's Prefect server, and this
    checkout's ``tenant-export``/``prefect`` first on PATH."""
    from prefect.settings import PREFECT_API_URL

    venv_bin = ROOT / ".venv" / "bin"
    bin_dir = venv_bin if (venv_bin / "tenant-export").exists() else Path(sys.executable).parent
    home = tmp_path / "prefect-home"
    home.mkdir()
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
           "PYTHONPATH": str(ROOT), "PREFECT_API_URL": str(PREFECT_API_URL.value()),
           "PREFECT_HOME": str(home), **placeholders}
    assert env["TENANT_EXPORT_SOURCE_URL"] == platform.source_url
    return env


def test_the_runbooks_work_as_written(sqlite_platform: Platform, tmp_path: Path) -> None:
    platform = sqlite_platform
    live = sqlite_path(platform.source_url)
    original = snapshot_of(live, TENANTS)
    shared_rows = all_rows(live, SHARED_TABLE)
    assert original[("members", TENANT)] and original[("members", OTHER_TENANT)]
    assert bucket_objects(platform, platform.documents_bucket) == blobs_of(TENANTS)

    suffix = uuid.uuid4().hex[:10]
    work = tmp_path / "operator"
    work.mkdir()
    inspect_db, new_platform_db = tmp_path / "inspect.sqlite", tmp_path / "platform-new.sqlite"
    placeholders = {
        "TENANT": TENANT, "OTHER_TENANT": OTHER_TENANT,
        "TARGET_URL": f"sqlite:///{inspect_db}", "TARGET_BUCKET": f"restore-{suffix}",
        "NEW_PLATFORM_URL": f"sqlite:///{new_platform_db}",
        "NEW_DOCUMENTS_BUCKET": f"docs-new-{suffix}",
    }
    lock = f"tenant-{TENANT}"

    def delete_tenant_by_mistake(_block: Block) -> None:
        """The tenant's rows and documents gone from the live platform, tenants row included."""
        with contextlib.closing(sqlite3.connect(live)) as conn, conn:
            for table in CONTENT_TABLES:
                owner = "id" if table == "tenants" else "tenant_id"
                conn.execute(f'DELETE FROM "{table}" WHERE "{owner}" = ?', (TENANT,))
        for key in blobs_of([TENANT]):
            platform.s3.delete_object(Bucket=platform.documents_bucket, Key=key)
        assert not any(snapshot_of(live, [TENANT]).values())

    def platform_migrations(_block: Block) -> None:
        """What the runbook leaves to the platform: its schema, and its shared rows from its
        own backup."""
        with contextlib.closing(sqlite3.connect(new_platform_db)) as conn, conn:
            conn.executescript(awkward.SQLITE_DDL)
            conn.executemany(f"INSERT INTO {SHARED_TABLE} VALUES (?, ?)", shared_rows)

    def strand_lock_slot(_block: Block) -> None:
        """A Prefect restart with in-memory leases: the slot taken, no lease to release."""
        from flows.locks import tenant_lock

        set_slots(lock, 1)
        with pytest.raises(TenantBusy), tenant_lock(TENANT, wait_seconds=0):
            pass

    def lock_is_free(_block: Block, _stdout: str) -> None:
        from flows.locks import tenant_lock

        with tenant_lock(TENANT, wait_seconds=0):
            pass

    before = {DELETED_BY_MISTAKE: delete_tenant_by_mistake, DISASTER: platform_migrations,
              **dict.fromkeys(STUCK_LOCK.values(), strand_lock_slot)}
    after = dict.fromkeys(STUCK_LOCK.values(), lock_is_free)
    blocks = drill_blocks(RESTORE_RUNBOOK) + drill_blocks(OPERATOR_RUNBOOK)
    for heading in before:  # each prepared step is in the runbooks, a lock fix in both
        assert heading in {b.heading for b in blocks}, f"no drill block under {heading!r}"
    assert {(b.page.name, b.heading) for b in blocks} >= set(STUCK_LOCK.items())

    drill = Drill(operator_env(platform, tmp_path, placeholders), work, before, after)
    try:
        drill.run_all(blocks)
    finally:  # later tests of the session must find the tenant's lock free
        with contextlib.suppress(Exception):
            set_slots(lock, 0)
        for block, seconds in zip(drill.ran, drill.seconds, strict=True):
            print(f"{seconds:6.1f} s  {block.where}")  # shown with -s or on failure
    assert drill.ran == blocks

    # Into a new database: both tenants, every value, every document.
    for tenant in (TENANT, OTHER_TENANT):
        for table in CONTENT_TABLES:
            assert tenant_rows(inspect_db, table, tenant) == original[(table, tenant)], (
                table, tenant)
    assert bucket_objects(platform, placeholders["TARGET_BUCKET"]) == blobs_of(
        [TENANT, OTHER_TENANT])

    # The tenant deleted by mistake is back in the live platform, rows and documents.
    assert snapshot_of(live, TENANTS) == original
    assert bucket_objects(platform, platform.documents_bucket) == blobs_of(TENANTS)

    # The whole platform: every tenant listed from the backup bucket, restored value for value;
    # the shared table holds what the platform's own backup gave it, no tenant backup had it.
    assert (work / "tenants.txt").read_text().split() == sorted(TENANTS)
    assert snapshot_of(new_platform_db, TENANTS) == original
    assert all_rows(new_platform_db, SHARED_TABLE) == shared_rows
    for tenant in TENANTS:
        restored = json.loads((work / f"restore-{tenant}.json").read_text())
        assert restored["mode"] == "data-only" and restored["warnings"] == []
        assert set(restored["rows"]) == set(CONTENT_TABLES)  # no shared table in any backup
    assert bucket_objects(platform, placeholders["NEW_DOCUMENTS_BUCKET"]) == blobs_of(TENANTS)
    after_recovery = json.loads((work / "backup-after-recovery.json").read_text())
    assert sorted(b["tenant"] for b in after_recovery if b["status"] == "ok") == sorted(TENANTS)
