"""What every key-encryption key (local or in KMS) must do: wrap and unwrap one data key, bound
to the tenant, the purpose and the data key's id (``docs/backup-format.md``, section 3).

The binding is what stops a wrapped key from being moved: AES-GCM's associated data for a
local master key, KMS's encryption context for a KMS key; both are built from one
:class:`WrapContext`, so the two kinds bind exactly the same facts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from kernel.errors import BadInput

MASTER_KEY_VARIABLE = "TENANT_EXPORT_MASTER_KEY"
PREVIOUS_MASTER_KEY_VARIABLE = "TENANT_EXPORT_PREVIOUS_MASTER_KEY"
KEY_BYTES = 32
PURPOSE_V1 = "tenant-export/v1/data-key"
PURPOSE = "tenant-export/v2/data-key"
ALG_LOCAL = "A256GCM"
ALG_KMS = "KMS"


@dataclass(frozen=True)
class WrapContext:
    """What one wrapped data key is bound to. ``data_key_id`` None: a version-1 record's key."""

    tenant_id: str
    data_key_id: int | None

    def __post_init__(self) -> None:
        if not self.tenant_id or "\0" in self.tenant_id:
            raise BadInput(f"invalid tenant id {self.tenant_id!r} for a data key")

    @property
    def purpose(self) -> str:
        return PURPOSE_V1 if self.data_key_id is None else PURPOSE

    def aad(self) -> bytes:
        """AES-GCM associated data: ``purpose NUL tenant [NUL id]`` (UTF-8, id in decimal)."""
        parts = [self.purpose, self.tenant_id]
        if self.data_key_id is not None:
            parts.append(str(self.data_key_id))
        return "\0".join(parts).encode("utf-8")

    def encryption_context(self) -> dict[str, str]:
        """The KMS encryption context: the same facts as :meth:`aad`, as KMS wants them."""
        context = {"purpose": self.purpose, "tenant_id": self.tenant_id}
        if self.data_key_id is not None:
            context["data_key_id"] = str(self.data_key_id)
        return context

    def describe(self) -> str:
        """For messages: which key of which tenant."""
        which = "data key" if self.data_key_id is None else f"data key {self.data_key_id}"
        return f"{which} of tenant {self.tenant_id!r}"


@dataclass(frozen=True, repr=False)
class Wrapped:
    """One data key as stored: the ciphertext, and the GCM nonce for a local master key."""

    wrapped: bytes
    nonce: bytes | None = None

    def __repr__(self) -> str:
        return f"Wrapped({len(self.wrapped)} bytes)"


@runtime_checkable
class KeyWrapper(Protocol):
    """A key-encryption key: one implementation per kind (local, KMS)."""

    @property
    def key_id(self) -> str:
        """Names the master key without revealing it; recorded in every key record."""
        ...

    @property
    def alg(self) -> str:
        """``A256GCM`` (local) or ``KMS``: the record's ``alg`` field."""
        ...

    def wrap(self, key: bytes, context: WrapContext) -> Wrapped:
        """Encrypt one 32-byte data key, bound to ``context``."""
        ...

    def unwrap(self, wrapped: Wrapped, context: WrapContext) -> bytes:
        """The data key; ``VerificationFailed`` when it is not ``context``'s or was altered."""
        ...

    def describe(self) -> str:
        """One line for ``doctor``: which key, and that it is usable (may ask KMS)."""
        ...
