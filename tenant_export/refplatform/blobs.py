"""Document blobs as pure functions of (seed, size, key): nothing to keep in memory at scale.

Document n == 1 of every tenant is an empty blob; the others have varied sizes up to twice
``blob_bytes``. The bytes of a key can be rebuilt at any time, so a benchmark platform with
many thousands of documents only ever holds one blob at a time.
"""

from __future__ import annotations

import hashlib
import random
import re
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from .data import document_filename, slug

_NUMBER = re.compile(r"/docs/(\d{6})-")


def document_key(tenant_id: str, n: int, filename: str) -> str:
    return f"tenants/{tenant_id}/docs/{n:06d}-{slug(filename)}"


def document_keys(tenant_index: int, tenant_id: str, per_tenant: int) -> list[str]:
    return [document_key(tenant_id, n, document_filename(tenant_index, n, per_tenant))
            for n in range(1, per_tenant + 1)]


def blob_size(seed: int, blob_bytes: int, key: str) -> int:
    found = _NUMBER.search(key)
    if found is None or int(found.group(1)) == 1 or blob_bytes <= 0:
        return 0
    digest = hashlib.blake2b(f"{seed}:{key}".encode(), digest_size=8).digest()
    return 1 + int.from_bytes(digest, "big") % (2 * blob_bytes)


def blob_content(seed: int, blob_bytes: int, key: str) -> bytes:
    rng = random.Random(f"{seed}:{key}")  # noqa: S311 (test data, not a secret)
    return rng.randbytes(blob_size(seed, blob_bytes, key))


def put_all(s3_client: Any, bucket: str, keys: Iterable[str],
            content: Callable[[str], bytes], workers: int) -> int:
    """PUT every key (boto3 clients are thread-safe); a failed PUT raises."""

    def put(key: str) -> None:
        s3_client.put_object(Bucket=bucket, Key=key, Body=content(key))

    with ThreadPoolExecutor(max_workers=workers) as pool:
        return sum(1 for _ in pool.map(put, keys))
