"""A tenant's export packages as the portal sees them: read from the export bucket.

The bucket is the truth about what is retained: a package exists while its
``datapackage.json`` does (the cleanup that ends its retention deletes it). One listing of
``exports/<tenant>/`` tells the complete packages from a package being written, whose objects
so far give the progress of a running export. Manifests never change once published, so they
are kept in a small cache; before a link is signed, the one object it points at is checked
against the manifest (size and ETag) so a client is never sent to a file that was replaced.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from flows.packaging import ETAG_FIELD, MANIFEST, package_prefix
from kernel.errors import BadInput, VerificationFailed
from kernel.ids import validate_export_id
from kernel.s3errors import raise_storage
from storage import links, objects
from storage.backup_store import head

CACHED_MANIFESTS = 512


@dataclass(frozen=True)
class PackageFile:
    """One file of a package, as its manifest describes it."""

    path: str
    bytes: int
    sha256: str
    rows: int | None = None
    etag: str | None = None


@dataclass(frozen=True)
class Package:
    """A published (complete, verified) export package."""

    tenant_id: str
    export_id: str
    created_at: str
    files: tuple[PackageFile, ...]

    def file(self, path: str) -> PackageFile | None:
        """The file at ``path``, or None: only the manifest's own files can be fetched."""
        return next((f for f in self.files if f.path == path), None)

    @property
    def total_bytes(self) -> int:
        """Size of every file together."""
        return sum(f.bytes for f in self.files)


@dataclass(frozen=True)
class Staged:
    """What a package being written holds so far."""

    export_id: str
    files_written: int
    bytes_written: int


def export_time(export_id: str) -> datetime:
    """When an export was started, from its id (``20261126T101500Z-…``)."""
    return datetime.strptime(export_id.split("-", 1)[0], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)


def parse_manifest(tenant_id: str, export_id: str, raw: bytes) -> Package:
    """A package from its ``datapackage.json`` (the manifest first, then its resources)."""
    descriptor = json.loads(raw)
    files = [PackageFile(MANIFEST, len(raw), hashlib.sha256(raw).hexdigest())]
    files += [PackageFile(path=r["path"], bytes=int(r["bytes"]),
                          sha256=str(r["hash"]).removeprefix("sha256:"), rows=r.get("rows"),
                          etag=r.get(ETAG_FIELD))
              for r in descriptor["resources"]]
    return Package(tenant_id, export_id, str(descriptor.get("created", "")), tuple(files))


class PackageReader:
    """Read packages of the export bucket; sign a link to one of their files."""

    def __init__(self, s3: Any, bucket: str) -> None:
        self._s3, self._bucket = s3, bucket
        self._cache: OrderedDict[tuple[str, str], Package] = OrderedDict()
        self._lock = threading.Lock()

    def folders(self, tenant_id: str) -> dict[str, dict[str, int]]:
        """Every export folder of the tenant: export id -> {relative path: size}, one listing."""
        prefix = package_prefix(tenant_id, "").removesuffix("/")  # exports/<tenant>/
        found: dict[str, dict[str, int]] = {}
        try:
            pages = self._s3.get_paginator("list_objects_v2").paginate(
                Bucket=self._bucket, Prefix=prefix)
            for page in pages:
                for obj in page.get("Contents", []):
                    export_id, _, path = obj["Key"][len(prefix):].partition("/")
                    if path:
                        found.setdefault(export_id, {})[path] = int(obj["Size"])
        except (ClientError, BotoCoreError) as err:
            raise_storage(err, f"listing {prefix!r} in {self._bucket!r}", tenant_id)
        return found

    def packages(self, tenant_id: str) -> list[Package]:
        """The tenant's retained packages, newest first (one listing, cached manifests)."""
        folders = self.folders(tenant_id)
        complete = sorted((i for i, paths in folders.items()
                           if MANIFEST in paths and _valid_id(i)), reverse=True)
        return [self._manifest(tenant_id, i) for i in complete]

    def package(self, tenant_id: str, export_id: str) -> Package | None:
        """One retained package of the tenant, or None (no such package, or not complete)."""
        if not _valid_id(export_id):
            return None
        key = package_prefix(tenant_id, export_id) + MANIFEST
        if head(self._s3, self._bucket, key, tenant_id) is None:  # never made, or deleted
            return None
        return self._manifest(tenant_id, export_id)

    def _manifest(self, tenant_id: str, export_id: str) -> Package:
        with self._lock:
            cached = self._cache.get((tenant_id, export_id))
        if cached is not None:
            return cached
        key = package_prefix(tenant_id, export_id) + MANIFEST
        package = parse_manifest(tenant_id, export_id,
                                 objects.read_bytes(self._s3, self._bucket, key, tenant_id))
        with self._lock:
            self._cache[(tenant_id, export_id)] = package
            while len(self._cache) > CACHED_MANIFESTS:
                self._cache.popitem(last=False)
        return package

    def staged(self, tenant_id: str, since: datetime) -> Staged | None:
        """The newest package being written that was started at ``since`` or later."""
        floor = since.replace(microsecond=0)
        candidates = sorted(
            ((i, paths) for i, paths in self.folders(tenant_id).items()
             if MANIFEST not in paths and _valid_id(i) and export_time(i) >= floor),
            reverse=True)
        if not candidates:
            return None
        export_id, paths = candidates[0]
        return Staged(export_id, len(paths), sum(paths.values()))

    def check(self, package: Package, file: PackageFile) -> None:
        """The object behind ``file`` still matches the manifest (size, and ETag if known).

        Raises:
            VerificationFailed: the object is gone, or was replaced.
        """
        tenant = package.tenant_id
        key = package_prefix(tenant, package.export_id) + file.path
        found = head(self._s3, self._bucket, key, tenant)
        if found is None or found["size"] != file.bytes or (
                file.etag and found["etag"] != file.etag):
            raise VerificationFailed(f"{file.path} of export {package.export_id} no longer "
                                     "matches its manifest", tenant_id=tenant)

    def sign(self, package: Package, file: PackageFile, ttl_seconds: int) -> str:
        """A signed GET link to one file, downloaded as an attachment (a bearer secret)."""
        key = package_prefix(package.tenant_id, package.export_id) + file.path
        return links.signed_get(self._s3, self._bucket, key, ttl_seconds, package.tenant_id)


def _valid_id(export_id: str) -> bool:
    try:
        validate_export_id(export_id)
    except BadInput:  # a folder that is not an export's
        return False
    return True
