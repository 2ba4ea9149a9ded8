"""Expiring signed GET links: the only way a client reaches its export."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

from botocore.exceptions import BotoCoreError, ClientError

from kernel.errors import BadInput
from kernel.s3errors import raise_storage
from kernel.timeparse import MAX_LINK_TTL_SECONDS


def content_disposition(filename: str) -> str:
    """``attachment; filename="..."``, plus the RFC 6266 UTF-8 form for non-ASCII names."""
    ascii_name = filename.encode("ascii", "replace").decode().replace('"', "_").replace("?", "_")
    header = f'attachment; filename="{ascii_name}"'
    if ascii_name != filename:
        header += f"; filename*=UTF-8''{quote(filename, safe='')}"
    return header


def signed_get(
    client: Any, bucket: str, key: str, ttl_seconds: int, tenant_id: str | None = None
) -> str:
    """A SigV4 presigned GET that downloads ``key`` as an attachment for ``ttl_seconds``."""
    if not 0 < ttl_seconds <= MAX_LINK_TTL_SECONDS:
        raise BadInput(f"link TTL must be 1..{MAX_LINK_TTL_SECONDS} s, got {ttl_seconds}",
                       tenant_id=tenant_id)
    filename = key.rsplit("/", 1)[-1]
    try:
        url: str = client.generate_presigned_url(
            "get_object",
            Params={
                "Bucket": bucket,
                "Key": key,
                "ResponseContentDisposition": content_disposition(filename),
            },
            ExpiresIn=ttl_seconds,
        )
    except (ClientError, BotoCoreError) as err:
        raise_storage(err, f"signing a link for {key!r}", tenant_id)
    return url


def expiry(ttl_seconds: int, now: datetime | None = None) -> datetime:
    """When links minted now with this TTL stop working."""
    return (now or datetime.now(UTC)) + timedelta(seconds=ttl_seconds)


def redact(url: str) -> str:
    """A link safe to log: the signature and credential are cut off."""
    return url.split("?", 1)[0] + "?…"
