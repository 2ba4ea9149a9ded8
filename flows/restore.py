"""Verify and restore backup snapshots, in plain code.

``verify`` reads back and decrypts every object of a snapshot (like ``restic check
--read-data``). ``restore`` verifies first, so a damaged snapshot writes nothing; then it creates
the tenant's tables in an empty target database in one transaction, loads the rows, uploads the
documents, and checks row counts and document hashes against the manifest.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from sqlalchemy import create_engine, inspect
from sqlalchemy.exc import SQLAlchemyError

from flows.backup import (
    BLOB_OBJECT,
    data_key,
    decrypt_object,
    list_snapshots,
    read_manifest,
    schema_of,
)
from sources.database import describe_url, driver_errors, normalize_url
from storage import backup_store as store
from storage import objects
from storage.aead import SeekableDecryptor, object_associated_data
from storage.keys import KeyWrapper
from storage.s3 import require_bucket
from tenant_export.errors import BadInput, SourceUnavailable, VerificationFailed
from tenant_export.settings import Settings

_TEXT_TYPES = ("TEXT", "VARCHAR", "CHAR", "CHARACTER", "CLOB", "STRING")


@dataclass
class S3Context:
    """A :class:`StoreContext` for commands that never touch the platform database."""

    settings: Settings
    s3: Any


def resolve_snapshot(ctx: Any, tenant_id: str, snapshot_id: str | None) -> str:
    """The given snapshot if complete, else the newest complete one."""
    complete = list_snapshots(ctx, tenant_id)
    if snapshot_id is None:
        if not complete:
            raise BadInput(f"tenant {tenant_id!r} has no complete backup snapshot",
                           tenant_id=tenant_id)
        return complete[-1]
    if snapshot_id not in complete:
        raise BadInput(f"no complete snapshot {snapshot_id!r} for tenant {tenant_id!r}",
                       tenant_id=tenant_id)
    return snapshot_id


def verify_snapshot(ctx: Any, wrapper: KeyWrapper, tenant_id: str,
                    snapshot_id: str | None = None) -> dict[str, Any]:
    """Decrypt every object of the snapshot and compare sizes and hashes with the manifest."""
    snapshot_id = resolve_snapshot(ctx, tenant_id, snapshot_id)
    dek = data_key(ctx, wrapper, tenant_id, create=False)
    manifest = read_manifest(ctx, dek, tenant_id, snapshot_id)
    prefix = store.snapshot_prefix(tenant_id, snapshot_id)
    checked = 0
    for table in manifest["tables"]:
        _check_plain(ctx, dek, tenant_id, prefix + table["object"],
                     f"snapshots/{snapshot_id}/{table['object']}",
                     table["plaintext_bytes"], table["plaintext_sha256"])
        checked += 1
    for sha in sorted({d["blob"] for d in manifest["documents"] if d.get("blob")}):
        info = manifest["blobs"].get(sha, {})
        _check_plain(ctx, dek, tenant_id, store.blob_key(tenant_id, sha), BLOB_OBJECT,
                     info.get("plaintext_bytes"), sha)
        checked += 1
    return {"tenant_id": tenant_id, "snapshot_id": snapshot_id, "objects": checked + 1,
            "tables": len(manifest["tables"]), "documents": len(manifest["documents"]),
            "ok": True}


def _check_plain(ctx: Any, dek: bytes, tenant_id: str, key: str, name: str,
                 size: int | None, sha256: str) -> None:
    digest, total = hashlib.sha256(), 0
    for piece in decrypt_object(ctx, dek, tenant_id, key, name):
        digest.update(piece)
        total += len(piece)
    if digest.hexdigest() != sha256 or (size is not None and total != size):
        raise VerificationFailed(
            f"{key}: decrypts to {total} bytes sha256 {digest.hexdigest()}, the manifest says "
            f"{size} bytes sha256 {sha256}", tenant_id=tenant_id)


# -- restore ---------------------------------------------------------------------------------


def restore_snapshot(ctx: Any, wrapper: KeyWrapper, tenant_id: str, target_url: str,
                     snapshot_id: str | None = None,
                     documents_bucket: str | None = None) -> dict[str, Any]:
    """Rebuild the tenant's tables in ``target_url`` (and documents in a bucket), checked."""
    url = normalize_url(target_url)  # a wrong target fails now, not after hours of verifying
    if url.get_backend_name() not in ("sqlite", "postgresql"):
        raise BadInput(f"restore target must be sqlite:// or postgresql://, not "
                       f"{url.get_backend_name()!r}", tenant_id=tenant_id)
    engine = create_engine(url)
    try:
        taken = _taken_names(engine)
    except SQLAlchemyError as err:
        raise SourceUnavailable(f"cannot reach target database {describe_url(url)}: "
                                f"{getattr(err, 'orig', err)}") from err
    if documents_bucket:  # must exist before any table is written
        require_bucket(ctx.s3, documents_bucket, "target documents", tenant_id)
    report = verify_snapshot(ctx, wrapper, tenant_id, snapshot_id)  # nothing written if bad
    snapshot_id = report["snapshot_id"]
    dek = data_key(ctx, wrapper, tenant_id, create=False)
    manifest = read_manifest(ctx, dek, tenant_id, snapshot_id)
    clash = sorted(t["name"] for t in manifest["tables"] if t["name"].casefold() in taken)
    if clash:
        raise BadInput(f"target database already has table(s) or view(s) {', '.join(clash)}; "
                       "restore into an empty database", tenant_id=tenant_id)
    if documents_bucket:
        _check_document_targets(ctx, tenant_id, manifest, documents_bucket)
    rows = _load_tables(ctx, engine, dek, tenant_id, snapshot_id, manifest)
    restored_docs = 0
    if documents_bucket:
        restored_docs = _restore_documents(ctx, dek, tenant_id, manifest, documents_bucket)
    return {**report, "target": describe_url(url), "rows": rows,
            "documents_restored": restored_docs}


