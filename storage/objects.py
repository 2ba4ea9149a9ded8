"""Streaming writes, read-back verification and cleanup of S3 objects.

An object up to one part (``SINGLE_PUT_BYTES``) is kept in memory and sent with one PUT when
its writer closes; past that, smart_open's multipart writer takes over and parts leave as they
fill, so no whole large object is ever held in memory or on disk. Most objects of a backup or
an export are small: one request instead of a multipart create, part and complete. Either way
an exception inside the ``with`` block sends nothing or aborts the multipart upload (nothing
half-written becomes visible). Given an ``UploadQueue`` (``storage.upload_queue``), an object
of one PUT is sent by its pool while the caller goes on; it is stored once the queue's
``wait`` (or the end of its ``with`` block) returned.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError
from smart_open import s3 as smart_s3

from kernel.errors import StorageError, VerificationFailed
from kernel.s3errors import error_code, raise_storage

if TYPE_CHECKING:
    from storage.upload_queue import UploadQueue

PART_BYTES = 8 * 1024 * 1024
# The AWS CLI's and boto3's default part size. At 16 MiB an object passing one part held two
# (ours, and smart_open's copy while the first part left): 15 MiB of an export's peak RSS.
SINGLE_PUT_BYTES = PART_BYTES  # up to this size an object is buffered and sent with one PUT
MAX_PARTS = 10_000  # S3's limit: at PART_BYTES an object of unknown size stops at 78 GiB


def part_bytes_for(expected_bytes: int) -> int:
    """A part size that fits ``expected_bytes`` in S3's 10,000 parts with a tenth to spare:
    PART_BYTES up to about 70 GiB, more beyond (smart_open does not grow its parts)."""
    return max(PART_BYTES, -(-expected_bytes // (MAX_PARTS * 9 // 10)))
# smart_open reports a failed CreateMultipartUpload as ValueError and exhausted part retries as
# OSError; boto3 raises ClientError/BotoCoreError. All are storage failures of the upload.
UPLOAD_ERRORS = (ClientError, BotoCoreError, OSError, ValueError)
READ_CHUNK = 1024 * 1024


class HashingSink(io.RawIOBase):
    """A write-only byte sink that counts and hashes what it forwards."""

    def __init__(self, target: Any, what: str = "upload", tenant_id: str | None = None) -> None:
        super().__init__()
        self._target = target
        self._what = what
        self._tenant_id = tenant_id
        self._sha256 = hashlib.sha256()
        self.bytes = 0

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        try:
            self._target.write(view)  # may upload a part
        except UPLOAD_ERRORS as err:
            raise_storage(err, self._what, self._tenant_id)
        self._sha256.update(view)
        self.bytes += view.nbytes
        return view.nbytes

    def close(self) -> None:
        """Closing the wrapper never closes the upload: the ``with`` block owns it."""
        super().close()

    @property
    def sha256(self) -> str:
        """Hex SHA-256 of everything written so far."""
        return self._sha256.hexdigest()


@dataclass(frozen=True)
class StoredObject:
    """An object as written: key, size and SHA-256."""

    key: str
    bytes: int
    sha256: str


class _SpooledWriter:
    """One object's bytes: in memory up to one part, then a multipart upload."""

    def __init__(self, client: Any, bucket: str, key: str, content_type: str,
                 part_bytes: int = PART_BYTES) -> None:
        self._client, self._bucket, self._key = client, bucket, key
        self._part_bytes = part_bytes
        self._content_type = content_type
        self._buffer: io.BytesIO | None = io.BytesIO()
        self._multipart: Any = None

    def write(self, data: memoryview) -> None:
        if self._buffer is None:
            self._multipart.write(data)
            return
        self._buffer.write(data)
        if self._buffer.tell() > SINGLE_PUT_BYTES:  # too large for one PUT: stream the rest
            self._multipart = smart_s3.open(
                self._bucket, self._key, "wb", client=self._client, min_part_size=self._part_bytes,
                client_kwargs={"S3.Client.create_multipart_upload": {
                    "ContentType": self._content_type}})
            held, self._buffer = self._buffer, None
            with held.getbuffer() as view:  # no copy: the part buffer is the only other one
                self._multipart.write(view)
            held.close()

    @property
    def buffered(self) -> bool:
        """Whether the object is still in memory (one PUT at ``close``)."""
        return self._buffer is not None

    def close(self) -> None:
        if self._buffer is None:
            self._multipart.close()
            return
        self._buffer.seek(0)
        self._client.put_object(Bucket=self._bucket, Key=self._key, Body=self._buffer,
                                ContentType=self._content_type)

    def terminate(self) -> None:
        """Abort a multipart upload in progress; a single PUT not yet sent needs nothing."""
        if self._multipart is not None:
            self._multipart.terminate()


