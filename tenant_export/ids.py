"""Validation of identifiers and durations at the edge, before they reach a query or a key."""

from __future__ import annotations

import re
import secrets
from datetime import UTC, datetime

from tenant_export.errors import BadInput

MAX_LINK_TTL_SECONDS = 7 * 24 * 3600  # S3 SigV4 presigned URLs cannot live longer
DEFAULT_LINK_TTL_SECONDS = MAX_LINK_TTL_SECONDS

_TENANT_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")  # used with fullmatch
_EXPORT_ID_RE = re.compile(r"\d{8}T\d{6}Z-[0-9a-f]{4,32}")
_DURATION_RE = re.compile(r"\s*(\d+)\s*([smhd]?)\s*")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


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
    if not _EXPORT_ID_RE.fullmatch(export_id):
        raise BadInput(f"invalid export id {export_id!r}: expected e.g. 20261126T101500Z-3f2a")
    return export_id


def new_export_id(now: datetime | None = None) -> str:
    """A sortable, unguessable id: UTC time to the second plus 32 random bits."""
    moment = (now or datetime.now(UTC)).astimezone(UTC)
    return f"{moment:%Y%m%dT%H%M%SZ}-{secrets.token_hex(4)}"


def parse_duration(text: str | int) -> int:
    """Seconds from ``300``, ``90s``, ``15m``, ``12h`` or ``7d``."""
    if isinstance(text, int):
        seconds = text
    else:
        match = _DURATION_RE.fullmatch(text)
        if not match:
            raise BadInput(f"invalid duration {text!r}: use seconds (300) or 90s, 15m, 12h, 7d")
        seconds = int(match.group(1)) * _UNITS[match.group(2)]
    if seconds <= 0:
        raise BadInput(f"invalid duration {text!r}: must be positive")
    return seconds


def parse_link_ttl(text: str | int) -> int:
    """A link lifetime in seconds, refused above the 7-day SigV4 limit."""
    seconds = parse_duration(text)
    if seconds > MAX_LINK_TTL_SECONDS:
        raise BadInput(
            f"link TTL {text!r} is {seconds} s; signed S3 links live at most 7 days "
            f"({MAX_LINK_TTL_SECONDS} s)"
        )
    return seconds
