"""A key-encryption key in AWS KMS: data keys are wrapped by KMS ``Encrypt`` and unwrapped by
``Decrypt``, each under an encryption context naming the purpose, the tenant and the data key
id, so the key material never leaves KMS and every unwrap is authorised and logged there.

``Encrypt``/``Decrypt`` rather than ``GenerateDataKey``: data keys are made locally (32 bytes
from the OS), so the same code rewraps a record from a local key to KMS, from KMS to another
KMS key, or back. The client is built from the settings (``storage.keys.wrapper_from_settings``)
with boto3's endpoint rules (``AWS_ENDPOINT_URL_KMS``, ``AWS_ENDPOINT_URL``) and credential chain.
"""

from __future__ import annotations

from typing import Any, NoReturn

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

from kernel.errors import TerminalError, TransientError, VerificationFailed
from storage.wrapping import ALG_KMS, KEY_BYTES, MASTER_KEY_VARIABLE, WrapContext, Wrapped

KMS_PREFIXES = ("kms:", "arn:aws:kms:")
TRANSIENT_CODES = frozenset({
    "ThrottlingException", "KMSInternalException", "DependencyTimeoutException",
    "KeyUnavailableException", "LimitExceededException", "InternalFailure",
    "ServiceUnavailable", "RequestTimeout", "500", "502", "503", "504",
})
FORGED_CODES = frozenset({"InvalidCiphertextException", "IncorrectKeyException"})


def key_spec(value: str) -> str:
    """The ``KeyId`` KMS is given: ``kms:<id|arn|alias>`` without ``kms:``, or the ARN."""
    return value.removeprefix("kms:").strip()


def region_of(spec: str) -> str | None:
    """The region an ARN names (``arn:aws:kms:<region>:...``); None for ids and alias names."""
    parts = spec.split(":")
    return parts[3] or None if spec.startswith("arn:") and len(parts) > 5 else None


def make_kms_client(region: str | None, endpoint_url: str | None = None) -> Any:
    """A KMS client; ``endpoint_url`` None lets boto3 apply ``AWS_ENDPOINT_URL_KMS`` /
    ``AWS_ENDPOINT_URL`` and its configuration files, as for any AWS service."""
    config = Config(retries={"max_attempts": 5, "mode": "standard"}, connect_timeout=10,
                    read_timeout=30)
    return boto3.session.Session().client("kms", region_name=region or "us-east-1",
                                          endpoint_url=endpoint_url, config=config)


class KmsKeyWrapper:
    """Wraps data keys with a symmetric KMS key (``SYMMETRIC_DEFAULT``, ``ENCRYPT_DECRYPT``)."""

    def __init__(self, value: str, client: Any | None = None, *,
                 variable: str = MASTER_KEY_VARIABLE) -> None:
        self._spec = key_spec(value)
        if not self._spec:
            raise TerminalError(f"{variable} names no KMS key (kms:<key id, ARN or alias>)")
        self._client = client
        self._variable = variable
        self._arn: str | None = self._spec if self._spec.startswith("arn:aws") and (
            ":key/" in self._spec) else None

    def __repr__(self) -> str:
        return f"KmsKeyWrapper(key={self._spec!r})"

    @property
    def client(self) -> Any:
        """The KMS client (built lazily from boto3's configuration when none was given)."""
        if self._client is None:
            self._client = make_kms_client(region_of(self._spec))
        return self._client

    @property
    def key_id(self) -> str:
        """The key's ARN (an alias or key id is resolved once with ``DescribeKey``): records
        name the key itself, so re-pointing an alias is seen as another master key."""
        if self._arn is None:
            self._arn = str(self._describe()["Arn"])
        return self._arn

    @property
    def alg(self) -> str:
        return ALG_KMS

    def wrap(self, key: bytes, context: WrapContext) -> Wrapped:
        if len(key) != KEY_BYTES:
            raise TerminalError(f"a data key must be {KEY_BYTES} bytes, got {len(key)}")
        try:
            response = self.client.encrypt(KeyId=self.key_id, Plaintext=key,
                                           EncryptionContext=context.encryption_context())
        except (ClientError, BotoCoreError) as err:
            _raise(err, f"wrapping {context.describe()} with KMS key {self.key_id}", context)
        return Wrapped(bytes(response["CiphertextBlob"]))

    def unwrap(self, wrapped: Wrapped, context: WrapContext) -> bytes:
        try:
            response = self.client.decrypt(CiphertextBlob=wrapped.wrapped, KeyId=self.key_id,
                                           EncryptionContext=context.encryption_context())
        except (ClientError, BotoCoreError) as err:
            _raise(err, f"unwrapping {context.describe()} with KMS key {self.key_id}", context)
        key = bytes(response["Plaintext"])
        if len(key) != KEY_BYTES:
            raise VerificationFailed(f"{context.describe()} unwraps to {len(key)} bytes, "
                                     f"not {KEY_BYTES}", tenant_id=context.tenant_id)
        return key

    def describe(self) -> str:
        meta = self._describe()
        state, spec = meta.get("KeyState"), meta.get("KeySpec", "SYMMETRIC_DEFAULT")
        usage = meta.get("KeyUsage", "ENCRYPT_DECRYPT")
        if state != "Enabled" or spec != "SYMMETRIC_DEFAULT" or usage != "ENCRYPT_DECRYPT":
            raise TerminalError(f"KMS key {meta.get('Arn')} from {self._variable} is {state}, "
                                f"{spec}, {usage}: a master key must be an enabled "
                                "SYMMETRIC_DEFAULT key for ENCRYPT_DECRYPT")
        return f"KMS key {meta.get('Arn')} ({state})"

    def _describe(self) -> dict[str, Any]:
        try:
            return dict(self.client.describe_key(KeyId=self._spec)["KeyMetadata"])
        except (ClientError, BotoCoreError) as err:
            _raise(err, f"looking up KMS key {self._spec!r} ({self._variable})", None)


def _raise(err: BaseException, action: str, context: WrapContext | None) -> NoReturn:
    """A KMS failure as our error classes: forged or misbound ciphertext is a verification
    failure, throttling and outages are transient, the rest (denied, disabled) terminal."""
    tenant = context.tenant_id if context else None
    if isinstance(err, ClientError):
        code = str(err.response.get("Error", {}).get("Code", ""))
        message = err.response.get("Error", {}).get("Message") or ""
        if code in FORGED_CODES:
            raise VerificationFailed(
                f"{action}: KMS refused it ({code}): the wrapped key was altered, belongs to "
                "another tenant or key id, or was wrapped by another KMS key",
                tenant_id=tenant) from err
        if code in TRANSIENT_CODES:
            raise TransientError(f"{action}: {code}", tenant_id=tenant) from err
        raise TerminalError(f"{action}: {code} {message}".strip(), tenant_id=tenant) from err
    if isinstance(err, NoCredentialsError):
        raise TerminalError(f"{action}: no AWS credentials for KMS", tenant_id=tenant) from err
    raise TransientError(f"{action}: {err}", tenant_id=tenant) from err
