"""Envelope keys: per-tenant data keys wrapped by the master key-encryption key.

A tenant's backups are encrypted under its random 32-byte data key (DEK); only the DEK wrapped
by the master key (KEK, ``TENANT_EXPORT_MASTER_KEY``) is ever stored, as a small JSON record.
Deleting every copy of that record crypto-shreds the tenant's backups (``docs/backup-format.md``).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
from datetime import UTC, datetime
from typing import Any, Protocol, runtime_checkable

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from kernel.errors import BadInput, TerminalError, VerificationFailed

MASTER_KEY_VARIABLE = "TENANT_EXPORT_MASTER_KEY"
KEY_BYTES = 32
WRAP_NONCE_BYTES = 12
RECORD_VERSION = 1
WRAP_ALG = "A256GCM"
WRAP_PURPOSE = b"tenant-export/v1/data-key"
KEY_ID_LABEL = b"tenant-export/v1/key-id"
KMS_PREFIXES = ("kms:", "arn:aws:kms:")


@runtime_checkable
class KeyWrapper(Protocol):
    """Wraps and unwraps tenant data keys; one implementation per kind of master key."""

    @property
    def key_id(self) -> str:
        """Names the master key without revealing it (recorded in every wrapped-key record)."""
        ...

    def wrap(self, dek: bytes, tenant_id: str) -> bytes:
        """Return the wrapped-key record (JSON bytes) of ``dek`` for ``tenant_id``."""
        ...

    def unwrap(self, blob: bytes, tenant_id: str) -> bytes:
        """Return the data key of a record; ``VerificationFailed`` if it is not ``tenant_id``'s."""
        ...


def new_data_key() -> bytes:
    """A fresh random 32-byte data key for one tenant."""
    return os.urandom(KEY_BYTES)


def generate_master_key() -> str:
    """A fresh master key as ``TENANT_EXPORT_MASTER_KEY`` expects it (standard base64)."""
    return base64.b64encode(os.urandom(KEY_BYTES)).decode("ascii")


def wrap_aad(tenant_id: str) -> bytes:
    """Associated data of a wrapped key: purpose, NUL, tenant id (moves between tenants fail)."""
    if not tenant_id or "\0" in tenant_id:
        raise BadInput(f"invalid tenant id {tenant_id!r} for a data key")
    return WRAP_PURPOSE + b"\0" + tenant_id.encode("utf-8")


