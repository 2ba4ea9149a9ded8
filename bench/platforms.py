"""The reference platform (``tenant_export.refplatform``) at benchmark sizes, and what the
benchmark does to it: the native tools' per-tenant queries, a night's changes.

A platform has two tenants of the same size (the generator's sizes are per tenant): the
benchmarked one (the first) and a neighbour whose rows are interleaved in every table, as in a
shared database. Only the benchmarked tenant's blobs are uploaded: nothing here reads the
neighbour's documents, and the bucket stays small.
"""

from __future__ import annotations

import random
import sqlite3
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from tenant_export.refplatform import Platform, PlatformSpec, create_postgres, create_sqlite
from tenant_export.refplatform.blobs import put_all
from tenant_export.refplatform.schema import TABLES, TENANT_COLUMN, Table, qualify

Backend = Literal["sqlite", "postgresql"]
EXCLUDED = {"members": {"password_hash"}}
"""Columns the catalog keeps out of exports (and so out of the native dumps of exports)."""
EDITED_SUFFIX = " (edited)"


@dataclass(frozen=True)
class Size:
    """What the benchmarked tenant holds: rows over all its tables, documents, their mean size."""

    rows: int
    documents: int
    blob_bytes: int = 4096

    @property
    def slug(self) -> str:
        return f"r{self.rows}-d{self.documents}-b{self.blob_bytes}"

    @property
    def doc_kib_text(self) -> str:
        """The documents' mean size (sizes vary from 1 byte to twice the mean)."""
        return f"{self.blob_bytes / 1024:g} KiB"


def spec_for(size: Size, *, tenants: int = 2, seed: int = 7) -> PlatformSpec:
    """A spec whose tenants each hold about ``size.rows`` rows and ``size.documents`` documents,
    in the proportions of ``PlatformSpec.bench`` (k members and activity rows per tenant)."""

    def make(k: int) -> PlatformSpec:
        return PlatformSpec(tenants=tenants, members_per_tenant=k, events_per_tenant=k // 4,
                            posts_per_tenant=k // 2, documents_per_tenant=size.documents,
                            invoices_per_tenant=k // 4, activity_per_tenant=k,
                            blob_bytes=size.blob_bytes, track_truth=False, seed=seed)

    def per_tenant(k: int) -> float:
        return (make(k).estimated_rows() - 14) / tenants

    low, high = 1, 1
    while per_tenant(high) < size.rows:
        high *= 2
    while low < high:  # the smallest k reaching the size
        mid = (low + high) // 2
        if per_tenant(mid) < size.rows:
            low = mid + 1
        else:
            high = mid
    return make(low)


def build(backend: Backend, where: str, size: Size, *, tenants: int = 2) -> Platform:
    """The platform in a new SQLite file (``where`` a path) or an empty PostgreSQL database
    (``where`` a URL)."""
    spec = spec_for(size, tenants=tenants)
    if backend == "sqlite":
        return create_sqlite(Path(where), spec)
    return create_postgres(where, spec)


def tenant_blob_keys(platform: Platform, tenant: str) -> list[str]:
    prefix = f"tenants/{tenant}/"
    return [k for k in platform.blob_keys() if k.startswith(prefix)]


def upload_blobs(s3: Any, bucket: str, platform: Platform, tenants: list[str]) -> tuple[int, int]:
    """PUT the blobs of ``tenants``; returns (count, bytes)."""
    keys = [k for t in tenants for k in tenant_blob_keys(platform, t)]
    put_all(s3, bucket, keys, platform.blob_for, workers=16)
    return len(keys), sum(len(platform.blob_for(k)) for k in keys)


def tenant_rows(platform: Platform) -> int:
    """Rows of the benchmarked tenant (the generator's sizes are the same for each tenant)."""
    content = sum(n for t, n in platform.row_counts.items() if t in platform.content_tables)
    return round(content / len(platform.tenant_ids))


# -- catalogs ---------------------------------------------------------------------------------


def documents_only_catalog(platform: Platform) -> str:
    """The platform's catalog with every content table skipped but ``tenants`` and
    ``documents``: an export of this catalog is the documents' ZIP, the index and two tiny
    tables, what the operator's rclone + zip script produces."""
    text = platform.catalog_toml
    keep = {"tenants", "documents"}
    lines = text.splitlines()
    out: list[str] = []
    headed: set[str] = set()
    for line in lines:
        out.append(line)
        name = line.strip()[len("[tables."):-1] if line.strip().startswith("[tables.") else ""
        if name and "." not in name:
            headed.add(name)
            if name in platform.content_tables and name not in keep:
                out.append("skip = true")
    for table in platform.content_tables:
        if table not in keep and table not in headed:
            out += ["", f"[tables.{table}]", "skip = true"]
    result = "\n".join(out) + "\n"
    tomllib.loads(result)  # a duplicate table header would fail here, not in the export
    return result


