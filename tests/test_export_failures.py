"""Faults: a package that fails verification is never linked and is cleaned up; a failure while
streaming leaves nothing behind; transient storage errors are retried; the tenant lock excludes."""

from __future__ import annotations

import contextlib
from typing import Any

import pytest

from flows import packaging
from kernel.errors import StorageError, TenantBusy, TransientStorageError, VerificationFailed
from tests.conftest import Platform


def run_export(tenant: str = "t-1") -> dict[str, Any]:
    from flows.export_flow import ExportRequest, offboarding_export

    return offboarding_export(ExportRequest(tenant_id=tenant, link_ttl_seconds=600))


def no_multipart_leftovers(platform: Platform) -> bool:
    uploads = platform.s3.list_multipart_uploads(Bucket=platform.export_bucket)
    return not uploads.get("Uploads")


def test_corrupted_object_fails_verification_and_is_cleaned_up(
    sqlite_platform: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_verify = packaging.verify_package

    def corrupt_then_verify(ctx: Any, tenant: str, export_id: str, records: Any) -> None:
        key = packaging.package_prefix(tenant, export_id) + "data/members.csv"
        body = sqlite_platform.get(key)
        flipped = bytes([body[0] ^ 0x01]) + body[1:]  # one bit flipped, same size
        sqlite_platform.s3.put_object(Bucket=sqlite_platform.export_bucket, Key=key, Body=flipped)
        real_verify(ctx, tenant, export_id, records)

    monkeypatch.setattr(packaging, "verify_package", corrupt_then_verify)
    with pytest.raises(VerificationFailed, match=r"data/members\.csv"):
        run_export()
    assert sqlite_platform.export_keys() == []  # never published, nothing left
    assert no_multipart_leftovers(sqlite_platform)


def test_failure_while_streaming_leaves_nothing(
    sqlite_platform: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    import flows.packaging as module

    def broken_blob(client: Any, bucket: str, key: str | None) -> Any:
        if key == "t1/dup-b":
            raise StorageError(f"reading document {key!r}: AccessDenied", tenant_id="t-1")
        return real_open(client, bucket, key)

    real_open = module.open_blob
    monkeypatch.setattr(module, "open_blob", broken_blob)
    with pytest.raises(StorageError, match="AccessDenied"):
        run_export()
    assert sqlite_platform.export_keys() == []
    assert no_multipart_leftovers(sqlite_platform)


def test_transient_error_is_retried(sqlite_platform: Platform,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    calls = {"n": 0}
    real_verify = packaging.verify_package

    def flaky(ctx: Any, tenant: str, export_id: str, records: Any) -> None:
        calls["n"] += 1
        if calls["n"] == 1:
            raise TransientStorageError("reading back: SlowDown", tenant_id=tenant)
        real_verify(ctx, tenant, export_id, records)

    monkeypatch.setattr(packaging, "verify_package", flaky)
    result = run_export()
    assert calls["n"] == 2
    assert result["files"][0]["path"] == "datapackage.json"


def test_terminal_error_is_not_retried(sqlite_platform: Platform,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    calls = {"n": 0}

    def denied(ctx: Any, tenant: str, export_id: str, records: Any) -> None:
        calls["n"] += 1
        raise StorageError("reading back: AccessDenied", tenant_id=tenant)

    monkeypatch.setattr(packaging, "verify_package", denied)
    with pytest.raises(StorageError):
        run_export()
    assert calls["n"] == 1
    assert sqlite_platform.export_keys() == []


def test_tenant_lock_excludes_a_second_run(sqlite_platform: Platform,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    from flows.locks import tenant_lock

    monkeypatch.setenv("TENANT_EXPORT_LOCK_WAIT_SECONDS", "1")
    with tenant_lock("t-1", wait_seconds=30), pytest.raises(TenantBusy, match="t-1"):
        run_export("t-1")
    assert sqlite_platform.export_keys() == []
    run_export("t-2")  # other tenants are not blocked ...
    with tenant_lock("t-2", wait_seconds=5):
        pass
    assert run_export("t-1")["tenant_id"] == "t-1"  # ... and the lock is released after use


def test_lock_is_strict_when_the_limit_vanishes(prefect_server: None) -> None:
    """The lock must never silently degrade into no lock (Prefect's non-strict default)."""
    from prefect.client.orchestration import get_client
    from prefect.concurrency.sync import concurrency

    from flows.locks import lock_name

    name = lock_name("never-created")
    with get_client(sync_client=True) as client, contextlib.suppress(Exception):
        client.delete_global_concurrency_limit_by_name(name)  # absent already is fine
    with pytest.raises(Exception, match=r"not found|does not exist|Concurrency limit"), concurrency(
            name, occupy=1, timeout_seconds=1, strict=True):
        pass


def test_a_disabled_lock_is_reactivated(sqlite_platform: Platform,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """An operator disabling the limit in the UI must not turn the lock off."""
    monkeypatch.setenv("TENANT_EXPORT_LOCK_WAIT_SECONDS", "2")
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitUpdate

    from flows.locks import lock_name, tenant_lock

    with tenant_lock("t-1", wait_seconds=5):
        pass
    name = lock_name("t-1")
    with get_client(sync_client=True) as client:
        client.update_global_concurrency_limit(
            name, GlobalConcurrencyLimitUpdate(active=False, limit=5))
    with tenant_lock("t-1", wait_seconds=5), pytest.raises(TenantBusy):
        run_export("t-1")
    with get_client(sync_client=True) as client:
        limit = client.read_global_concurrency_limit_by_name(name)
    assert limit.active and limit.limit == 1


def test_key_outside_the_tenant_prefix_is_refused(sqlite_platform: Platform,
                                                  tmp_path: Any) -> None:
    """A documents row of t-1 pointing at t-2's blob must not ship t-2's file."""
    import sqlite3

    from kernel.errors import TerminalError

    db = sqlite_platform.source_url.removeprefix("sqlite:///")
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE documents SET storage_key = 't2/secret' WHERE id = 3")
    catalog = tmp_path / "catalog.toml"
    catalog.write_text(catalog.read_text() + '\n[documents]\nkey_prefix = "t1/"\n')
    with pytest.raises(TerminalError, match=r"document 3 .*'t2/secret'"):
        run_export("t-1")
    assert sqlite_platform.export_keys() == []
