"""The tenant's key record in the backup bucket: read, created once, rotated, rewrapped.

Every write is conditional (``If-None-Match: *`` to create, ``If-Match: <ETag>`` to replace),
so a record is never overwritten by a process that did not read its current version: two first
backups cannot create two keys, and a rotation or rewrap racing a purge cannot resurrect the
record the purge deleted. A missing record is never answered with a new key while anything it
sealed remains (``docs/backup-format.md``, section 5), and with the control database
(:mod:`storage.key_registry`) a replaced or rolled-back record is refused by name.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from kernel.errors import BadInput, VerificationFailed
from kernel.s3errors import PRECONDITION_CODES, error_code, is_missing, raise_storage
from storage import backup_store as layout
from storage import objects
from storage.datakeys import FIRST_KEY_ID, DataKeys
from storage.key_registry import KeyRegistry
from storage.keyring_records import (
    ACTIVE,
    RECORD_VERSION,
    KeyRecord,
    now_text,
    open_record,
    parse,
    pick_wrapper,
    rewrapped,
    rotated,
    seal,
)
from storage.keys import new_data_key
from storage.wrapping import KeyWrapper


@dataclass(frozen=True)
class Loaded:
    """An authenticated record: its data keys, the wrapper that opened it, its ETag."""

    record: KeyRecord
    keys: DataKeys
    wrapper: KeyWrapper
    etag: str


@dataclass(frozen=True)
class KeyStore:
    """Key records of one backup bucket."""

    s3: Any
    bucket: str

    def read(self, tenant_id: str) -> tuple[bytes, str] | None:
        """The record's bytes and ETag, or None when there is none."""
        key = layout.key_record_key(tenant_id)
        try:
            response = self.s3.get_object(Bucket=self.bucket, Key=key)
            return bytes(response["Body"].read()), str(response.get("ETag", ""))
        except ClientError as err:
            if is_missing(err):
                return None
            raise_storage(err, f"reading {key!r} from {self.bucket!r}", tenant_id)
        except BotoCoreError as err:
            raise_storage(err, f"reading {key!r} from {self.bucket!r}", tenant_id)

    def load(self, tenant_id: str, wrappers: Sequence[KeyWrapper]) -> Loaded | None:
        """The record opened with whichever of ``wrappers`` wrapped it, or None when absent.

        Raises:
            VerificationFailed: naming the record: wrapped by another master key, altered,
                another tenant's, or malformed.
        """
        found = self.read(tenant_id)
        if found is None:
            return None
        key = layout.key_record_key(tenant_id)
        try:
            record = parse(found[0], tenant_id)
            wrapper = pick_wrapper(record, wrappers)
            return Loaded(record, open_record(record, wrapper), wrapper, found[1])
        except VerificationFailed as err:
            raise VerificationFailed(f"{key}: {err}", tenant_id=tenant_id) from err

    def data_keys(self, wrapper: KeyWrapper, tenant_id: str, *, create: bool,
                  registry: KeyRegistry | None = None) -> tuple[DataKeys, list[str]]:
        """The tenant's data keys; with ``create``, a first key when the tenant has nothing.

        Returns the keys and warnings (a fresh start after everything of the tenant was lost).

        Raises:
            VerificationFailed: no record (reading), a record that does not open, one that
                the control database says was replaced, or a missing record while objects it
                sealed remain (a new key would orphan them).
        """
        key = layout.key_record_key(tenant_id)
        loaded = self.load(tenant_id, [wrapper])
        if loaded is not None:
            if registry is not None:
                registry.reconcile(tenant_id, loaded.keys.checks(), key)
            return loaded.keys, []
        if not create:
            raise VerificationFailed(f"{key}: no data key for tenant {tenant_id!r}, so no "
                                     "backup can be read (never backed up, or purged)",
                                     tenant_id=tenant_id)
        self._refuse_orphaning(key, tenant_id)
        notes = []
        lost = registry.mark(tenant_id, "lost_at") if registry is not None else []
        if lost:
            notes.append(
                f"{key}: the key record of tenant {tenant_id!r} was gone together with every "
                f"backup it sealed; data key(s) {[k.data_key_id for k in lost]} known to the "
                "control database are marked lost and a new data key was created")
        keys = DataKeys.single(new_data_key())
        body = seal(wrapper, tenant_id, keys, {FIRST_KEY_ID: ACTIVE}, {FIRST_KEY_ID: now_text()})
        if not self._put(key, body, tenant_id, IfNoneMatch="*"):  # another run created one
            return self.data_keys(wrapper, tenant_id, create=False, registry=registry)[0], notes
        if registry is not None:
            registry.reconcile(tenant_id, keys.checks(), key)
        return keys, notes

    def rotate(self, wrapper: KeyWrapper, tenant_id: str, registry: KeyRegistry,
               fence: Callable[[], None] | None = None) -> dict[str, Any]:
        """Add a new active data key; the others are retired (they still open old objects)."""
        key = layout.key_record_key(tenant_id)
        loaded = self._existing(tenant_id, [wrapper], registry)
        body, keys = rotated(loaded.record, loaded.keys, new_data_key(), wrapper)
        self._replace(key, body, tenant_id, loaded.etag, fence)
        registry.reconcile(tenant_id, keys.checks(), key)
        return {"tenant_id": tenant_id, "key_id": wrapper.key_id, "active": keys.active,
                "retired": [i for i in keys.ids if i != keys.active]}

    def rewrap(self, current: KeyWrapper, previous: KeyWrapper | None, tenant_id: str,
               registry: KeyRegistry, fence: Callable[[], None] | None = None
               ) -> dict[str, Any]:
        """Wrap every data key of the record under ``current`` (from ``previous``, or from
        ``current`` itself to upgrade a version-1 record); read back with ``current``."""
        key = layout.key_record_key(tenant_id)
        wrappers = [current] if previous is None else [current, previous]
        loaded = self._existing(tenant_id, wrappers, registry)
        result = {"tenant_id": tenant_id, "from": loaded.record.key_id, "to": current.key_id,
                  "data_keys": loaded.keys.ids}
        if loaded.wrapper is current and loaded.record.version == RECORD_VERSION:
            return {**result, "status": "current"}
        body = rewrapped(loaded.record, loaded.keys, current)
        self._replace(key, body, tenant_id, loaded.etag, fence)
        again = self.load(tenant_id, [current])
        if again is None or again.keys.checks() != loaded.keys.checks():
            raise VerificationFailed(f"{key}: the rewrapped record does not read back with "
                                     f"master key {current.key_id}", tenant_id=tenant_id)
        return {**result, "status": "rewrapped" if loaded.wrapper is not current else "upgraded"}

    def _existing(self, tenant_id: str, wrappers: Sequence[KeyWrapper], registry: KeyRegistry
                  ) -> Loaded:
        key = layout.key_record_key(tenant_id)
        loaded = self.load(tenant_id, wrappers)
        if loaded is None:
            raise BadInput(f"{key}: tenant {tenant_id!r} has no key record (never backed up, or "
                           "purged)", tenant_id=tenant_id)
        registry.reconcile(tenant_id, loaded.keys.checks(), key)
        return loaded

    def _replace(self, key: str, body: bytes, tenant_id: str, etag: str,
                 fence: Callable[[], None] | None) -> None:
        if fence is not None:
            fence()
        if not self._put(key, body, tenant_id, IfMatch=etag):
            raise VerificationFailed(
                f"{key}: the key record of tenant {tenant_id!r} changed or was deleted while it "
                "was being rewritten (a concurrent rotation, rewrap or purge); nothing was "
                "written: run again", tenant_id=tenant_id)

    def _put(self, key: str, body: bytes, tenant_id: str, **condition: str) -> bool:
        """A conditional PUT; False when the condition did not hold."""
        try:
            self.s3.put_object(Bucket=self.bucket, Key=key, Body=body,
                               ContentType="application/json", **condition)
        except ClientError as err:
            if error_code(err) in PRECONDITION_CODES or is_missing(err):
                return False
            raise_storage(err, f"writing {key!r} to {self.bucket!r}", tenant_id)
        except BotoCoreError as err:
            raise_storage(err, f"writing {key!r} to {self.bucket!r}", tenant_id)
        return True

    def _refuse_orphaning(self, key: str, tenant_id: str) -> None:
        """Refuse to create a data key while objects sealed under a lost one remain."""
        found = [kind for kind in ("snapshots", "blobs") if objects.has_objects(
            self.s3, self.bucket, f"{layout.tenant_prefix(tenant_id)}{kind}/", tenant_id)]
        if found:
            raise VerificationFailed(
                f"{key}: the data-key record of tenant {tenant_id!r} is missing, but the tenant "
                f"still has backup {' and '.join(found)} encrypted under it; a new key would "
                "make them unreadable, so none was created. Put the record back (an older "
                "object version or a copy); to start afresh instead, delete the tenant's "
                f"{layout.tenant_prefix(tenant_id)} first", tenant_id=tenant_id)
