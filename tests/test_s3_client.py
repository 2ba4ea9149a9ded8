"""S3 clients share the process's botocore data loader, and nothing else (storage/s3.py)."""

from __future__ import annotations

from datetime import UTC
from typing import Any

import botocore.loaders
import pytest
from botocore.utils import parse_timestamp

from kernel.settings import Settings
from storage.s3 import make_client, s3_timestamp


def _settings(key: str | None = None, secret: str | None = None) -> Settings:
    return Settings(s3_endpoint_url="http://127.0.0.1:9", s3_region="eu-west-3",
                    s3_access_key_id=key, s3_secret_access_key=secret)


def test_the_s3_model_is_decoded_once_per_process_not_once_per_client(
        monkeypatch: pytest.MonkeyPatch) -> None:
    make_client(_settings())  # the process's first client (or an earlier test's) loaded it
    decoded: list[str] = []
    load_file = botocore.loaders.JSONFileLoader.load_file

    def counting(self: Any, file_path: str) -> Any:
        decoded.append(file_path)
        return load_file(self, file_path)

    monkeypatch.setattr(botocore.loaders.JSONFileLoader, "load_file", counting)
    clients = [make_client(_settings()) for _ in range(5)]
    assert decoded == []  # no model, endpoint or ruleset file read again
    assert len({id(c._loader) for c in clients}) == 1
    paths = clients[0]._loader.search_paths
    assert len(paths) == len(set(paths))  # boto3's data path is not appended once per client


def test_each_client_resolves_its_own_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "FIRSTKEY")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "first-secret")
    first = make_client(_settings())
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "SECONDKEY")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "second-secret")
    second = make_client(_settings())
    explicit = make_client(_settings("THIRDKEY", "third-secret"))
    keys = [c._request_signer._credentials.get_frozen_credentials().access_key
            for c in (first, second, explicit)]
    assert keys == ["FIRSTKEY", "SECONDKEY", "THIRDKEY"]
    assert first.meta.region_name == "eu-west-3"
    assert first.meta.endpoint_url == "http://127.0.0.1:9"


@pytest.mark.parametrize("value", [
    "Sat, 28 Nov 2026 11:17:23 GMT", "Mon, 01 Jan 1990 00:00:00 GMT",
    "2026-11-28T11:17:23.000Z", "2026-11-28T11:17:23Z", "2026-11-28T11:17:23.123456Z",
    "2026-11-28T11:17:23.5Z", "2026-11-28T11:17:23+02:00", "1700000000", "1700000000.25",
    "Mon, 01 Jan 2024 00:00:00 +0100", "Thu, 01 Jan 70 00:00:00 GMT",  # botocore's own forms
])
def test_timestamps_are_the_instants_botocore_gives(value: str) -> None:
    ours = s3_timestamp(value)
    assert ours == parse_timestamp(value)
    assert ours.utcoffset() is not None  # aware, as botocore's


def test_malformed_timestamps_fail_as_botocore_fails() -> None:
    for value in ("Sat, 99 Nov 2026 11:17:23 GMT", "2026-13-28T11:17:23Z", "not a time",
                  "2026-11-28T11:17:23+01:00Z",  # an offset and a Z: never read as UTC
                  "Mon, 01 Jan 2024 00:00:00 +0100 GMT", "2024-W01-1T00:00:00Z"):
        with pytest.raises(ValueError, match="Invalid timestamp"):
            parse_timestamp(value)
        with pytest.raises(ValueError, match="Invalid timestamp"):  # botocore's, as before
            s3_timestamp(value)


def test_listings_and_heads_are_parsed_with_it(moto_endpoint: str) -> None:
    s3 = make_client(Settings(s3_endpoint_url=moto_endpoint, s3_region="us-east-1",
                              s3_access_key_id="test", s3_secret_access_key="test"))
    s3.create_bucket(Bucket="timestamps")
    s3.put_object(Bucket="timestamps", Key="k", Body=b"x")
    listed = s3.list_objects_v2(Bucket="timestamps")["Contents"][0]["LastModified"]
    headed = s3.head_object(Bucket="timestamps", Key="k")["LastModified"]
    assert listed.tzinfo is UTC and headed.tzinfo is UTC  # ours, not dateutil's
    assert abs((listed - headed).total_seconds()) < 1  # same second (listings add millis)
