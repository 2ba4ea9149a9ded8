"""S3 clients share the process's botocore data loader, and nothing else (storage/s3.py)."""

from __future__ import annotations

from typing import Any

import botocore.loaders
import pytest

from kernel.settings import Settings
from storage.s3 import make_client


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
