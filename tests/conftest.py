"""Fixtures: real services (PostgreSQL, moto over HTTP, s3rver) and a Prefect test server."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config

from storage.keys import generate_master_key
from tests import awkward
from tests.services import fresh_database, moto_server, postgres_server, s3rver_server

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
# Two busy cores start a Prefect server in well over Prefect's default 20 s at times: a slow
# machine must make the suite slower, not red.
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
SERVER_STARTUP_TIMEOUT_S = 180


def pytest_configure(config: pytest.Config) -> None:
    """No test writes into the repository: Hypothesis keeps its example database and caches
    in a temporary folder instead of ``.hypothesis/`` in the working directory."""
    import tempfile

    from hypothesis.configuration import set_hypothesis_home_dir

    set_hypothesis_home_dir(tempfile.mkdtemp(prefix="tenant-export-hypothesis-"))


@pytest.fixture(scope="session")
def prefect_server() -> Iterator[None]:
    """One Prefect test server for the whole session (each start costs seconds)."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=SERVER_STARTUP_TIMEOUT_S):
        yield


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    with moto_server() as url:
        yield url


@pytest.fixture(scope="session")
def s3rver_endpoint() -> Iterator[str]:
    with s3rver_server() as url:
        yield url


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    with postgres_server() as url:
        yield url


def s3_client(endpoint: str) -> Any:
    # A fresh session: boto3's default session caches the first credentials it resolved.
    return boto3.session.Session().client(
        "s3", endpoint_url=endpoint, region_name="us-east-1",
        config=Config(signature_version="s3v4", s3={"addressing_style": "path"}),
    )


@dataclass
class Platform:
    """An isolated platform for one test: its database, buckets and S3 client."""

    source_url: str
    documents_bucket: str
    export_bucket: str
    s3: Any
    endpoint: str
    backup_bucket: str = ""

    def export_keys(self) -> list[str]:
        pages = self.s3.get_paginator("list_objects_v2").paginate(Bucket=self.export_bucket)
        return [o["Key"] for p in pages for o in p.get("Contents", [])]

    def get(self, key: str) -> bytes:
        return bytes(self.s3.get_object(Bucket=self.export_bucket, Key=key)["Body"].read())


def _platform(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, endpoint: str,
              source_url: str, access: tuple[str, str]) -> Platform:
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", access[0])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", access[1])
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    suffix = uuid.uuid4().hex[:10]
    docs, exports, backups = f"docs-{suffix}", f"exports-{suffix}", f"backups-{suffix}"
    client = s3_client(endpoint)
    for bucket in (docs, exports, backups):
        client.create_bucket(Bucket=bucket)
    for key, content in awkward.blobs().items():
        client.put_object(Bucket=docs, Key=key, Body=content)
    catalog = tmp_path / "catalog.toml"
    catalog.write_text(awkward.CATALOG)
    monkeypatch.setenv("TENANT_EXPORT_SOURCE_URL", source_url)
    monkeypatch.setenv("TENANT_EXPORT_CATALOG", str(catalog))
    monkeypatch.setenv("TENANT_EXPORT_DOCUMENTS_BUCKET", docs)
    monkeypatch.setenv("TENANT_EXPORT_EXPORT_BUCKET", exports)
    monkeypatch.setenv("TENANT_EXPORT_BACKUP_BUCKET", backups)
    monkeypatch.setenv("TENANT_EXPORT_MASTER_KEY", generate_master_key())  # per test, never stored
    monkeypatch.setenv("TENANT_EXPORT_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("TENANT_EXPORT_LOCK_WAIT_SECONDS", "30")  # generous on a busy CI machine
    return Platform(source_url, docs, exports, client, endpoint, backups)


@pytest.fixture
def sqlite_platform(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, moto_endpoint: str,
                    prefect_server: None) -> Platform:
    db = tmp_path / "platform.sqlite"
    awkward.create_sqlite(str(db))
    return _platform(monkeypatch, tmp_path, moto_endpoint, f"sqlite:///{db}", ("test", "test"))


@pytest.fixture
def postgres_platform(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, moto_endpoint: str,
                      postgres_url: str, prefect_server: None) -> Platform:
    url = fresh_database(postgres_url, "p")
    awkward.create_postgres(url)
    return _platform(monkeypatch, tmp_path, moto_endpoint, url, ("test", "test"))


@pytest.fixture
def s3rver_platform(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, s3rver_endpoint: str,
                    prefect_server: None) -> Platform:
    db = tmp_path / "platform.sqlite"
    awkward.create_sqlite(str(db))
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "S3RVER")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "S3RVER")
    return _platform(monkeypatch, tmp_path, s3rver_endpoint, f"sqlite:///{db}",
                     ("S3RVER", "S3RVER"))


@pytest.fixture
def unpacked(monkeypatch: pytest.MonkeyPatch) -> None:
    """Backups store every document blob as an object of its own (no pack, as format 4 did):
    for tests that tamper with one blob object or rewrite a snapshot into an older format."""
    from flows import backup_packs

    monkeypatch.setattr(backup_packs, "PACKED_BLOB_BYTES", 0)


@pytest.fixture
def ctx(sqlite_platform: Platform) -> Iterator[Any]:
    """A run context on the SQLite platform's settings, closed after the test (the flows'
    imports stay out of this module: many tests never need them)."""
    from flows.context import RunContext
    from kernel.settings import Settings

    context = RunContext.open(Settings())
    try:
        yield context
    finally:
        context.close()
