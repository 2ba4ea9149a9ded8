"""The master key in AWS KMS (issue 12): moto's KMS, in-process for the wrapper itself and over
HTTP (the same moto server as S3, reached through ``AWS_ENDPOINT_URL_KMS`` as boto3 does) for
the whole pipeline.

Backup, verify, restore, export and purge run through the flows with a KMS master key and with
a local one; a backup made under one kind is refused by the other, naming both key ids, and a
backup under the wrong key never answers with a new data key.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws

from flows import backup, restore
from flows.context import RunContext, S3Context
from flows.keyring import master_key
from kernel.errors import TerminalError, VerificationFailed
from kernel.settings import Settings
from storage import backup_store as store
from storage import objects
from storage.keys import generate_master_key, new_data_key, parse_master_key
from storage.kms import KmsKeyWrapper
from storage.wrapping import WrapContext, Wrapped
from tests import awkward
from tests.conftest import Platform
from tests.test_backup_restore import compare_restored

# -- the wrapper, on moto's in-process KMS ------------------------------------------------------


@pytest.fixture
def kms(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    for name in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_KMS", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    with mock_aws():
        yield boto3.session.Session().client("kms", region_name="eu-central-1")


def test_kms_wraps_bound_to_tenant_and_key_id(kms: Any) -> None:
    arn = kms.create_key()["KeyMetadata"]["Arn"]
    kms.create_alias(AliasName="alias/tenant-backups", TargetKeyId=arn)
    wrapper = parse_master_key("kms:alias/tenant-backups", kms_client=kms)
    assert isinstance(wrapper, KmsKeyWrapper)
    assert wrapper.key_id == arn  # the alias resolved: records name the key itself
    assert wrapper.describe() == f"KMS key {arn} (Enabled)"
    dek, context = new_data_key(), WrapContext("t-1", 2)
    wrapped = wrapper.wrap(dek, context)
    assert wrapped.nonce is None and dek not in wrapped.wrapped
    assert wrapper.unwrap(wrapped, context) == dek
    for other in (WrapContext("t-2", 2), WrapContext("t-1", 1), WrapContext("t-1", None)):
        with pytest.raises(VerificationFailed, match="InvalidCiphertextException"):
            wrapper.unwrap(wrapped, other)
    flipped = bytearray(wrapped.wrapped)
    flipped[-1] ^= 1
    with pytest.raises(VerificationFailed):
        wrapper.unwrap(Wrapped(bytes(flipped)), context)


def test_a_kms_key_unfit_for_wrapping_is_refused(kms: Any) -> None:
    meta = kms.create_key()["KeyMetadata"]
    arn = meta["Arn"]
    kms.disable_key(KeyId=meta["KeyId"])  # moto takes the id here, not the ARN
    with pytest.raises(TerminalError, match="is Disabled"):
        parse_master_key(arn, kms_client=kms).describe()
    with pytest.raises(TerminalError, match="NotFoundException"):
        parse_master_key("kms:alias/no-such-key", kms_client=kms).key_id  # noqa: B018


# -- the pipeline, on moto's KMS server --------------------------------------------------------


@dataclass(frozen=True)
class KmsKey:
    arn: str
    alias: str


def make_kms_key(platform: Platform, monkeypatch: pytest.MonkeyPatch) -> KmsKey:
    """A fresh KMS key with an alias on the moto server; the pipeline reaches it through
    ``AWS_ENDPOINT_URL_KMS`` (boto3's own rule: no setting of ours is involved)."""
    monkeypatch.setenv("AWS_ENDPOINT_URL_KMS", platform.endpoint)
    client = boto3.session.Session().client("kms", endpoint_url=platform.endpoint,
                                            region_name="us-east-1")
    arn = client.create_key(Description="tenant-export test KEK")["KeyMetadata"]["Arn"]
    alias = f"alias/tenant-backups-{uuid.uuid4().hex[:8]}"
    client.create_alias(AliasName=alias, TargetKeyId=arn)
    return KmsKey(arn, alias)


def use_master_key(kind: str, platform: Platform, monkeypatch: pytest.MonkeyPatch) -> str:
    """Configure a master key of ``kind``; returns the key id records will name."""
    if kind == "kms":
        key = make_kms_key(platform, monkeypatch)
        monkeypatch.setenv("TENANT_EXPORT_MASTER_KEY", f"kms:{key.alias}")
        return key.arn
    monkeypatch.setenv("TENANT_EXPORT_MASTER_KEY", generate_master_key())
    return master_key(Settings()).key_id


def record_of(platform: Platform, tenant: str) -> dict[str, Any]:
    body = platform.s3.get_object(Bucket=platform.backup_bucket,
                                  Key=store.key_record_key(tenant))["Body"].read()
    return dict(json.loads(body))


@pytest.mark.parametrize("kind", ["kms", "local"])
def test_backup_verify_restore_export_purge_with_each_kind_of_master_key(
        sqlite_platform: Platform, monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
        kind: str) -> None:
    from flows.backup_flow import nightly_backup
    from flows.export_flow import ExportRequest, offboarding_export
    from flows.offboarding_flow import PurgeRequest, purge_tenant
    from flows.restore_flow import restore_backup, verify_backup

    platform = sqlite_platform
    key_id = use_master_key(kind, platform, monkeypatch)

    (backed,) = nightly_backup(["t-1"])
    assert backed["status"] == "ok", backed
    record = record_of(platform, "t-1")
    assert record["key_id"] == key_id and record["alg"] == ("KMS" if kind == "kms" else "A256GCM")
    assert [k["id"] for k in record["data_keys"]] == [1]

    verified = verify_backup("t-1")
    assert verified["ok"] and verified["snapshot_id"] == backed["snapshot_id"]
    target, docs = tmp_path / "restored.sqlite", f"restored-{uuid.uuid4().hex[:8]}"
    platform.s3.create_bucket(Bucket=docs)
    monkeypatch.setenv("KMS_RESTORE_TARGET_URL", f"sqlite:///{target}")
    restored = restore_backup("t-1", "env:KMS_RESTORE_TARGET_URL", None, docs)
    compare_restored(platform.source_url, f"sqlite:///{target}")
    expected = {d[3]: d[4] for d in awkward.DOCUMENTS if d[0] == "t-1" and d[4] is not None}
    assert restored["documents_restored"] == len(expected)
    for storage_key, content in expected.items():
        assert platform.s3.get_object(Bucket=docs, Key=storage_key)["Body"].read() == content

    exported = offboarding_export(ExportRequest(tenant_id="t-1"))  # unaffected by the key
    assert any(f["path"] == "datapackage.json" for f in exported["files"])

    bucket = platform.backup_bucket
    kept = {k: platform.s3.get_object(Bucket=bucket, Key=k)["Body"].read()
            for k in objects.list_keys(platform.s3, bucket, "backups/t-1/")
            if "/keys/" not in k}  # a copy of the backups somewhere, without the key record
    certificate = purge_tenant(PurgeRequest(tenant_id="t-1", confirm=True))
    assert certificate["tenant_id"] == "t-1"
    (destroyed,) = certificate["deleted"]["data_keys"]["records"]
    assert destroyed["key_id"] == key_id
    assert objects.list_keys(platform.s3, bucket, "backups/t-1/") == []
    for key, body in kept.items():  # the copy comes back: unreadable, the key is gone
        platform.s3.put_object(Bucket=bucket, Key=key, Body=body)
    with pytest.raises(VerificationFailed, match="no data key"):
        restore.verify_snapshot(S3Context.open(Settings()), master_key(Settings()), "t-1",
                                backed["snapshot_id"])


@pytest.mark.parametrize(("first", "then"), [("local", "kms"), ("kms", "local")])
def test_a_backup_under_one_master_key_is_refused_by_the_other(
        sqlite_platform: Platform, monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
        first: str, then: str) -> None:
    platform = sqlite_platform
    made_with = use_master_key(first, platform, monkeypatch)
    ctx = RunContext.open(Settings())
    try:
        snapshot = backup.backup_tenant(ctx, master_key(Settings()), "t-1").snapshot_id
        record_before = record_of(platform, "t-1")
        reading_with = use_master_key(then, platform, monkeypatch)
        other = master_key(Settings())
        assert other.key_id == reading_with != made_with
        with pytest.raises(VerificationFailed) as refused:
            restore.verify_snapshot(ctx, other, "t-1", snapshot)
        message = str(refused.value)
        assert made_with in message and reading_with in message, message
        assert store.key_record_key("t-1") in message
        with pytest.raises(VerificationFailed, match="was wrapped by master key"):
            restore.restore_snapshot(ctx, other, "t-1", f"sqlite:///{tmp_path}/r.sqlite",
                                     snapshot_id=snapshot)
        assert not (tmp_path / "r.sqlite").exists()
        with pytest.raises(VerificationFailed, match="was wrapped by master key"):
            backup.backup_tenant(ctx, other, "t-1")  # never a new data key
        assert record_of(platform, "t-1") == record_before
        assert ctx.store.list_snapshots("t-1") == [snapshot]
    finally:
        ctx.close()


def test_a_record_made_with_another_kms_key_is_refused_naming_both(
        sqlite_platform: Platform, monkeypatch: pytest.MonkeyPatch) -> None:
    first = use_master_key("kms", sqlite_platform, monkeypatch)
    ctx = RunContext.open(Settings())
    try:
        snapshot = backup.backup_tenant(ctx, master_key(Settings()), "t-1").snapshot_id
        second = make_kms_key(sqlite_platform, monkeypatch)
        monkeypatch.setenv("TENANT_EXPORT_MASTER_KEY", second.arn)  # a plain ARN works too
        with pytest.raises(VerificationFailed) as refused:
            restore.verify_snapshot(ctx, master_key(Settings()), "t-1", snapshot)
        assert first in str(refused.value) and second.arn in str(refused.value)
    finally:
        ctx.close()


def test_doctor_looks_the_kms_key_up(kms: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """A disabled KMS key fails ``doctor``'s master-key line, not the first backup."""
    from deployments.doctor import _master_key

    meta = kms.create_key(Description="tenant-export master")["KeyMetadata"]
    arn = meta["Arn"]
    settings = Settings(master_key=arn, s3_region="eu-central-1")
    monkeypatch.setattr("storage.keys.make_kms_client", lambda *_a, **_k: kms)
    assert f"KMS key {arn} (Enabled)" in _master_key(settings)
    kms.disable_key(KeyId=meta["KeyId"])
    with pytest.raises(TerminalError, match="Disabled"):
        _master_key(settings)
