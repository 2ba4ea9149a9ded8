"""A deterministic reference platform (an association-management SaaS) for tests, demo and
benchmarks, on SQLite and PostgreSQL, with the ground truth of which rows belong to whom.

It deliberately imports nothing from the project: it is the independent oracle the export
pipeline is judged against, so it must not share the pipeline's idea of ownership.

    spec = PlatformSpec.tiny()
    platform = create_sqlite(tmp_path / "platform.sqlite", spec)
    upload_blobs(s3, "docs", platform)
    platform.owned["choir"]["comments"]  # sorted primary keys of the choir's comments
"""

from __future__ import annotations

from typing import Any, Literal

from .blobs import put_all
from .postgres_db import create_postgres
from .schema import render
from .spec import Platform, PlatformSpec, tenant_schema
from .sqlite_db import create_sqlite

__all__ = ["Platform", "PlatformSpec", "create_postgres", "create_sqlite", "ddl",
           "tenant_schema", "upload_blobs"]


def ddl(backend: Literal["sqlite", "postgresql"], tenant_ids: list[str] | None = None) -> str:
    """The platform's DDL (tables, keys, indexes, views) for an empty database; with
    ``tenant_ids`` (PostgreSQL), the schema-per-tenant layout for those tenants."""
    if tenant_ids and backend != "postgresql":
        raise ValueError("the schema-per-tenant layout exists on PostgreSQL only")
    return render(backend, [tenant_schema(t) for t in tenant_ids or []]).script()


def upload_blobs(s3_client: Any, bucket: str, platform: Platform, *, workers: int = 8) -> int:
    """PUT every existing blob of the platform into ``bucket``; returns how many."""
    return put_all(s3_client, bucket, platform.blob_keys(), platform.blob_for, workers)
