"""A tenant's data keys in memory, and the keys derived from them (``docs/backup-format.md``).

Data keys are numbered from 1; every version-2 object names the key it was sealed under in its
header, so a tenant can rotate (a new *active* key for new objects) while older objects stay
readable with the *retired* ones. Data key 1, the tenant's first, is kept for the tenant's
whole life: the blob-name key and the key record's MAC key are derived from it, so rotating
never renames a blob. Version-1 objects and records know one key, which is data key 1.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from kernel.errors import TerminalError, VerificationFailed

FIRST_KEY_ID = 1
MAX_KEY_ID = 2**32 - 1  # a uint32 in the object header; 0 is never a key id
DATA_KEY_BYTES = 32
NAME_KEY_INFO = b"tenant-export/v2/blob-name"
RECORD_MAC_INFO = b"tenant-export/v2/key-record"
CHECK_LABEL = b"tenant-export/v2/key-check"


def derive(key: bytes, label: bytes, tenant_id: str) -> bytes:
    """HKDF-SHA256 (no salt) of ``key`` for one purpose and tenant: ``label NUL tenant``."""
    if not tenant_id or "\0" in tenant_id:
        raise TerminalError(f"cannot derive a key for tenant {tenant_id!r}")
    info = label + b"\0" + tenant_id.encode("utf-8")
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(key)


def check_value(key: bytes) -> str:
    """A fingerprint of a data key (128 bits of ``HMAC-SHA256(key, label)``, hex): the control
    database remembers it, so a record replaced by one with other keys is recognised."""
    return hmac.new(key, CHECK_LABEL, hashlib.sha256).hexdigest()[:32]


@dataclass(frozen=True, repr=False)
class DataKeys:
    """The data keys of one tenant by id, and the active one (which seals new objects)."""

    keys: Mapping[int, bytes]
    active: int

    def __post_init__(self) -> None:
        if self.active not in self.keys:
            raise TerminalError(f"active data key {self.active} is not among {self.ids}")
        for key_id, key in self.keys.items():
            if not FIRST_KEY_ID <= key_id <= MAX_KEY_ID or len(key) != DATA_KEY_BYTES:
                raise TerminalError(f"data key {key_id}: an id 1..{MAX_KEY_ID} and "
                                    f"{DATA_KEY_BYTES} bytes are required")
        object.__setattr__(self, "keys", MappingProxyType(dict(self.keys)))

    @classmethod
    def single(cls, key: bytes, key_id: int = FIRST_KEY_ID) -> DataKeys:
        """One key, active (a version-1 tenant; tests)."""
        return cls({key_id: key}, key_id)

    @classmethod
    def of(cls, keys: DataKeys | bytes) -> DataKeys:
        """``keys`` itself, or a bare 32-byte key as data key 1."""
        return keys if isinstance(keys, DataKeys) else cls.single(bytes(keys))

    def __repr__(self) -> str:  # never the keys
        return f"DataKeys(ids={self.ids}, active={self.active})"

    @property
    def ids(self) -> list[int]:
        return sorted(self.keys)

    @property
    def active_key(self) -> bytes:
        return self.keys[self.active]

    def key(self, key_id: int) -> bytes:
        """The key an object's header names; ``VerificationFailed`` when the record lacks it."""
        try:
            return self.keys[key_id]
        except KeyError:
            raise VerificationFailed(
                f"sealed under data key {key_id}, which the tenant's key record does not hold "
                f"(it holds {self.ids}): the record was replaced or rolled back") from None

    def name_key(self, tenant_id: str) -> bytes:
        """The key that names blobs: derived from data key 1, so rotation keeps every name."""
        return derive(self.key(FIRST_KEY_ID), NAME_KEY_INFO, tenant_id)

    def record_mac_key(self, tenant_id: str) -> bytes:
        """The key of the key record's MAC (derived from data key 1, itself wrapped by the KEK:
        only a holder of the master key can write a record that verifies)."""
        return derive(self.key(FIRST_KEY_ID), RECORD_MAC_INFO, tenant_id)

    def blob_name(self, tenant_id: str, plaintext_sha256: str) -> str:
        """A blob's object name: ``hex(HMAC-SHA256(name key, SHA-256(plaintext)))``. Without the
        name key, a listing cannot be matched against the hash of a known file."""
        digest = bytes.fromhex(plaintext_sha256)
        if len(digest) != hashlib.sha256().digest_size:
            raise TerminalError(f"not a SHA-256: {plaintext_sha256!r}")
        return hmac.new(self.name_key(tenant_id), digest, hashlib.sha256).hexdigest()

    def names(self, tenant_id: str, name: str, plaintext_sha256: str) -> bool:
        """True when ``name`` is this content's blob name: the keyed name, or (blobs written
        by format version 1) the plaintext SHA-256 itself."""
        return hmac.compare_digest(name, self.blob_name(tenant_id, plaintext_sha256)) or (
            hmac.compare_digest(name, plaintext_sha256))

    def checks(self) -> dict[int, str]:
        """Check values by key id (for the control database)."""
        return {key_id: check_value(key) for key_id, key in self.keys.items()}
