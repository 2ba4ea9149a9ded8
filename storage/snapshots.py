"""The backup snapshot format: data keys, sealed objects and manifests (docs/backup-format.md).

This module knows how a snapshot is laid out and encrypted in the backup bucket; what goes into
a snapshot (tables, documents) is the recipe's business (``flows/backup.py``). Every object is
sealed with the tenant's data key and named in its associated data, so an object moved to
another name or tenant fails authentication.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import IO, Any, cast

import pyarrow as pa
from botocore.exceptions import BotoCoreError, ClientError

from kernel.errors import BadInput, StorageError, VerificationFailed
from kernel.ids import validate_tenant_id
from kernel.s3errors import PRECONDITION_CODES, error_code, raise_storage
from storage import backup_store as layout
from storage import objects
from storage.aead import EncryptingWriter, decrypt_stream, object_associated_data
from storage.keys import KeyWrapper, new_data_key

FORMAT = "tenant-export-snapshot"
FORMAT_VERSION = 1
BLOB_OBJECT = "blob"  # associated data of blobs: their name is checked as the plaintext hash


def snapshot_time(snapshot_id: str) -> datetime:
    """When a snapshot was taken, from its id (``20261126T023000Z-…``)."""
    return datetime.strptime(snapshot_id.split("-", 1)[0], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)


def object_name(snapshot_id: str, relative: str) -> str:
    """The name bound into an object's associated data (``snapshots/<id>/tables/x.parquet``)."""
    return f"snapshots/{snapshot_id}/{relative}"


def schema_b64(schema: pa.Schema) -> str:
    """An Arrow schema as recorded in a manifest."""
    return base64.b64encode(schema.serialize().to_pybytes()).decode("ascii")


def schema_of(table: dict[str, Any]) -> pa.Schema:
    """The Arrow schema recorded for a table in a manifest."""
    return pa.ipc.read_schema(pa.py_buffer(base64.b64decode(table["schema"])))


