"""Uploaded documents: their rows from the snapshot and their bytes from the documents bucket."""

from __future__ import annotations

from collections.abc import Generator, Iterator
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from kernel.errors import TerminalError
from kernel.s3errors import is_missing, raise_storage
from sources.catalog import Catalog, DocumentsRule
from sources.database import Snapshot

CHUNK_BYTES = 1024 * 1024


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
    what = f"reading document {key!r} from bucket {bucket!r}"
    try:
        response = client.get_object(Bucket=bucket, Key=key)
    except (ClientError, BotoCoreError) as err:
        if is_missing(err):
            return None
        raise_storage(err, what)
    body = response["Body"]

    def chunks() -> Iterator[bytes]:
        try:
            yield from body.iter_chunks(CHUNK_BYTES)
        except (BotoCoreError, ClientError, OSError) as err:
            raise_storage(err, what)
        finally:
            body.close()

    return chunks()


def confined(refs: Iterator[DocumentRef], rule: DocumentsRule, tenant_id: str
             ) -> Generator[DocumentRef, None, None]:
    """Refuse a document whose key lies outside the tenant's prefix (when one is configured):
    a platform row pointing at another tenant's blob must not ship that blob."""
    prefix = rule.key_prefix.replace("{tenant_id}", tenant_id) if rule.key_prefix else None
    try:
        for ref in refs:
            if prefix is not None and ref.storage_key and not ref.storage_key.startswith(prefix):
                raise TerminalError(
                    f"document {ref.document_id} has storage key {ref.storage_key!r} outside "
                    f"the tenant's prefix {prefix!r}; refusing to export it", tenant_id=tenant_id)
            yield ref
    finally:
        close = getattr(refs, "close", None)
        if close is not None:
            close()
