"""Error hierarchy shared by every stage.

The CLI maps these to exit codes (``BadInput`` → 2, everything else → 1) and Prefect retries
ask :func:`is_transient`. Boto and database errors are translated at the boundary with
``raise ... from err`` so the message names what failed and for which tenant.
"""

from __future__ import annotations


class ExportError(Exception):
    """Base of every error this project raises on purpose."""

    def __init__(self, message: str, *, tenant_id: str | None = None) -> None:
        super().__init__(message)
        self.tenant_id = tenant_id

    def __str__(self) -> str:
        message = super().__str__()
        if self.tenant_id and f"'{self.tenant_id}'" not in message:
            return f"{message} (tenant '{self.tenant_id}')"
        return message


class TransientError(ExportError):
    """Worth retrying: a timeout, a throttled or unavailable service."""


class TerminalError(ExportError):
    """Retrying will not help."""


class BadInput(TerminalError):
    """The request itself is wrong (exit status 2); nothing has been written."""


class UnknownTenant(BadInput):
    """The tenant id is valid but no such tenant exists in the platform database."""


class SourceUnavailable(TerminalError):
    """The platform database cannot be reached or read."""


class ControlDbError(TerminalError):
    """The control database (ledger, audit) cannot be reached or written."""


class StorageError(TerminalError):
    """An S3 operation failed for a reason retrying will not fix (missing bucket, denied)."""


class TransientStorageError(TransientError):
    """An S3 operation failed for a reason that may go away (timeout, 5xx, throttling)."""


class VerificationFailed(TerminalError):
    """An object read back does not match what was written."""


class TenantBusy(TerminalError):
    """Another export or backup of the same tenant holds the per-tenant lock."""


def is_transient(exc: BaseException) -> bool:
    """True when retrying the failed step may succeed."""
    return isinstance(exc, TransientError)
