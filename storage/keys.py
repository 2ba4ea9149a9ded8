"""Master keys: the local key-encryption key, and the parsing of ``TENANT_EXPORT_MASTER_KEY``.

A tenant's backups are encrypted under its random 32-byte data keys (DEKs); only the DEKs
wrapped by the master key (KEK) are ever stored, in the tenant's key record
(:mod:`storage.keyring_records`). The KEK is either 32 bytes held by this process (a *local*
key, for development and small installations) or a key in AWS KMS (:mod:`storage.kms`), which
never leaves KMS: in production no master key sits in an environment variable.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from kernel.errors import BadInput, ExportError, TerminalError, VerificationFailed
from kernel.settings import Settings
from storage.kms import KMS_PREFIXES, KmsKeyWrapper, key_spec, make_kms_client, region_of
from storage.wrapping import (
    ALG_LOCAL,
    KEY_BYTES,
    MASTER_KEY_VARIABLE,
    PREVIOUS_MASTER_KEY_VARIABLE,
    KeyWrapper,
    WrapContext,
    Wrapped,
)

__all__ = ["KEY_BYTES", "MASTER_KEY_VARIABLE", "KeyWrapper", "KmsKeyWrapper", "LocalKeyWrapper",
           "WrapContext", "Wrapped", "describe_master_keys", "generate_master_key",
           "new_data_key", "parse_master_key", "wrapper_from_settings"]

WRAP_NONCE_BYTES = 12
KEY_ID_LABEL = b"tenant-export/v1/key-id"


def new_data_key() -> bytes:
    """A fresh random 32-byte data key."""
    return os.urandom(KEY_BYTES)


def generate_master_key() -> str:
    """A fresh local master key as ``TENANT_EXPORT_MASTER_KEY`` expects it (standard base64)."""
    return base64.b64encode(os.urandom(KEY_BYTES)).decode("ascii")


class LocalKeyWrapper:
    """AES-256-GCM key wrapping under a master key held in this process."""

    def __init__(self, kek: bytes, *, variable: str = MASTER_KEY_VARIABLE) -> None:
        if len(kek) != KEY_BYTES:
            raise BadInput(f"a master key must be {KEY_BYTES} bytes, got {len(kek)}")
        self._aead = AESGCM(kek)
        digest = hmac.new(kek, KEY_ID_LABEL, hashlib.sha256).hexdigest()
        self._key_id = f"local:{digest[:16]}"
        self._variable = variable

    def __repr__(self) -> str:  # never the key itself
        return f"LocalKeyWrapper(key_id={self._key_id!r})"

    @property
    def key_id(self) -> str:
        return self._key_id

    @property
    def alg(self) -> str:
        return ALG_LOCAL

    def wrap(self, key: bytes, context: WrapContext) -> Wrapped:
        if len(key) != KEY_BYTES:
            raise TerminalError(f"a data key must be {KEY_BYTES} bytes, got {len(key)}")
        nonce = os.urandom(WRAP_NONCE_BYTES)
        return Wrapped(self._aead.encrypt(nonce, key, context.aad()), nonce)

    def unwrap(self, wrapped: Wrapped, context: WrapContext) -> bytes:
        if wrapped.nonce is None or len(wrapped.nonce) != WRAP_NONCE_BYTES:
            raise VerificationFailed(f"{context.describe()}: an {ALG_LOCAL} key needs a "
                                     f"{WRAP_NONCE_BYTES}-byte nonce", tenant_id=context.tenant_id)
        try:
            key = self._aead.decrypt(wrapped.nonce, wrapped.wrapped, context.aad())
        except InvalidTag:
            raise VerificationFailed(
                f"{context.describe()} fails authentication under master key {self._key_id} "
                "(another tenant's record, another key id, or a corrupted record)",
                tenant_id=context.tenant_id) from None
        if len(key) != KEY_BYTES:
            raise VerificationFailed(f"{context.describe()} unwraps to {len(key)} bytes, "
                                     f"not {KEY_BYTES}", tenant_id=context.tenant_id)
        return key

    def describe(self) -> str:
        return (f"local key {self._key_id} from {self._variable} (a key in an environment "
                "variable: use a KMS key in production)")


def parse_master_key(text: str, *, kms_client: Any | None = None,
                     variable: str = MASTER_KEY_VARIABLE) -> KeyWrapper:
    """The key wrapper for the value of ``TENANT_EXPORT_MASTER_KEY`` (or ``variable``).

    Args:
        text: a base64 (standard or URL-safe) 32-byte key; or a KMS key as ``kms:<key id, key
            ARN, alias name or alias ARN>`` or a plain ``arn:aws:kms:...`` ARN.
        kms_client: the boto3 KMS client for a KMS key (:func:`wrapper_from_settings` builds
            it from the settings); default: one from boto3's own configuration chain.
        variable: the setting's name, for messages.

    Raises:
        BadInput: empty, not base64, or not 32 bytes. The message never contains the value.
    """
    value = text.strip()
    if value.startswith(KMS_PREFIXES):
        return KmsKeyWrapper(value, kms_client, variable=variable)
    if not value:
        raise BadInput(f"{variable} is empty: expected a base64 32-byte key or a KMS key id")
    normalised = value.replace("-", "+").replace("_", "/")
    normalised += "=" * (-len(normalised) % 4)
    try:
        kek = base64.b64decode(normalised, validate=True)
    except (binascii.Error, ValueError):
        raise BadInput(
            f"{variable} is not valid base64: expected a base64 32-byte key "
            "or a KMS key id (kms:... / arn:aws:kms:...)"
        ) from None
    if len(kek) != KEY_BYTES:
        raise BadInput(f"{variable} decodes to {len(kek)} bytes: expected a {KEY_BYTES}-byte key")
    return LocalKeyWrapper(kek, variable=variable)


def wrapper_from_settings(settings: Settings, *, previous: bool = False) -> KeyWrapper | None:
    """The master key the settings name (``previous``: the one being retired, which only
    ``keys rewrap`` reads with), or None when unset.

    A KMS key gets a client built from the settings: region from the key's ARN, else the S3
    region; endpoint from a ``kms_endpoint_url`` setting when there is one, else boto3's own
    ``AWS_ENDPOINT_URL_KMS`` / ``AWS_ENDPOINT_URL``; credentials from boto3's chain (the S3
    credentials may belong to another store, such as MinIO).
    """
    if previous:
        secret = settings.previous_master_key
        value = secret.get_secret_value() if secret is not None else None
        variable = PREVIOUS_MASTER_KEY_VARIABLE
    else:
        value, variable = settings.master_key_value(), MASTER_KEY_VARIABLE
    if not value:
        return None
    client = None
    if value.strip().startswith(KMS_PREFIXES):
        spec = key_spec(value.strip())
        client = make_kms_client(region_of(spec) or settings.s3_region,
                                 settings.kms_endpoint_url)
    return parse_master_key(value, kms_client=client, variable=variable)


def describe_master_keys(settings: Settings) -> str:
    """One line for ``doctor``: the master key and, when set, the previous one. A KMS key is
    looked up, so a missing, disabled or unreachable key fails here (``ExportError``)."""
    current = wrapper_from_settings(settings)
    if current is None:
        raise ExportError(f"{MASTER_KEY_VARIABLE} is not set: backups cannot run (kms:<key id, "
                          "ARN or alias>; or `tenant-export keygen` for a local key)")
    text = current.describe()
    retiring = wrapper_from_settings(settings, previous=True)
    if retiring is not None:
        text += f"; previous: {retiring.describe()} (then run `tenant-export keys rewrap --all`)"
    return text