@contextmanager
def upload(
    client: Any, bucket: str, key: str, *, content_type: str = "application/octet-stream",
    tenant_id: str | None = None, written: list[StoredObject] | None = None,
    queue: UploadQueue | None = None, expected_bytes: int = 0,
) -> Iterator[HashingSink]:
    """A sink streaming to ``s3://bucket/key``; on success records a ``StoredObject``.

    ``queue``: an object of one PUT is sent by the queue's pool (``written`` then records it
    before the PUT ended: it is stored once the queue's ``wait`` returned); a larger one, whose
    parts already left, is completed here. ``expected_bytes``: about how large the object will
    be, when the caller knows (its parts are then sized to fit S3's 10,000).
    """
    what = f"uploading {key!r} to {bucket!r}"
    writer = _SpooledWriter(client, bucket, key, content_type, part_bytes_for(expected_bytes))
    sink = HashingSink(writer, what, tenant_id)
    try:
        yield sink
    except BaseException:
        _abort(writer)
        raise

    def finish() -> None:
        try:
            writer.close()
        except UPLOAD_ERRORS as err:
            _abort(writer)
            raise_storage(err, f"completing {what}", tenant_id)

    if queue is not None and writer.buffered:
        queue.submit(finish, size=sink.bytes)
    else:
        finish()
    if written is not None:
        written.append(StoredObject(key=key, bytes=sink.bytes, sha256=sink.sha256))


def _abort(writer: Any) -> None:
    """Abort the multipart upload; a failure here must not hide the error that led here."""
    with contextlib.suppress(Exception):
        writer.terminate()


def abort_uploads(client: Any, bucket: str, prefix: str, tenant_id: str | None = None) -> int:
    """Abort multipart uploads left open under ``prefix`` (a crashed writer leaves them)."""
    aborted = 0
    for key, upload_id in _uploads(client, bucket, prefix, tenant_id):
        try:
            client.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id)
        except (ClientError, BotoCoreError) as err:
            raise_storage(err, f"aborting the upload of {key!r} in {bucket!r}", tenant_id)
        aborted += 1
    return aborted


def count_uploads(client: Any, bucket: str, prefix: str, tenant_id: str | None = None) -> int:
    """How many multipart uploads are open under ``prefix``."""
    return len(_uploads(client, bucket, prefix, tenant_id))


def _uploads(client: Any, bucket: str, prefix: str, tenant_id: str | None
             ) -> list[tuple[str, str]]:
    """Key and upload id of every open multipart upload under ``prefix``.

    An S3 implementation that does not offer the listing (some emulators answer
    ``NotImplemented``) shows none: its open uploads can only expire by its own rules (the
    bucket lifecycle rule ``AbortIncompleteMultipartUpload`` on real S3).
    """
    try:
        pages = client.get_paginator("list_multipart_uploads").paginate(Bucket=bucket,
                                                                         Prefix=prefix)
        return [(u["Key"], u["UploadId"]) for page in pages for u in page.get("Uploads", [])]
    except ClientError as err:
        if error_code(err) == "NotImplemented":
            return []
        raise_storage(err, f"listing uploads under {prefix!r} in {bucket!r}", tenant_id)
    except BotoCoreError as err:
        raise_storage(err, f"listing uploads under {prefix!r} in {bucket!r}", tenant_id)


def unmarked_folders(client: Any, bucket: str, prefix: str, marker: str,
                     tenant_id: str | None = None) -> list[str]:
    """Folders directly under ``prefix`` without their commit ``marker`` object, including
    folders that hold only open multipart uploads (a writer killed before any object
    completed)."""
    folders = set(list_prefixes(client, bucket, prefix, tenant_id))
    for key, _ in _uploads(client, bucket, prefix, tenant_id):
        rest = key[len(prefix):]
        if "/" in rest:
            folders.add(prefix + rest.split("/", 1)[0] + "/")
    return sorted(f for f in folders if not _has_key(client, bucket, f + marker, tenant_id))


def put_bytes(
    client: Any, bucket: str, key: str, data: bytes, *, content_type: str,
    tenant_id: str | None = None,
) -> StoredObject:
    """A small object in one PUT (the manifest)."""
    try:
        client.put_object(Bucket=bucket, Key=key, Body=data, ContentType=content_type)
    except (ClientError, BotoCoreError) as err:
        raise_storage(err, f"writing {key!r} to {bucket!r}", tenant_id)
    return StoredObject(key=key, bytes=len(data), sha256=hashlib.sha256(data).hexdigest())


def read_bytes(client: Any, bucket: str, key: str, tenant_id: str | None = None,
               byte_range: tuple[int, int] | None = None) -> bytes:
    """A small object whole (a manifest), or bytes ``[start, end)`` of any object."""
    extra = {"Range": f"bytes={byte_range[0]}-{byte_range[1] - 1}"} if byte_range else {}
    try:
        body = client.get_object(Bucket=bucket, Key=key, **extra)["Body"]
        try:
            return bytes(body.read())
        finally:
            body.close()
    except (ClientError, BotoCoreError) as err:
        raise_storage(err, f"reading {key!r} from {bucket!r}", tenant_id)