class LocalKeyWrapper:
    """AES-256-GCM key wrapping under a master key held in this process."""

    def __init__(self, kek: bytes) -> None:
        if len(kek) != KEY_BYTES:
            raise BadInput(f"a master key must be {KEY_BYTES} bytes, got {len(kek)}")
        self._aead = AESGCM(kek)
        digest = hmac.new(kek, KEY_ID_LABEL, hashlib.sha256).hexdigest()
        self._key_id = f"local:{digest[:16]}"

    def __repr__(self) -> str:  # never the key itself
        return f"LocalKeyWrapper(key_id={self._key_id!r})"

    @property
    def key_id(self) -> str:
        return self._key_id

    def wrap(self, dek: bytes, tenant_id: str) -> bytes:
        if len(dek) != KEY_BYTES:
            raise TerminalError(f"a data key must be {KEY_BYTES} bytes, got {len(dek)}")
        nonce = os.urandom(WRAP_NONCE_BYTES)
        wrapped = self._aead.encrypt(nonce, dek, wrap_aad(tenant_id))
        record = {
            "version": RECORD_VERSION,
            "tenant_id": tenant_id,
            "key_id": self._key_id,
            "alg": WRAP_ALG,
            "nonce": _b64(nonce),
            "wrapped": _b64(wrapped),
            "created_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        }
        return json.dumps(record, indent=2).encode("utf-8") + b"\n"

    def unwrap(self, blob: bytes, tenant_id: str) -> bytes:
        record = parse_record(blob)
        if record["tenant_id"] != tenant_id:
            raise VerificationFailed(
                f"wrapped data key belongs to tenant {record['tenant_id']!r}, not {tenant_id!r}"
            )
        if record["key_id"] != self._key_id:
            raise VerificationFailed(
                f"data key was wrapped by master key {record['key_id']!r}, "
                f"but {MASTER_KEY_VARIABLE} is {self._key_id!r}"
            )
        try:
            dek = self._aead.decrypt(record["nonce"], record["wrapped"], wrap_aad(tenant_id))
        except InvalidTag:
            raise VerificationFailed(
                "wrapped data key fails authentication (wrong master key, another tenant's "
                "record, or a corrupted record)",
                tenant_id=tenant_id,
            ) from None
        if len(dek) != KEY_BYTES:
            raise VerificationFailed(f"unwrapped data key has {len(dek)} bytes, not {KEY_BYTES}")
        return dek


class KmsKeyWrapper:
    """Placeholder for a KMS master key (``kms:...`` or ``arn:aws:kms:...``).

    The place to add it: ``wrap`` would call KMS ``Encrypt`` with ``KeyId=key_id`` and
    ``EncryptionContext={"purpose": "tenant-export/v1/data-key", "tenant_id": tenant_id}`` and
    store the returned ciphertext blob in the record's ``wrapped`` field (``alg`` ``"KMS"``, no
    nonce); ``unwrap`` would call ``Decrypt`` with the same context. Until then both refuse.
    """

    def __init__(self, key_id: str) -> None:
        self._key_id = key_id

    def __repr__(self) -> str:
        return f"KmsKeyWrapper(key_id={self._key_id!r})"

    @property
    def key_id(self) -> str:
        return self._key_id

    def wrap(self, dek: bytes, tenant_id: str) -> bytes:  # noqa: ARG002 - Protocol signature
        raise TerminalError(self._unsupported(), tenant_id=tenant_id)

    def unwrap(self, blob: bytes, tenant_id: str) -> bytes:  # noqa: ARG002 - Protocol signature
        raise TerminalError(self._unsupported(), tenant_id=tenant_id)

    def _unsupported(self) -> str:
        return (
            f"KMS key ids are not supported yet ({MASTER_KEY_VARIABLE}={self._key_id!r}); "
            "use a base64 32-byte key"
        )


def parse_master_key(text: str) -> KeyWrapper:
    """The key wrapper for the value of ``TENANT_EXPORT_MASTER_KEY``.

    Args:
        text: a base64 (standard or URL-safe) 32-byte key, or a KMS key id.

    Raises:
        BadInput: empty, not base64, or not 32 bytes. The message never contains the value.
    """
    value = text.strip()
    if value.startswith(KMS_PREFIXES):
        return KmsKeyWrapper(value)
    if not value:
        raise BadInput(f"{MASTER_KEY_VARIABLE} is empty: expected a base64 32-byte key")
    normalised = value.replace("-", "+").replace("_", "/")
    normalised += "=" * (-len(normalised) % 4)
    try:
        kek = base64.b64decode(normalised, validate=True)
    except (binascii.Error, ValueError):
        raise BadInput(
            f"{MASTER_KEY_VARIABLE} is not valid base64: expected a base64 32-byte key "
            "or a KMS key id (kms:... / arn:aws:kms:...)"
        ) from None
    if len(kek) != KEY_BYTES:
        raise BadInput(
            f"{MASTER_KEY_VARIABLE} decodes to {len(kek)} bytes: expected a {KEY_BYTES}-byte key"
        )
    return LocalKeyWrapper(kek)


def parse_record(blob: bytes) -> dict[str, Any]:
    """Parse and check a wrapped-key record; ``nonce`` and ``wrapped`` come back as bytes."""
    try:
        record = json.loads(blob)
        fields = {name: record[name] for name in ("version", "tenant_id", "key_id", "alg")}
        nonce = base64.b64decode(record["nonce"], validate=True)
        wrapped = base64.b64decode(record["wrapped"], validate=True)
    except (ValueError, TypeError, KeyError, binascii.Error) as err:
        raise VerificationFailed(f"wrapped-key record is malformed ({err})") from None
    if fields["version"] != RECORD_VERSION or fields["alg"] != WRAP_ALG:
        raise VerificationFailed(
            f"wrapped-key record version {fields['version']!r} / alg {fields['alg']!r} "
            f"is not supported (expected {RECORD_VERSION} / {WRAP_ALG})"
        )
    if len(nonce) != WRAP_NONCE_BYTES:
        raise VerificationFailed(f"wrapped-key record nonce has {len(nonce)} bytes, not 12")
    return {**fields, "nonce": nonce, "wrapped": wrapped, "created_at": record.get("created_at")}


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")
