"""``make demo``: the export pipeline end to end on embedded defaults, then checked like a client.

Starts a local S3 emulator (moto) on 127.0.0.1 unless an ``AWS_ENDPOINT_URL*`` is set, creates a
demo platform, runs ``offboarding_export`` for one tenant, downloads every file through its signed
link with a plain HTTP client and compares sizes and SHA-256 with the manifest.
"""

from __future__ import annotations

import hashlib
import json
import logging
import secrets
import socket
import time
import urllib.request
from typing import Any

from pydantic import SecretStr

from kernel.errors import VerificationFailed
from kernel.settings import Settings
from tenant_export.demo_data import DEMO_CATALOG, create_platform


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _start_emulator(settings: Settings) -> tuple[Any, Settings]:
    """moto's S3 on a free port, and the settings that point at it."""
    try:
        from moto.server import ThreadedMotoServer  # noqa: PLC0415 - demo only
    except ImportError as err:  # pragma: no cover - the Makefile installs the demo extra
        raise VerificationFailed("the demo's S3 emulator is not installed: run `make demo` "
                                 "(it installs the 'demo' extra) or set AWS_ENDPOINT_URL_S3"
                                 ) from err

    # The emulator logs every request line, signed query strings included: links are secrets.
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    # Throwaway credentials generated per run: nothing secret lives in the repository.
    return server, settings.model_copy(update={
        "s3_endpoint_url": f"http://127.0.0.1:{port}",
        "s3_access_key_id": "demo" + secrets.token_hex(8),
        "s3_secret_access_key": SecretStr(secrets.token_urlsafe(30)),
        "s3_region": settings.s3_region or "eu-central-1",
    })


def _download(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=60) as response:  # noqa: S310 - our signed http(s) link
        return bytes(response.read())


def run_demo(settings: Settings, tenant: str) -> None:
    """Create the demo platform, export ``tenant`` and check every link like a client would."""
    started = time.monotonic()
    state = settings.state_dir / "demo"
    state.mkdir(parents=True, exist_ok=True)
    emulator = None
    if settings.s3_endpoint_url:
        print(f"S3: using the configured endpoint {settings.s3_endpoint_url}")
    else:
        emulator, settings = _start_emulator(settings)
        print(f"S3: started a LOCAL S3 EMULATOR (moto) at {settings.s3_endpoint_url}.")
        print("    It is not real S3 and does not enforce link signatures or expiry. To use real")
        print("    S3 (or MinIO, Ceph, Garage), set AWS_ENDPOINT_URL_S3 and AWS credentials, and")
        print("    TENANT_EXPORT_DOCUMENTS_BUCKET / TENANT_EXPORT_EXPORT_BUCKET.")
    try:
        db_path = state / "platform.sqlite"
        catalog = state / "catalog.toml"
        catalog.write_text(DEMO_CATALOG, encoding="utf-8")
        blobs = create_platform(db_path)
        settings = settings.model_copy(update={
            "source_url": SecretStr(f"sqlite:///{db_path}"), "catalog": catalog})
        _prepare_buckets(settings, blobs)
        print(f"Platform: demo SQLite database {db_path} (3 tenants); exporting '{tenant}'.")

        from flows.context import using  # noqa: PLC0415
        from flows.export_flow import ExportRequest, offboarding_export  # noqa: PLC0415

        with using(settings):
            result = offboarding_export(ExportRequest(tenant_id=tenant, link_ttl_seconds=3600))
        _check_like_a_client(result)
        _summary(result, time.monotonic() - started)
    finally:
        if emulator is not None:
            emulator.stop()


def _prepare_buckets(settings: Settings, blobs: dict[str, bytes]) -> None:
    from storage.s3 import make_client  # noqa: PLC0415

    client = make_client(settings)
    existing = {b["Name"] for b in client.list_buckets().get("Buckets", [])}
    for bucket in (settings.documents_bucket, settings.export_bucket):
        if bucket not in existing:
            client.create_bucket(Bucket=bucket, **_location(settings))
    for key, content in blobs.items():
        client.put_object(Bucket=settings.documents_bucket, Key=key, Body=content)


def _location(settings: Settings) -> dict[str, Any]:
    region = settings.s3_region or "us-east-1"
    return {} if region == "us-east-1" else {
        "CreateBucketConfiguration": {"LocationConstraint": region}}


def _check_like_a_client(result: dict[str, Any]) -> None:
    manifest: dict[str, Any] | None = None
    for f in result["files"]:
        data = _download(f["url"])
        digest = hashlib.sha256(data).hexdigest()
        if len(data) != f["bytes"] or digest != f["sha256"]:
            raise VerificationFailed(f"downloaded {f['path']} does not match its checksum")
        if f["path"] == "datapackage.json":
            manifest = json.loads(data)
    if manifest is None:
        raise VerificationFailed("the export has no datapackage.json")
    for resource in manifest["resources"]:
        listed = next(f for f in result["files"] if f["path"] == resource["path"])
        if resource["hash"] != f"sha256:{listed['sha256']}":
            raise VerificationFailed(f"{resource['path']}: manifest hash differs from download")


def _summary(result: dict[str, Any], seconds: float) -> None:
    print(f"\nExport {result['export_id']} of tenant {result['tenant_id']}: "
          f"{len(result['files'])} files, links valid until {result['expires_at']}")
    for f in result["files"]:
        rows = "" if f.get("rows") is None else f"{f['rows']:>5} rows"
        print(f"  {f['path']:<34} {f['bytes']:>8} bytes {rows:>10}  sha256 {f['sha256'][:16]}…")
    print("\nEvery file was downloaded through its signed link and matched its SHA-256.")
    first = result["files"][0]["url"]
    print(f"Example link (datapackage.json):\n  {first}")
    print(f"\nDone in {seconds:.1f} s. Files above are what the departing client receives; see "
          "docs/client-guide.md.")