def verify(client: Any, bucket: str, expected: StoredObject, tenant_id: str | None = None) -> None:
    """Read the object back and compare size and SHA-256, or raise ``VerificationFailed``."""
    digest = hashlib.sha256()
    size = 0
    try:
        body = client.get_object(Bucket=bucket, Key=expected.key)["Body"]
        try:
            for chunk in body.iter_chunks(READ_CHUNK):
                digest.update(chunk)
                size += len(chunk)
        finally:
            body.close()
    except (ClientError, BotoCoreError) as err:
        raise_storage(err, f"reading back {expected.key!r} from {bucket!r}", tenant_id)
    if size != expected.bytes or digest.hexdigest() != expected.sha256:
        raise VerificationFailed(
            f"object {expected.key!r} in {bucket!r} reads back as {size} bytes sha256 "
            f"{digest.hexdigest()}, expected {expected.bytes} bytes sha256 {expected.sha256}",
            tenant_id=tenant_id,
        )


def copy_stream(client: Any, bucket: str, key: str, out: Any,
                tenant_id: str | None = None) -> None:
    """Stream one object into a writable sink, chunk by chunk."""
    try:
        body = client.get_object(Bucket=bucket, Key=key)["Body"]
        try:
            for chunk in body.iter_chunks(READ_CHUNK):
                out.write(chunk)
        finally:
            body.close()
    except (ClientError, BotoCoreError) as err:
        raise_storage(err, f"reading {key!r} from {bucket!r}", tenant_id)


def has_objects(client: Any, bucket: str, prefix: str, tenant_id: str | None = None) -> bool:
    """Whether anything is stored under ``prefix`` (one listing request)."""
    try:
        response = client.list_objects_v2(Bucket=bucket, Prefix=prefix, MaxKeys=1)
    except (ClientError, BotoCoreError) as err:
        raise_storage(err, f"listing {prefix!r} in {bucket!r}", tenant_id)
    return bool(response.get("Contents"))


def _has_key(client: Any, bucket: str, key: str, tenant_id: str | None) -> bool:
    """Whether exactly ``key`` exists (a listing: no error to classify for a missing key)."""
    try:
        response = client.list_objects_v2(Bucket=bucket, Prefix=key, MaxKeys=1)
    except (ClientError, BotoCoreError) as err:
        raise_storage(err, f"listing {key!r} in {bucket!r}", tenant_id)
    return any(o["Key"] == key for o in response.get("Contents", []))


def list_keys(client: Any, bucket: str, prefix: str, tenant_id: str | None = None) -> list[str]:
    """Every key under ``prefix``."""
    keys: list[str] = []
    try:
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            keys.extend(obj["Key"] for obj in page.get("Contents", []))
    except (ClientError, BotoCoreError) as err:
        raise_storage(err, f"listing {prefix!r} in {bucket!r}", tenant_id)
    return keys


def list_objects(client: Any, bucket: str, prefix: str, tenant_id: str | None = None
                 ) -> list[tuple[str, Any]]:
    """Every key under ``prefix`` with its LastModified time."""
    found: list[tuple[str, Any]] = []
    try:
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            found.extend((obj["Key"], obj["LastModified"]) for obj in page.get("Contents", []))
    except (ClientError, BotoCoreError) as err:
        raise_storage(err, f"listing {prefix!r} in {bucket!r}", tenant_id)
    return found


def list_prefixes(client: Any, bucket: str, prefix: str, tenant_id: str | None = None) -> list[str]:
    """The immediate "folders" under ``prefix`` (which must end in ``/``)."""
    found: list[str] = []
    try:
        pages = client.get_paginator("list_objects_v2").paginate(
            Bucket=bucket, Prefix=prefix, Delimiter="/"
        )
        for page in pages:
            found.extend(p["Prefix"] for p in page.get("CommonPrefixes", []))
    except (ClientError, BotoCoreError) as err:
        raise_storage(err, f"listing {prefix!r} in {bucket!r}", tenant_id)
    return found


def delete_prefix(client: Any, bucket: str, prefix: str, tenant_id: str | None = None) -> int:
    """Delete every object under ``prefix``; returns how many were deleted."""
    if not prefix.endswith("/"):
        raise ValueError(f"refusing to delete a prefix that is not a folder: {prefix!r}")
    keys = list_keys(client, bucket, prefix, tenant_id)
    for start in range(0, len(keys), 1000):
        batch = [{"Key": k} for k in keys[start : start + 1000]]
        try:
            response = client.delete_objects(Bucket=bucket,
                                             Delete={"Objects": batch, "Quiet": True})
        except (ClientError, BotoCoreError) as err:
            raise_storage(err, f"deleting {prefix!r} in {bucket!r}", tenant_id)
        if response.get("Errors"):
            first = response["Errors"][0]
            raise StorageError(
                f"deleting {prefix!r} in {bucket!r}: {len(response['Errors'])} objects not "
                f"deleted, e.g. {first.get('Key')!r}: {first.get('Code')}", tenant_id=tenant_id)
    return len(keys)