@dataclass(frozen=True)
class SnapshotStore:
    """One backup bucket, read and written in the snapshot format."""

    s3: Any
    bucket: str

    # -- keys --------------------------------------------------------------------------------

    def data_key(self, wrapper: KeyWrapper, tenant_id: str, *, create: bool) -> bytes:
        """The tenant's data key, unwrapped; created (and stored wrapped) on the first backup.

        A key is created only for a tenant with nothing in the bucket: when the record is gone
        but snapshots or blobs remain, a new key would leave them unreadable for ever, so the
        record's absence is an error to repair (an older object version, a copy), not a start.
        """
        key = layout.key_record_key(tenant_id)
        if layout.head(self.s3, self.bucket, key, tenant_id) is None:
            if not create:
                raise VerificationFailed(f"{key}: no data key for tenant {tenant_id!r}, so no "
                                         "backup can be read (never backed up, or purged)",
                                         tenant_id=tenant_id)
            self._refuse_orphaning(key, tenant_id)
            dek = new_data_key()
            try:  # only if still absent: overwriting a data key would orphan every snapshot
                self.s3.put_object(Bucket=self.bucket, Key=key, Body=wrapper.wrap(dek, tenant_id),
                                   ContentType="application/json", IfNoneMatch="*")
                return dek
            except ClientError as err:
                if error_code(err) not in PRECONDITION_CODES:
                    raise_storage(err, f"writing {key!r} to {self.bucket!r}", tenant_id)
            except BotoCoreError as err:
                raise_storage(err, f"writing {key!r} to {self.bucket!r}", tenant_id)
        try:
            return wrapper.unwrap(objects.read_bytes(self.s3, self.bucket, key, tenant_id),
                                  tenant_id)
        except VerificationFailed as err:
            raise VerificationFailed(f"{key}: {err}", tenant_id=tenant_id) from err

    def _refuse_orphaning(self, key: str, tenant_id: str) -> None:
        """Refuse to create a data key while objects encrypted under a lost one remain."""
        found = [kind for kind in ("snapshots", "blobs") if objects.has_objects(
            self.s3, self.bucket, f"{layout.tenant_prefix(tenant_id)}{kind}/", tenant_id)]
        if found:
            raise VerificationFailed(
                f"{key}: the data-key record of tenant {tenant_id!r} is missing, but the tenant "
                f"still has backup {' and '.join(found)} encrypted under it; a new key would "
                "make them unreadable, so none was created. Put the record back (an older "
                "object version or a copy); to start afresh instead, delete the tenant's "
                f"{layout.tenant_prefix(tenant_id)} first", tenant_id=tenant_id)

    # -- sealed objects ------------------------------------------------------------------------

    def seal(self, dek: bytes, tenant_id: str, key: str, name: str,
             write: Callable[[IO[bytes]], None]) -> dict[str, Any]:
        """Stream ``write``'s plaintext, encrypted, to ``key``; returns sizes and hashes."""
        with (objects.upload(self.s3, self.bucket, key, tenant_id=tenant_id) as out,
              EncryptingWriter(out, dek, object_associated_data(tenant_id, name)) as enc):
            write(cast(IO[bytes], enc))
        return {"plaintext_bytes": enc.plaintext_bytes, "plaintext_sha256": enc.plaintext_sha256,
                "ciphertext_bytes": out.bytes, "ciphertext_sha256": out.sha256}

    def decrypt_object(self, dek: bytes, tenant_id: str, key: str, name: str
                       ) -> Iterator[bytes]:
        """An object's plaintext, streamed; ``VerificationFailed`` names the object."""
        try:
            yield from decrypt_stream(layout.chunks(self.s3, self.bucket, key, tenant_id),
                                      dek, object_associated_data(tenant_id, name))
        except (VerificationFailed, StorageError) as err:
            raise VerificationFailed(f"{key}: {err}", tenant_id=tenant_id) from err

    # -- manifests -----------------------------------------------------------------------------

    def write_manifest(self, dek: bytes, tenant_id: str, snapshot_id: str,
                       manifest: dict[str, Any]) -> dict[str, Any]:
        """Seal the manifest (the commit marker of a snapshot) and read it back."""
        data = json.dumps(manifest, sort_keys=True).encode()
        key = layout.snapshot_prefix(tenant_id, snapshot_id) + layout.MANIFEST

        def write(sink: IO[bytes]) -> None:
            sink.write(data)

        sealed = self.seal(dek, tenant_id, key, object_name(snapshot_id, layout.MANIFEST), write)
        objects.verify(self.s3, self.bucket, objects.StoredObject(
            key, sealed["ciphertext_bytes"], sealed["ciphertext_sha256"]), tenant_id)
        return sealed

    def read_manifest(self, dek: bytes, tenant_id: str, snapshot_id: str) -> dict[str, Any]:
        """Decrypt and parse a snapshot's manifest (``VerificationFailed`` names it)."""
        key = layout.snapshot_prefix(tenant_id, snapshot_id) + layout.MANIFEST
        data = b"".join(self.decrypt_object(dek, tenant_id, key,
                                            object_name(snapshot_id, layout.MANIFEST)))
        manifest: dict[str, Any] = json.loads(data)
        if (manifest.get("format"), manifest.get("tenant_id"), manifest.get("snapshot_id")) != (
                FORMAT, tenant_id, snapshot_id):
            raise VerificationFailed(f"{key}: not the manifest of snapshot {snapshot_id}",
                                     tenant_id=tenant_id)
        return manifest

    def list_snapshots(self, tenant_id: str) -> list[str]:
        """Ids of complete snapshots (those with a manifest), oldest first."""
        prefix = layout.tenant_prefix(validate_tenant_id(tenant_id)) + "snapshots/"
        found = objects.list_prefixes(self.s3, self.bucket, prefix, tenant_id)
        ids = [p.rstrip("/").rsplit("/", 1)[-1] for p in found]
        complete = [i for i in ids if layout.head(
            self.s3, self.bucket, layout.snapshot_prefix(tenant_id, i) + layout.MANIFEST,
            tenant_id) is not None]
        return sorted(complete)

    def resolve_snapshot(self, tenant_id: str, snapshot_id: str | None,
                         complete: list[str] | None = None) -> str:
        """The given snapshot if complete, else the newest complete one (``complete``: the
        listing, when the caller has it already)."""
        complete = self.list_snapshots(tenant_id) if complete is None else complete
        if snapshot_id is None:
            if not complete:
                raise BadInput(f"tenant {tenant_id!r} has no complete backup snapshot",
                               tenant_id=tenant_id)
            return complete[-1]
        if snapshot_id not in complete:
            raise BadInput(f"no complete snapshot {snapshot_id!r} for tenant {tenant_id!r}",
                           tenant_id=tenant_id)
        return snapshot_id
