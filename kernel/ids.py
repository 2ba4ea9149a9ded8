"""Identifiers: validated before they reach a query or an object key, generated in one place."""

from __future__ import annotations

import hashlib
import re
import secrets
from datetime import UTC, datetime

from kernel.errors import BadInput

_TENANT_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")  # used with fullmatch
_EXPORT_ID_RE = re.compile(r"\d{8}T\d{6}Z-[0-9a-f]{4,32}")
_SNAPSHOT_ID_RE = re.compile(r"\d{8}T\d{6}(\d{6})?Z-[0-9a-f]{8,32}")
_ARTIFACT_UNSAFE = re.compile(r"[^a-z0-9]+")


def validate_tenant_id(tenant_id: str) -> str:
    """Return the id unchanged, or raise ``BadInput``: ids become S3 key segments and SQL values."""
    if not isinstance(tenant_id, str) or not _TENANT_RE.fullmatch(tenant_id) or ".." in tenant_id:
        raise BadInput(
            f"invalid tenant id {tenant_id!r}: use 1-128 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return tenant_id


def validate_export_id(export_id: str) -> str:
    """Return the id unchanged, or raise ``BadInput`` (it becomes an S3 key segment)."""
    if not isinstance(export_id, str) or not _EXPORT_ID_RE.fullmatch(export_id):
        raise BadInput(f"invalid export id {export_id!r}: expected e.g. 20261126T101500Z-3f2a")
    return export_id


def validate_snapshot_id(snapshot_id: str) -> str:
    """Return the id unchanged, or raise ``BadInput`` (it becomes an S3 key segment)."""
    if not isinstance(snapshot_id, str) or not _SNAPSHOT_ID_RE.fullmatch(snapshot_id):
        raise BadInput(f"invalid snapshot id {snapshot_id!r}: expected e.g. "
                       "20261126T023000Z-1a2b3c4d")
    return snapshot_id


def new_export_id(now: datetime | None = None) -> str:
    """A sortable, unguessable id: UTC time to the second plus 32 random bits."""
    moment = (now or datetime.now(UTC)).astimezone(UTC)
    return f"{moment:%Y%m%dT%H%M%SZ}-{secrets.token_hex(4)}"


def new_snapshot_id(now: datetime | None = None) -> str:
    """Sortable by time, unguessable: ``20261126T023000Z-1a2b3c4d``."""
    moment = (now or datetime.now(UTC)).astimezone(UTC)
    return f"{moment:%Y%m%dT%H%M%SZ}-{secrets.token_hex(4)}"


def new_case_id(prefix: str, now: datetime | None = None) -> str:
    """A short unguessable ledger id: ``M-20261126-3f2a9c1b``."""
    return f"{prefix}-{(now or datetime.now(UTC)):%Y%m%d}-{secrets.token_hex(4)}"


def artifact_key(kind: str, name: str) -> str:
    """A Prefect artifact key for ``name`` that no other name shares.

    Prefect allows only lowercase letters, digits and dashes, which folds ``T.1`` and ``t-1``
    together; a short hash of the exact name keeps them apart.
    """
    slug = _ARTIFACT_UNSAFE.sub("-", name.lower()).strip("-")[:60]
    digest = hashlib.sha256(name.encode("utf-8")).hexdigest()[:10]
    return f"{kind}-{slug}-{digest}" if slug else f"{kind}-{digest}"