def _load_tables(ctx: Any, engine: Any, dek: bytes, tenant_id: str, snapshot_id: str,
                 manifest: dict[str, Any]) -> dict[str, int]:
    """Create and fill every table in one transaction; row counts checked before commit."""
    url = engine.url
    same_backend = engine.dialect.name == manifest["source"]
    prefix = store.snapshot_prefix(tenant_id, snapshot_id)
    rows: dict[str, int] = {}
    raw = engine.raw_connection()
    driver: Any = raw.driver_connection
    if engine.dialect.name == "sqlite":  # pysqlite would commit each CREATE TABLE by itself
        driver.isolation_level = None
        driver.execute("BEGIN")
    try:
        cursor = raw.cursor()
        for table in manifest["tables"]:
            schema = schema_of(table)
            loader = _TableLoader(engine.dialect, table["name"], schema, same_backend,
                                  table.get("primary_key", []))
            cursor.execute(loader.create_sql())
            reader = SeekableDecryptor(
                store.range_reader(ctx.s3, ctx.settings.backup_bucket, prefix + table["object"],
                                   tenant_id),
                table["ciphertext_bytes"], dek,
                object_associated_data(tenant_id, f"snapshots/{snapshot_id}/{table['object']}"))
            for batch in pq.ParquetFile(reader).iter_batches(batch_size=5000):
                cursor.executemany(loader.insert_sql(), loader.rows(batch))
            cursor.execute(f"SELECT count(*) FROM {loader.plain_table}")
            counted = cursor.fetchone()
            rows[table["name"]] = int(counted[0]) if counted else 0
            if rows[table["name"]] != table["rows"]:
                raise VerificationFailed(f"table {table['name']!r}: restored "
                                         f"{rows[table['name']]} rows, the manifest has "
                                         f"{table['rows']}", tenant_id=tenant_id)
        if engine.dialect.name == "sqlite":
            driver.execute("COMMIT")
        else:
            raw.commit()
    except BaseException as failure:
        with contextlib.suppress(Exception):
            if engine.dialect.name == "sqlite":
                driver.execute("ROLLBACK")
            else:
                raw.rollback()
        if isinstance(failure, SQLAlchemyError | driver_errors()):
            raise SourceUnavailable(f"restoring into {describe_url(url)}: {failure}",
                                    tenant_id=tenant_id) from failure
        raise
    finally:
        raw.close()
        engine.dispose()
    return rows


def _taken_names(engine: Any) -> set[str]:
    """Tables and views of the target, case-folded (SQLite ignores case in names)."""
    inspector = inspect(engine)
    return {n.casefold() for n in [*inspector.get_table_names(), *inspector.get_view_names()]}


def _check_document_targets(ctx: Any, tenant_id: str, manifest: dict[str, Any],
                            bucket: str) -> None:
    """Refuse before writing anything when a document would overwrite an existing object."""
    for doc in manifest["documents"]:
        key = doc.get("storage_key")
        if not doc.get("blob") or not key:
            continue
        if store.head(ctx.s3, bucket, key, tenant_id) is not None:
            raise BadInput(f"{bucket}/{key} already exists: restore documents into an empty "
                           "bucket (nothing was written)", tenant_id=tenant_id)


