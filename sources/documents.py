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
from sources.scoping import Owned
from sources.tables import TenantRef

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
    rows = snapshot.select_owned(plan, [rule.id_column, rule.name_column, rule.key_column],
                                 tenant_key, order_by=[rule.id_column],
                                 schema=catalog.config.db_schema)
    try:
        for doc_id, name, key in rows:
            yield DocumentRef(
                document_id=str(doc_id),
                filename="" if name is None else str(name),
                storage_key=None if key is None else str(key),
            )
    finally:
        rows.close()


def shared_keys(snapshot: Snapshot, catalog: Catalog, tenant_key: object
                ) -> list[DocumentRef]:
    """The tenant's documents whose key a row that is not the tenant's also uses (checked when
    the catalog says keys are not tenant-scoped: such a blob may be another tenant's file)."""
    rule = catalog.config.documents
    plan = catalog.table(rule.table)
    if plan is None:
        return []
    sql, scope = snapshot.sql, plan.effective_scope
    source = snapshot.source(plan, TenantRef.of(tenant_key), catalog.config.db_schema)
    mine, theirs = Owned(sql, TenantRef.of(tenant_key)), Owned(sql, TenantRef.of(tenant_key))
    ident, key, name = (rule.id_column, rule.key_column, rule.name_column)
    statement = (
        f"SELECT {sql.column('t', ident)}, {sql.column('t', name)}, {sql.column('t', key)} "
        f"FROM {source} t WHERE {mine.where(scope, 't')} AND {sql.column('t', key)} IN ("
        f"SELECT {sql.column('o', key)} FROM {source} o WHERE {sql.column('o', key)} IS NOT NULL "
        f"AND NOT EXISTS (SELECT 1 FROM {source} m WHERE {sql.column('m', ident)} = "
        f"{sql.column('o', ident)} AND {theirs.where(scope, 'm')})) "
        f"ORDER BY {sql.column('t', ident)}")
    return [DocumentRef(str(i), "" if n is None else str(n), None if k is None else str(k))
            for i, n, k in snapshot.rows(statement, [*mine.params, *theirs.params],
                                         f"table {plan.name!r}")]


def missing_reason(ref: DocumentRef) -> str | None:
    """Why a document cannot be read before asking the bucket (None: ask the bucket)."""
    if ref.storage_key is None:
        return "key is NULL"
    if not ref.storage_key:
        return "key is empty"
    return None


def open_blob(client: Any, bucket: str, key: str | None) -> Iterator[bytes] | None:
    """The blob's bytes in chunks, or None when the object is gone.

    The GET is issued here, before the first chunk is asked for, so a missing blob is known
    before the caller commits to writing a ZIP entry for it.
    """
    opened = open_document(client, bucket, key) if key else None
    return None if opened is None else opened[1]


@dataclass(frozen=True)
class StoredDocument:
    """A document object as the bucket describes it: the ETag and size say whether it changed."""

    key: str
    etag: str
    size: int


def open_document(client: Any, bucket: str, key: str
                  ) -> tuple[StoredDocument, Iterator[bytes]] | None:
    """The object's ETag and size *as read* with its bytes in chunks, or None when it is gone
    (a backup records what it read, not what a listing said a moment before)."""
    what = f"reading document {key!r} from bucket {bucket!r}"
    try:
        response = client.get_object(Bucket=bucket, Key=key)
    except (ClientError, BotoCoreError) as err:
        if is_missing(err):
            return None
        raise_storage(err, what)
    found = StoredDocument(key, str(response.get("ETag", "")).strip('"'),
                           int(response["ContentLength"]))
    return found, Chunks(response["Body"], what)


class Chunks:
    """A response body in chunks. ``close()`` releases the connection whether or not reading
    began (a generator's ``finally`` does not run when it is closed before its first chunk,
    which a read-ahead that aborts does)."""

    def __init__(self, body: Any, what: str) -> None:
        self._body, self._what = body, what
        self._chunks: Iterator[bytes] | None = None

    def __iter__(self) -> Chunks:
        return self

    def __next__(self) -> bytes:
        if self._chunks is None:
            self._chunks = iter(self._body.iter_chunks(CHUNK_BYTES))
        try:
            return next(self._chunks)
        except StopIteration:
            self.close()
            raise
        except (BotoCoreError, ClientError, OSError) as err:
            self.close()
            raise_storage(err, self._what)

    def close(self) -> None:
        """Release the response (idempotent)."""
        self._body.close()


def head_document(client: Any, bucket: str, key: str) -> StoredDocument | None:
    """ETag and size of one document, or None when it is gone (one HEAD)."""
    try:
        response = client.head_object(Bucket=bucket, Key=key)
    except (ClientError, BotoCoreError) as err:
        if is_missing(err):
            return None
        raise_storage(err, f"inspecting document {key!r} in bucket {bucket!r}")
    return StoredDocument(key, str(response.get("ETag", "")).strip('"'),
                          int(response["ContentLength"]))


def list_documents(client: Any, bucket: str, prefix: str) -> Iterator[StoredDocument]:
    """Every object under ``prefix`` with its ETag and size: one ListObjectsV2 request per
    1,000 objects, where a HEAD per document would cost 1,000."""
    what = f"listing {prefix!r} in bucket {bucket!r}"
    try:
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket,
                                                                      Prefix=prefix):
            for item in page.get("Contents", []):
                yield StoredDocument(item["Key"], str(item.get("ETag", "")).strip('"'),
                                     int(item["Size"]))
    except (ClientError, BotoCoreError) as err:
        raise_storage(err, what)


def key_prefix(rule: DocumentsRule, tenant_id: str) -> str | None:
    """The folder a tenant's blobs must be in: the catalog's prefix with the tenant's stored id,
    always ending in ``/`` (``tenants/acme`` must not let ``acme`` reach ``tenants/acme-corp/``)."""
    if rule.key_prefix is None:
        return None
    prefix = rule.key_prefix.replace("{tenant_id}", tenant_id)
    return prefix if prefix.endswith("/") else prefix + "/"


def inside(key: str, prefix: str) -> bool:
    """Whether ``key`` lies inside the folder ``prefix``, with no ``.`` or ``..`` segment a
    store that normalises paths could resolve elsewhere."""
    if not key.startswith(prefix):
        return False
    return all(s not in (".", "..") for s in key[len(prefix):].replace("\\", "/").split("/"))


def confined(refs: Iterator[DocumentRef], rule: DocumentsRule, tenant_id: str
             ) -> Generator[DocumentRef, None, None]:
    """Refuse a document whose key lies outside the tenant's folder (when one is configured):
    a platform row pointing at another tenant's blob must not ship that blob."""
    prefix = key_prefix(rule, tenant_id)
    try:
        for ref in refs:
            if prefix is not None and ref.storage_key and not inside(ref.storage_key, prefix):
                raise TerminalError(
                    f"document {ref.document_id} has storage key {ref.storage_key!r} outside "
                    f"the tenant's prefix {prefix!r}; refusing to export it", tenant_id=tenant_id)
            yield ref
    finally:
        close = getattr(refs, "close", None)
        if close is not None:
            close()
