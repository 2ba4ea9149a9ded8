"""Faults: a package that fails verification is never linked and is cleaned up; a failure while
streaming leaves nothing behind; real S3 error answers and dropped connections (through
``tests.s3proxy``) are retried when transient and fail at once when terminal; the tenant lock
excludes."""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator
from typing import Any

import pytest

from flows import packaging
from flows.retry import RETRY_DELAYS
from kernel.errors import StorageError, TenantBusy, TransientStorageError, VerificationFailed
from tests.conftest import Platform
from tests.s3proxy import Predicate, S3Proxy, on


def run_export(tenant: str = "t-1") -> dict[str, Any]:
    from flows.export_flow import ExportRequest, offboarding_export

    return offboarding_export(ExportRequest(tenant_id=tenant, link_ttl_seconds=600))


def no_multipart_leftovers(platform: Platform) -> bool:
    uploads = platform.s3.list_multipart_uploads(Bucket=platform.export_bucket)
    return not uploads.get("Uploads")


def test_corrupted_object_fails_verification_and_is_cleaned_up(
    sqlite_platform: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_verify = packaging.archive_verified

    def corrupt_then_verify(ctx: Any, tenant: str, export_id: str, created: Any,
                            records: Any) -> Any:
        key = packaging.package_prefix(tenant, export_id) + "data/members.csv"
        body = sqlite_platform.get(key)
        flipped = bytes([body[0] ^ 0x01]) + body[1:]  # one bit flipped, same size
        sqlite_platform.s3.put_object(Bucket=sqlite_platform.export_bucket, Key=key, Body=flipped)
        return real_verify(ctx, tenant, export_id, created, records)

    monkeypatch.setattr(packaging, "archive_verified", corrupt_then_verify)
    with pytest.raises(VerificationFailed, match=r"data/members\.csv"):
        run_export()
    assert sqlite_platform.export_keys() == []  # never published, nothing left
    assert no_multipart_leftovers(sqlite_platform)


def test_failure_while_streaming_leaves_nothing(
    sqlite_platform: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    import flows.package_documents as module

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


@pytest.fixture
def proxy(sqlite_platform: Platform, monkeypatch: pytest.MonkeyPatch) -> Iterator[S3Proxy]:
    """The pipeline talks to moto through the fault proxy (the buckets were made directly).

    Retry waits are made tiny, not their number: Prefect's task delays, and boto3's jittered
    backoff (up to 1 s, 2 s, 4 s ... for throttling answers); boto3 still makes every attempt.
    """
    from botocore.retries.standard import ExponentialBackoff

    from flows import export_flow

    for step in (export_flow.write_package, export_flow.verify_package,
                 export_flow.publish_manifest, export_flow.discard_package):
        monkeypatch.setattr(step, "retry_delay_seconds", [0.05] * len(RETRY_DELAYS))
    monkeypatch.setattr(ExponentialBackoff, "delay_amount", lambda self, context: 0.0)
    with S3Proxy(sqlite_platform.endpoint) as running:
        monkeypatch.setenv("AWS_ENDPOINT_URL_S3", running.url)
        yield running


def boto_attempts() -> int:
    """How many times the pipeline's S3 client tries one call (boto3 counts the first one)."""
    from kernel.settings import Settings
    from storage.s3 import make_client

    return int(make_client(Settings()).meta.config.retries["total_max_attempts"])


def assert_complete(platform: Platform, result: dict[str, Any]) -> None:
    """Every file of the result is stored with the advertised size and SHA-256, nothing else
    (but the archive's own record, for fresh links)."""
    prefix = packaging.package_prefix(result["tenant_id"], result["export_id"])
    assert sorted(platform.export_keys()) == sorted(
        [prefix + f["path"] for f in result["files"]] + [prefix + "x-archive.json"])
    for f in result["files"]:
        body = platform.get(prefix + f["path"])
        assert (len(body), hashlib.sha256(body).hexdigest()) == (f["bytes"], f["sha256"])
    assert no_multipart_leftovers(platform)


MEMBERS = "data/members.csv"
MEMBERS_READ_BACK = on("GetObject", key_suffix="/" + MEMBERS)


def read_backs(proxy: S3Proxy, platform: Platform) -> list[str]:
    """Package paths read from the export bucket, in order (only verification reads them)."""
    gets = proxy.requests(on("GetObject", bucket=platform.export_bucket))
    return [s.request.key.split("/", 3)[3] for s in gets]


def verified_once(result: dict[str, Any]) -> list[str]:
    """The read-backs of a run that verified at once: every file into the archive, then the
    archive itself, its record and the manifest (each read back after it was written)."""
    archive, manifest, *records = [f["path"] for f in result["files"]]
    return [*records, archive, "x-archive.json", manifest]


def verified_after_retry(result: dict[str, Any], failed_reads: int) -> list[str]:
    """The read-backs of a run whose verification read members.csv ``failed_reads`` times in
    vain, then ran again from the first file (a Prefect retry), then went on as usual."""
    records = [f["path"] for f in result["files"]][2:]
    first_pass = records[:records.index(MEMBERS)] + [MEMBERS] * failed_reads
    return first_pass + verified_once(result)


def test_transient_error_is_retried(sqlite_platform: Platform, proxy: S3Proxy) -> None:
    """503 SlowDown on every attempt boto3 makes: the Prefect task retry reads back again."""
    attempts = boto_attempts()  # 6: ``max_attempts=5`` counts retries, not attempts
    fault = proxy.fail_next(attempts, status=503, code="SlowDown", when=MEMBERS_READ_BACK)
    result = run_export()
    assert fault.hits == attempts
    assert_complete(sqlite_platform, result)
    assert [s.outcome for s in proxy.requests(MEMBERS_READ_BACK)] == (
        ["error"] * attempts + ["forwarded"])
    # boto3 gave up after ``attempts`` answers; the step then ran again from its first file
    assert read_backs(proxy, sqlite_platform) == verified_after_retry(result, attempts)


def test_terminal_error_is_not_retried(sqlite_platform: Platform, proxy: S3Proxy) -> None:
    """403 AccessDenied: neither boto3 nor Prefect tries again, and the package is discarded."""
    fault = proxy.fail_next(50, status=403, code="AccessDenied", when=MEMBERS_READ_BACK)
    with pytest.raises(StorageError, match=r"data/members\.csv.*AccessDenied") as failure:
        run_export()
    assert not isinstance(failure.value, TransientStorageError)
    assert fault.hits == 1
    assert [s.outcome for s in proxy.requests(MEMBERS_READ_BACK)] == ["error"]
    reads = read_backs(proxy, sqlite_platform)  # the step ran once and stopped at members.csv
    assert reads[-1] == MEMBERS and len(reads) == len(set(reads))
    assert sqlite_platform.export_keys() == []
    assert no_multipart_leftovers(sqlite_platform)


@pytest.mark.parametrize(("when", "after_bytes", "failed_reads"), [
    # reset before any answer: boto3 retries the (single-PUT) upload itself, verification once
    (on("PutObject", key_suffix="/" + MEMBERS), None, None),
    # the read-back's body cut short: boto3 has returned already, the Prefect step retries
    (MEMBERS_READ_BACK, 100, 1),
], ids=["upload-put-reset", "read-back-cut-mid-body"])
def test_dropped_connection_is_retried(sqlite_platform: Platform, proxy: S3Proxy,
                                       when: Predicate, after_bytes: int | None,
                                       failed_reads: int | None) -> None:
    fault = proxy.drop_next(1, when=when, after_bytes=after_bytes)
    result = run_export()
    assert fault.hits == 1
    assert_complete(sqlite_platform, result)
    assert [s.outcome for s in proxy.requests(when)] == ["dropped", "forwarded"]
    assert read_backs(proxy, sqlite_platform) == (
        verified_once(result) if failed_reads is None
        else verified_after_retry(result, failed_reads))


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
    catalog.write_text(catalog.read_text().replace(
        "keys_tenant_scoped = false", 'key_prefix = "t1/"\nkeys_tenant_scoped = false'))
    with pytest.raises(TerminalError, match=r"document 3 .*'t2/secret'"):
        run_export("t-1")
    assert sqlite_platform.export_keys() == []


def test_links_when_access_is_denied_is_a_failure_not_gone(sqlite_platform: Platform,
                                                           proxy: S3Proxy) -> None:
    """links HEADs the manifest first: a missing one means the package is gone (bad input,
    exit 2), but an access-denied answer is a storage failure (exit 1), never "gone"."""
    from flows.export_flow import export_links
    from kernel.errors import BadInput

    result = run_export()
    proxy.fail_next(1, status=403, code="AccessDenied",
                    when=on("HeadObject", key_suffix="/datapackage.json"))
    with pytest.raises(StorageError, match=r"datapackage\.json.*403") as failure:
        export_links("t-1", result["export_id"], 600)  # a HEAD answer has no error code
    assert not isinstance(failure.value, BadInput)
    assert export_links("t-1", result["export_id"], 600)["export_id"] == result["export_id"]