def _restore_documents(ctx: Any, dek: bytes, tenant_id: str, manifest: dict[str, Any],
                       bucket: str) -> int:
    count = 0
    for doc in manifest["documents"]:
        if not doc.get("blob") or not doc.get("storage_key"):
            continue
        written: list[objects.StoredObject] = []
        with objects.upload(ctx.s3, bucket, doc["storage_key"], tenant_id=tenant_id,
                            written=written) as out:
            for piece in decrypt_object(ctx, dek, tenant_id, store.blob_key(tenant_id, doc["blob"]),
                                  BLOB_OBJECT):
                out.write(piece)
        if written[0].sha256 != doc["blob"]:
            raise VerificationFailed(f"document {doc['document_id']}: restored bytes do not "
                                     "match its blob hash", tenant_id=tenant_id)
        objects.verify(ctx.s3, bucket, written[0], tenant_id)
        count += 1
    return count


class _TableLoader:
    """DDL and rows for one table in the target, undoing the export's text renderings."""

    def __init__(self, dialect: Any, name: str, schema: pa.Schema, same_backend: bool,
                 primary_key: list[str]) -> None:
        self.dialect = dialect
        self.quote = dialect.identifier_preparer.quote
        self.table = self.quote(name)  # in parameterised statements (psycopg doubles %)
        self.plain_table = self.table.replace("%%", "%") if dialect.name != "sqlite" else (
            self.table)
        self.fields = [f for f in schema if b"sqlite_type_of" not in (f.metadata or {})]
        self.companions = {
            (f.metadata or {})[b"sqlite_type_of"].decode(): f.name
            for f in schema if b"sqlite_type_of" in (f.metadata or {})}
        self.same_backend = same_backend
        # PostgreSQL only: in SQLite an INTEGER PRIMARY KEY becomes the rowid and would refuse
        # or renumber values that SQLite's loose typing let the source keep
        self.primary_key = [c for c in primary_key if c in {f.name for f in self.fields}] if (
            dialect.name != "sqlite") else []
        self.param = "?" if dialect.name == "sqlite" else "%s"

    def _declared(self, field: pa.Field) -> str:
        declared = str((field.metadata or {}).get(b"source_type", b"").decode())
        if self.same_backend and declared and declared != "NullType":
            return declared
        kind = field.type
        if pa.types.is_integer(kind):
            return "BIGINT"
        if pa.types.is_floating(kind):
            return "REAL" if self.dialect.name == "sqlite" else "DOUBLE PRECISION"
        if pa.types.is_boolean(kind):
            return "BOOLEAN"
        if pa.types.is_binary(kind):
            return "BLOB" if self.dialect.name == "sqlite" else "BYTEA"
        return "" if self.dialect.name == "sqlite" else "TEXT"

    def create_sql(self) -> str:
        quote = self._plain_quote
        columns = [f"{quote(f.name)} {self._declared(f)}".rstrip() for f in self.fields]
        if self.primary_key:
            columns.append(f"PRIMARY KEY ({', '.join(quote(c) for c in self.primary_key)})")
        return f"CREATE TABLE {self.plain_table} ({', '.join(columns)})"

    def _plain_quote(self, name: str) -> str:
        """Quoted for a statement run without parameters (no ``%`` doubling)."""
        quoted = str(self.quote(name))
        return quoted.replace("%%", "%") if self.dialect.name != "sqlite" else quoted

    def insert_sql(self) -> str:
        names = ", ".join(self.quote(f.name) for f in self.fields)
        marks = ", ".join(self._mark(f) for f in self.fields)
        return f"INSERT INTO {self.table} ({names}) VALUES ({marks})"

    def _mark(self, field: pa.Field) -> str:
        declared = self._declared(field)
        text_rendered = pa.types.is_string(field.type) and declared and not declared.upper(
        ).startswith(_TEXT_TYPES)
        if self.dialect.name == "postgresql" and text_rendered:
            return f"CAST({self.param} AS {declared})"
        return self.param

    def rows(self, batch: pa.RecordBatch) -> list[tuple[Any, ...]]:
        columns: list[list[Any]] = []
        for field in self.fields:
            values = batch.column(field.name).to_pylist()
            companion = self.companions.get(field.name)
            classes = (field.metadata or {}).get(b"sqlite_storage_classes", b"").decode()
            if companion is not None:
                kinds = batch.column(companion).to_pylist()
                values = [_by_class(v, k) for v, k in zip(values, kinds, strict=True)]
            elif pa.types.is_string(field.type) and set(classes.split(",")) == {"integer",
                                                                               "real"}:
                values = [_number(v) for v in values]
            columns.append(values)
        return list(zip(*columns, strict=True)) if columns else []


def _by_class(text: str | None, storage: str | None) -> Any:
    if text is None or storage is None:
        return None
    if storage == "integer":
        return int(text)
    if storage == "real":
        return float(text)
    if storage == "blob":
        return base64.b64decode(text)
    return text


def _number(text: str | None) -> int | float | None:
    if text is None:
        return None
    if any(marker in text.lower() for marker in (".", "e", "inf", "nan")):
        return float(text)
    return int(text)
