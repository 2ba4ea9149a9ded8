"""Uploaded documents: their rows from the snapshot and their bytes from the documents bucket."""

from __future__ import annotations

from collections.abc import Generator, Iterator
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from sources.catalog import Catalog
from sources.database import Snapshot
from tenant_export.errors import StorageError, TransientStorageError

CHUNK_BYTES = 1024 * 1024
_MISSING_CODES = {"NoSuchKey", "404", "NotFound"}
_TRANSIENT_CODES = {"500", "502", "503", "504", "SlowDown", "RequestTimeout", "InternalError"}


@dataclass(frozen=True)
class DocumentRef:
    """A document row: its id (as text), original filename and object key."""

    document_id: str
    filename: str
    storage_key: str | None


def iter_documents(
    snapshot: Snapshot, catalog: Catalog, tenant_key: object
) -> Generator[DocumentRef, None, None]:
    """The tenant's documents in id order; nothing when the platform has no documents table."""
    rule = catalog.config.documents
    plan = catalog.table(rule.table)
    if plan is None:
        return
    columns = [rule.id_column, rule.name_column, rule.key_column]
    for doc_id, name, key in snapshot.select(
        rule.table, columns, plan.filter_column, tenant_key, order_by=[rule.id_column],
        schema=catalog.config.db_schema,
    ):
        yield DocumentRef(
            document_id=str(doc_id),
            filename="" if name is None else str(name),
            storage_key=None if key is None else str(key),
        )


def open_blob(client: Any, bucket: str, key: str | None) -> Iterator[bytes] | None:
    """The blob's bytes in chunks, or None when the object is gone.

    The GET is issued here, before the first chunk is asked for, so a missing blob is known
    before the caller commits to writing a ZIP entry for it.
    """
    if not key:
        return None
    try:
        response = client.get_object(Bucket=bucket, Key=key)
    except ClientError as err:
        code = str(err.response.get("Error", {}).get("Code", ""))
        if code in _MISSING_CODES:
            return None
        if code in _TRANSIENT_CODES:
            raise TransientStorageError(f"reading document {key!r} from {bucket}: {code}") from err
        raise StorageError(f"reading document {key!r} from bucket {bucket!r}: {code}") from err
    except BotoCoreError as err:
        raise TransientStorageError(f"reading document {key!r} from {bucket}: {err}") from err
    body = response["Body"]

    def chunks() -> Iterator[bytes]:
        try:
            yield from body.iter_chunks(CHUNK_BYTES)
        except (BotoCoreError, ClientError) as err:
            raise TransientStorageError(f"reading document {key!r} from {bucket}: {err}") from err
        finally:
            body.close()

    return chunks()