# -- the native tools' per-tenant queries --------------------------------------------------------


def _ref_to_tenant(table: Table) -> tuple[str, str, str] | None:
    """The first column of a child table that leads to a tenant-scoped parent."""
    for column in table.columns:
        if column.ref and column.ref[0] != table.name:
            parent = next(t for t in TABLES if t.name == column.ref[0])
            if parent.kind != "shared":
                return column.name, parent.name, column.ref[1]
    return None


def tenant_filter(table: Table, tenant: str, backend: Backend) -> str:
    """A WHERE clause selecting the tenant's rows of ``table``, as an operator writes it."""
    literal = "'" + tenant.replace("'", "''") + "'"
    if table.kind == "root":
        return f"id = {literal}"
    if table.kind == "tenant":
        return f"{TENANT_COLUMN} = {literal}"
    ref = _ref_to_tenant(table)
    if ref is None:
        raise ValueError(f"{table.name}: no path to a tenant")
    column, parent_name, parent_column = ref
    parent = next(t for t in TABLES if t.name == parent_name)
    return (f"{column} IN (SELECT {parent_column} FROM {_name(parent, backend)} "
            f"WHERE {tenant_filter(parent, tenant, backend)})")


def _name(table: Table, backend: Backend) -> str:
    return qualify(table.name, None) if backend == "postgresql" else table.name


def tenant_queries(tenant: str, backend: Backend) -> Iterator[tuple[str, str]]:
    """(table, SELECT) for every table holding the tenant's rows, exported columns only,
    in primary-key order (the order of our CSV files)."""
    for table in TABLES:
        if table.kind == "shared":
            continue
        columns = ", ".join(c for c in table.names if c not in EXCLUDED.get(table.name, set()))
        yield table.name, (f"SELECT {columns} FROM {_name(table, backend)} "
                           f"WHERE {tenant_filter(table, tenant, backend)} "
                           f"ORDER BY {', '.join(table.pk)}")


# -- a night's changes ---------------------------------------------------------------------------


def _editable(table: Table) -> str | None:
    """A text column a user edits (no key, no reference, not the tenant, not a secret)."""
    for column in table.columns:
        if (column.type in ("text", "ctext") and column.name not in table.pk
                and column.ref is None and column.name != TENANT_COLUMN
                and column.name not in EXCLUDED.get(table.name, set())):
            return column.name
    return None


def change_rows(db: Path, tenant: str, fraction: float, pattern: str, seed: int = 11
                ) -> dict[str, int]:
    """Edit ``fraction`` of the tenant's rows in every table that has an editable column
    (at least one row each): the newest rows by primary key (``recent``: what users edit on a
    given day) or rows spread over the table (``scattered``). Returns rows changed per table."""
    changed: dict[str, int] = {}
    conn = sqlite3.connect(db)
    try:
        rng = random.Random(seed)
        with conn:
            for table in TABLES:
                column = _editable(table)
                if table.kind in ("shared", "root") or column is None:
                    continue
                where = tenant_filter(table, tenant, "sqlite")
                rowids = [r[0] for r in conn.execute(
                    f"SELECT rowid FROM {table.name} WHERE {where} ORDER BY {', '.join(table.pk)}")]
                if not rowids:
                    continue
                n = max(1, round(len(rowids) * fraction))
                pick = rowids[-n:] if pattern == "recent" else rng.sample(rowids, n)
                conn.executemany(f"UPDATE {table.name} SET {column} = coalesce({column}, '') "
                                 f"|| '{EDITED_SUFFIX}' WHERE rowid = ?", [(r,) for r in pick])
                changed[table.name] = n
    finally:
        conn.close()
    return changed


def change_documents(s3: Any, bucket: str, platform: Platform, tenant: str, fraction: float,
                     seed: int = 13) -> tuple[int, int]:
    """Overwrite ``fraction`` of the tenant's blobs (at least one) with new bytes of the same
    size (a new version of the file, same key); returns (count, bytes)."""
    keys = [k for k in tenant_blob_keys(platform, tenant) if platform.blob_for(k)]
    rng = random.Random(seed)
    chosen = rng.sample(keys, max(1, round(len(keys) * fraction)))
    total = 0
    for key in chosen:
        size = len(platform.blob_for(key))
        s3.put_object(Bucket=bucket, Key=key, Body=rng.randbytes(size))
        total += size
    return len(chosen), total
