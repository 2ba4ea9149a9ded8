"""Backup objects in S3: layout, key records, ranges and server-side copies.

Layout of one tenant under the backup bucket (``docs/backup-format.md``)::

    backups/<tenant>/keys/data-key.json                  key record: every data key, wrapped
                                                         (delete all versions = crypto-shred)
    backups/<tenant>/blobs/<name>                         one encrypted document, named by the
                                                         keyed hash of its content
    backups/<tenant>/snapshots/<id>/tables/<table>.parquet   encrypted Parquet, one per table
    backups/<tenant>/snapshots/<id>/documents.jsonl       encrypted document index (format 3)
    backups/<tenant>/snapshots/<id>/manifest.json         encrypted manifest, written last
    backups/<tenant>/staging/<random>                     large blobs in flight (never referenced)
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Callable, Iterator
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from kernel.s3errors import is_missing, raise_storage
from storage import objects

READ_CHUNK = 1024 * 1024
COPY_OBJECT_LIMIT = 5 * 1024**3
MANIFEST = "manifest.json"


def tenant_prefix(tenant_id: str) -> str:
    """Everything of one tenant in the backup bucket."""
    return f"backups/{tenant_id}/"


def key_record_key(tenant_id: str) -> str:
    """Where the tenant's key record lives (its own folder: versioning and access rules for
    key records can differ from those of the backup objects)."""
    return f"{tenant_prefix(tenant_id)}keys/data-key.json"


def blob_key(tenant_id: str, name: str) -> str:
    """A document's encrypted blob, by its name (``DataKeys.blob_name``; in format 1 the
    SHA-256 of its plaintext)."""
    return f"{tenant_prefix(tenant_id)}blobs/{name}"


def snapshot_prefix(tenant_id: str, snapshot_id: str) -> str:
    """The folder of one snapshot."""
    return f"{tenant_prefix(tenant_id)}snapshots/{snapshot_id}/"


def staging_prefix(tenant_id: str) -> str:
    """Blobs in flight; whatever is here after a run is garbage from an interrupted one."""
    return f"{tenant_prefix(tenant_id)}staging/"


def head(client: Any, bucket: str, key: str, tenant_id: str | None = None
         ) -> dict[str, Any] | None:
    """ETag and size of an object, or None when it does not exist."""
    try:
        response = client.head_object(Bucket=bucket, Key=key)
    except ClientError as err:
        if is_missing(err):
            return None
        raise_storage(err, f"inspecting {key!r} in {bucket!r}", tenant_id)
    except BotoCoreError as err:
        raise_storage(err, f"inspecting {key!r} in {bucket!r}", tenant_id)
    return {"etag": str(response.get("ETag", "")).strip('"'),
            "size": int(response["ContentLength"])}


def chunks(client: Any, bucket: str, key: str, tenant_id: str | None = None) -> Iterator[bytes]:
    """The object's bytes, streamed."""
    try:
        body = client.get_object(Bucket=bucket, Key=key)["Body"]
    except (ClientError, BotoCoreError) as err:
        raise_storage(err, f"reading {key!r} from {bucket!r}", tenant_id)
    try:
        yield from body.iter_chunks(READ_CHUNK)
    except (ClientError, BotoCoreError) as err:
        raise_storage(err, f"reading {key!r} from {bucket!r}", tenant_id)
    finally:
        body.close()


def range_reader(client: Any, bucket: str, key: str, tenant_id: str | None = None
                 ) -> Callable[[int, int], bytes]:
    """``read(start, end)``: bytes ``[start, end)`` of the object by an HTTP Range GET."""

    def read(start: int, end: int) -> bytes:
        if end <= start:
            return b""
        return objects.read_bytes(client, bucket, key, tenant_id, byte_range=(start, end))

    return read


def copy(client: Any, bucket: str, source: str, target: str,
         tenant_id: str | None = None, size: int | None = None) -> None:
    """Server-side copy within the bucket (no bytes pass through this process)."""
    try:  # one request up to S3's 5 GB CopyObject limit; boto3's managed copy beyond it
        if size is not None and size < COPY_OBJECT_LIMIT:
            client.copy_object(Bucket=bucket, Key=target,
                               CopySource={"Bucket": bucket, "Key": source})
        else:
            client.copy({"Bucket": bucket, "Key": source}, bucket, target)
    except (ClientError, BotoCoreError) as err:
        raise_storage(err, f"copying {source!r} to {target!r} in {bucket!r}", tenant_id)


def put(client: Any, bucket: str, key: str, data: io.BytesIO, tenant_id: str | None = None
        ) -> objects.StoredObject:
    """A small sealed object in one PUT: no multipart create, part and complete round trips."""
    with data.getbuffer() as view:
        stored = objects.StoredObject(key, view.nbytes, hashlib.sha256(view).hexdigest())
    data.seek(0)
    try:
        client.put_object(Bucket=bucket, Key=key, Body=data,
                          ContentType="application/octet-stream")
    except (ClientError, BotoCoreError) as err:
        raise_storage(err, f"writing {key!r} to {bucket!r}", tenant_id)
    return stored


def delete(client: Any, bucket: str, key: str, tenant_id: str | None = None) -> None:
    """Delete one object (deleting a missing one is not an error in S3)."""
    try:
        client.delete_object(Bucket=bucket, Key=key)
    except (ClientError, BotoCoreError) as err:
        raise_storage(err, f"deleting {key!r} in {bucket!r}", tenant_id)
