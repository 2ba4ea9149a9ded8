"""Storage primitives against S3 over HTTP: failures are ours (translated), nothing half-written
survives, and verification notices any change."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from kernel.errors import StorageError, VerificationFailed
from storage import objects
from tests.conftest import s3_client


@pytest.fixture
def s3(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> tuple[Any, str]:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    client = s3_client(moto_endpoint)
    bucket = f"objects-{uuid.uuid4().hex[:10]}"
    client.create_bucket(Bucket=bucket)
    return client, bucket


def keys(client: Any, bucket: str) -> list[str]:
    return [o["Key"] for o in client.list_objects_v2(Bucket=bucket).get("Contents", [])]


def open_uploads(client: Any, bucket: str) -> list[Any]:
    return list(client.list_multipart_uploads(Bucket=bucket).get("Uploads", []))


def test_upload_round_trip_across_parts(s3: tuple[Any, str]) -> None:
    client, bucket = s3
    written: list[objects.StoredObject] = []
    payload = bytes(range(256)) * (objects.PART_BYTES // 256 + 4099)  # more than one part
    with objects.upload(client, bucket, "a/b.bin", written=written) as sink:
        for start in range(0, len(payload), 1_000_003):
            sink.write(payload[start:start + 1_000_003])
    assert written[0].bytes == len(payload)
    objects.verify(client, bucket, written[0])
    assert client.get_object(Bucket=bucket, Key="a/b.bin")["Body"].read() == payload


def test_upload_to_a_missing_bucket_is_a_storage_error(s3: tuple[Any, str]) -> None:
    client, _ = s3
    with pytest.raises(StorageError, match="no-such-bucket"), objects.upload(
            client, "no-such-bucket", "k") as sink:
        sink.write(b"x" * (objects.PART_BYTES + 1))


def test_failure_inside_the_block_leaves_nothing(s3: tuple[Any, str]) -> None:
    client, bucket = s3
    def broken_exporter() -> None:
        with objects.upload(client, bucket, "half.bin") as sink:
            sink.write(b"y" * (objects.PART_BYTES + 10))  # one part already uploaded
            raise RuntimeError("exporter broke")

    with pytest.raises(RuntimeError, match="exporter broke"):
        broken_exporter()
    assert keys(client, bucket) == []
    assert open_uploads(client, bucket) == []


def test_abort_uploads_and_delete_prefix(s3: tuple[Any, str]) -> None:
    client, bucket = s3
    client.create_multipart_upload(Bucket=bucket, Key="exports/t/1/data/x.csv")
    client.put_object(Bucket=bucket, Key="exports/t/1/a", Body=b"a")
    client.put_object(Bucket=bucket, Key="exports/t/10/keep", Body=b"k")
    assert objects.abort_uploads(client, bucket, "exports/t/1/") == 1
    assert objects.delete_prefix(client, bucket, "exports/t/1/") == 1
    assert keys(client, bucket) == ["exports/t/10/keep"]  # a sibling prefix is untouched
    assert open_uploads(client, bucket) == []
    with pytest.raises(ValueError, match="not a folder"):
        objects.delete_prefix(client, bucket, "exports/t/1")


@pytest.mark.parametrize("tamper", ["flip", "truncate", "extend"])
def test_verify_notices_any_change(s3: tuple[Any, str], tamper: str) -> None:
    client, bucket = s3
    stored = objects.put_bytes(client, bucket, "v.bin", b"0123456789", content_type="x/y")
    body = {"flip": b"0123456788", "truncate": b"012345678", "extend": b"01234567890"}[tamper]
    client.put_object(Bucket=bucket, Key="v.bin", Body=body)
    with pytest.raises(VerificationFailed, match=r"v\.bin"):
        objects.verify(client, bucket, stored)


def test_a_small_object_is_one_put_and_a_failed_one_sends_nothing(s3: tuple[Any, str]) -> None:
    client, bucket = s3
    calls: list[str] = []
    client.meta.events.register("before-call.s3.*",
                                lambda model, **_: calls.append(model.name))
    written: list[objects.StoredObject] = []
    with objects.upload(client, bucket, "small.json", written=written) as sink:
        sink.write(b'{"a": 1}')
        sink.write(b"\n")
    assert calls == ["PutObject"]
    assert client.get_object(Bucket=bucket, Key="small.json")["Body"].read() == b'{"a": 1}\n'
    objects.verify(client, bucket, written[0])

    calls.clear()

    def broken_exporter() -> None:
        with objects.upload(client, bucket, "never.json") as sink:
            sink.write(b"half")
            raise RuntimeError("exporter broke")

    with pytest.raises(RuntimeError, match="broke"):
        broken_exporter()
    assert calls == [] and "never.json" not in keys(client, bucket)


def test_parts_grow_to_fit_a_known_size_in_s3s_10000_parts() -> None:
    gib = 1024**3
    assert objects.part_bytes_for(0) == objects.PART_BYTES
    assert objects.part_bytes_for(50 * gib) == objects.PART_BYTES  # 6,400 parts of 8 MiB
    for size in (78 * gib, 100 * gib, 4 * 1024 * gib):
        part = objects.part_bytes_for(size)
        assert part > objects.PART_BYTES
        assert -(-size // part) <= objects.MAX_PARTS * 9 // 10


def test_an_upload_told_its_size_uses_parts_that_fit_it(
        s3: tuple[Any, str], monkeypatch: pytest.MonkeyPatch) -> None:
    client, bucket = s3
    sizes: list[int] = []
    real = objects.smart_s3.open

    def recording(*args: Any, **kwargs: Any) -> Any:
        sizes.append(kwargs["min_part_size"])
        return real(*args, **kwargs)

    monkeypatch.setattr(objects.smart_s3, "open", recording)
    payload = b"z" * (objects.PART_BYTES + 1)  # past one part: multipart
    for expected in (0, 200 * 1024**3):
        with objects.upload(client, bucket, f"big-{expected}", expected_bytes=expected) as sink:
            sink.write(payload)
    assert sizes == [objects.PART_BYTES, objects.part_bytes_for(200 * 1024**3)]
    body = client.get_object(Bucket=bucket, Key=f"big-{200 * 1024**3}")["Body"].read()
    assert body == payload
