"""Embedded defaults: a whole platform on one machine with nothing configured.

When no S3 endpoint is configured, ``serve`` (and the demo) start moto's S3 emulator on
127.0.0.1, build the reference platform (tenant_export.refplatform) as a SQLite database with
its documents, create the three buckets and keep a demo master key in the state directory. The
emulator keeps everything in memory: it is rebuilt at each start, and nothing in it survives.
The variables a worker needs are written to ``<state_dir>/embedded/serve.env`` (mode 0600) so
``make worker`` can join the same embedded platform.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from kernel.errors import BadInput
from kernel.settings import Settings
from tenant_export.refplatform import Platform, PlatformSpec, create_sqlite, upload_blobs

ENV_FILE = "serve.env"


@dataclass(frozen=True)
class Embedded:
    """The embedded platform: its settings, the environment for workers, the generator's view."""

    settings: Settings
    env: dict[str, str]
    platform: Platform


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _master_key(folder: Path) -> str:
    """A demo master key kept across starts (0600), never used once real S3 is configured."""
    from storage.keys import generate_master_key  # noqa: PLC0415

    path = folder / "master.key"
    if not path.exists():
        path.write_text(generate_master_key() + "\n", encoding="ascii")
        path.chmod(0o600)
    return path.read_text(encoding="ascii").strip()


@contextmanager
def embedded_platform(settings: Settings, spec: PlatformSpec | None = None
                      ) -> Iterator[Embedded]:
    """Start moto, build the reference platform and yield settings pointing at both."""
    try:
        from moto.server import ThreadedMotoServer  # noqa: PLC0415 - embedded defaults only
    except ImportError as err:  # pragma: no cover - the Makefile installs the demo extra
        raise BadInput("the embedded S3 emulator is not installed (the 'demo' extra: run "
                       "`make demo` or `make serve`), or set AWS_ENDPOINT_URL_S3") from err
    from storage.s3 import make_client  # noqa: PLC0415

    folder = settings.state_dir / "embedded"
    folder.mkdir(parents=True, exist_ok=True)
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # request lines carry signed links
    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        database = folder / "platform.sqlite"
        database.unlink(missing_ok=True)
        platform = create_sqlite(database, spec or PlatformSpec.tiny())
        catalog = folder / "catalog.toml"
        catalog.write_text(platform.catalog_toml, encoding="utf-8")
        access, secret = "embedded" + secrets.token_hex(6), secrets.token_urlsafe(30)
        region = settings.s3_region or "eu-central-1"
        embedded = settings.model_copy(update={
            "s3_endpoint_url": f"http://127.0.0.1:{port}", "s3_access_key_id": access,
            "s3_secret_access_key": SecretStr(secret), "s3_region": region,
            "source_url": SecretStr(f"sqlite:///{database}"), "catalog": catalog,
            "master_key": settings.master_key or SecretStr(_master_key(folder)),
        })
        client = make_client(embedded)
        location: dict[str, Any] = {} if region == "us-east-1" else {
            "CreateBucketConfiguration": {"LocationConstraint": region}}
        for bucket in (embedded.documents_bucket, embedded.export_bucket,
                       embedded.backup_bucket):
            client.create_bucket(Bucket=bucket, **location)
        upload_blobs(client, embedded.documents_bucket, platform)
        env = {
            "AWS_ENDPOINT_URL_S3": f"http://127.0.0.1:{port}",
            "TENANT_EXPORT_S3_ACCESS_KEY_ID": access, "TENANT_EXPORT_S3_SECRET_ACCESS_KEY": secret,
            "TENANT_EXPORT_S3_REGION": region,
            "TENANT_EXPORT_SOURCE_URL": f"sqlite:///{database}",
            "TENANT_EXPORT_CATALOG": str(catalog),
            "TENANT_EXPORT_MASTER_KEY": embedded.master_key_value() or "",
            "TENANT_EXPORT_STATE_DIR": str(settings.state_dir),
        }
        _write_env(folder / ENV_FILE, env)
        yield Embedded(embedded, env, platform)
    finally:
        server.stop()
        (folder / ENV_FILE).unlink(missing_ok=True)


def _write_env(path: Path, env: dict[str, str]) -> None:
    """``KEY=value`` lines, readable by the owner only (they hold the demo credentials)."""
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
        handle.writelines(f"{key}={value}\n" for key, value in sorted(env.items()))


@contextmanager
def embedded_environment(settings: Settings) -> Iterator[dict[str, str]]:
    """The extra environment for workers: empty when S3 is configured, else an embedded
    platform's (said plainly on the terminal)."""
    if settings.s3_endpoint_url:
        yield {}
        return
    with embedded_platform(settings) as embedded:
        endpoint = embedded.env["AWS_ENDPOINT_URL_S3"]
        print(f"Embedded defaults: a LOCAL S3 EMULATOR (moto, in memory: nothing survives a "
              f"restart) at {endpoint} and the reference platform "
              f"({len(embedded.platform.tenant_ids)} tenants) in "
              f"{embedded.settings.resolved_source_url()}. Configure AWS_ENDPOINT_URL_S3 and "
              "TENANT_EXPORT_SOURCE_URL to work on real systems.", flush=True)
        yield embedded.env
