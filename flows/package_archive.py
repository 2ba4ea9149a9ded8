"""Verification read-back, the single-download archive, and the commit marker.

Every file of the staged package is read back once and its SHA-256 compared; the same bytes
stream, as they are read, into ``export-<tenant>-<id>.zip``, so the documents are never read
twice. The GETs are made by a thread of their own (``flows.readback``), one after another in
the archive's order as before, a bounded distance ahead: the next files arrive while the
current one is deflated, and each is still checked here, whole, at its turn; the archive's
own parts are hashed and sent by another thread while the next ones are deflated. Once every
file matched, ``datapackage.json`` is built (with each object's ETag) and goes into the archive as
its last entry; the archive is then read back itself and described in ``x-archive.json``.
Only then, under the lock's fence, is the very same ``datapackage.json`` published: the
package becomes an export, archive included.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import IO, TYPE_CHECKING, Any, cast

from exporters.datapackage import FileRecord
from flows.readback import OrderedReadBack
from kernel.errors import VerificationFailed
from storage import objects
from storage.backup_store import chunks, head
from storage.upload_queue import BackgroundSink

if TYPE_CHECKING:  # the ZIP writer (and Arrow behind it) only where an archive is written
    from exporters.archive import ArchiveEntry

ARCHIVE_INFO = "x-archive.json"  # size, SHA-256 and ETag of the archive, for ``links``


def archive_name(tenant_id: str, export_id: str) -> str:
    """``export-<tenant>-<export_id>.zip``; unpacked, it gives a folder of the same name."""
    return f"export-{tenant_id}-{export_id}.zip"


@dataclass(frozen=True)
class Archived:
    """A staged package whose every file was verified, with its archive."""

    manifest: bytes
    archive: FileRecord


def archive_package(s3: Any, bucket: str, prefix: str, tenant_id: str, export_id: str,
                    records: list[FileRecord], created: datetime,
                    build_manifest: Callable[[], bytes]) -> Archived:
    """Verify every staged file by reading it back into the archive; then the archive itself.

    Args:
        s3, bucket, prefix: where the staged package is.
        records: the staged files, in the order they go into the archive.
        created: the date of the archive's entries (the export's).
        build_manifest: builds ``datapackage.json`` once every file has been verified.
    Raises:
        VerificationFailed: a file (or the archive) does not read back as written; the
            archive upload is discarded.
    """
    from exporters.archive import ArchiveEntry, write_archive  # noqa: PLC0415

    name = archive_name(tenant_id, export_id)
    manifest: list[bytes] = []

    def opener(record: FileRecord) -> Iterator[bytes]:
        """On the read-back thread: the object's chunks (the GET is issued by the first)."""
        return chunks(s3, bucket, prefix + record.path, tenant_id)

    def entries(fetched: OrderedReadBack[FileRecord]) -> Iterator[ArchiveEntry]:
        for record, stream in fetched:
            yield ArchiveEntry(record.path, record.bytes, created,
                               _checked(stream, prefix + record.path, record, bucket,
                                        tenant_id))
        manifest.append(build_manifest())  # every file above matched its hash
        yield ArchiveEntry("datapackage.json", len(manifest[0]), created, [manifest[0]])

    expected = sum(r.bytes for r in records) + 1024 * (len(records) + 1)  # headers, manifest
    with OrderedReadBack(records, opener) as fetched, objects.upload(
            s3, bucket, prefix + name, content_type="application/zip", tenant_id=tenant_id,
            expected_bytes=expected) as out, BackgroundSink(out) as piped:  # parts sent beside
        write_archive(entries(fetched), cast(IO[bytes], piped), root=name.removesuffix(".zip"))
    stored = objects.StoredObject(prefix + name, out.bytes, out.sha256)
    objects.verify(s3, bucket, stored, tenant_id)
    found = head(s3, bucket, stored.key, tenant_id)
    archive = FileRecord(path=name, bytes=out.bytes, sha256=out.sha256, kind="archive",
                         extra={"x-etag": found["etag"] if found else None})
    info = json.dumps({"path": name, "bytes": out.bytes, "sha256": out.sha256,
                       "etag": archive.extra["x-etag"]}, indent=2).encode()
    objects.verify(s3, bucket, objects.put_bytes(s3, bucket, prefix + ARCHIVE_INFO, info,
                                                 content_type="application/json",
                                                 tenant_id=tenant_id), tenant_id)
    return Archived(manifest[0], archive)


def read_archive_info(s3: Any, bucket: str, prefix: str, tenant_id: str) -> FileRecord | None:
    """The archive of a retained package, from ``x-archive.json`` (None: a package made
    before archives existed)."""
    if head(s3, bucket, prefix + ARCHIVE_INFO, tenant_id) is None:
        return None
    info = json.loads(objects.read_bytes(s3, bucket, prefix + ARCHIVE_INFO, tenant_id))
    return FileRecord(path=str(info["path"]), bytes=int(info["bytes"]),
                      sha256=str(info["sha256"]), kind="archive",
                      extra={"x-etag": info.get("etag")})


def _checked(stored: Iterator[bytes], key: str, record: FileRecord, bucket: str,
             tenant_id: str) -> Iterator[bytes]:
    """The object's bytes as stored, checked against the record once the last chunk passed."""
    digest, size = hashlib.sha256(), 0
    for chunk in stored:
        digest.update(chunk)
        size += len(chunk)
        if size > record.bytes:
            break  # longer than written: refused below, before the archive takes more
        yield chunk
    if size != record.bytes or digest.hexdigest() != record.sha256:
        shown = f"more than {record.bytes}" if size > record.bytes else str(size)
        raise VerificationFailed(
            f"object {key!r} in {bucket!r} reads back as {shown} bytes sha256 "
            f"{digest.hexdigest()}, expected {record.bytes} bytes sha256 {record.sha256}",
            tenant_id=tenant_id)
