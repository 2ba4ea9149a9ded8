"""The one classification of S3 errors: missing, transient (worth a retry) or terminal.

Every stage that talks to S3 translates boto errors here, so a retry policy asking
:func:`kernel.errors.is_transient` sees the same answer wherever the error came from.
"""

from __future__ import annotations

from typing import NoReturn

from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionClosedError,
    EndpointConnectionError,
    NoCredentialsError,
    ReadTimeoutError,
)

from kernel.errors import StorageError, TransientStorageError

MISSING_CODES = frozenset({"404", "NoSuchKey", "NotFound"})
MISSING_BUCKET_CODES = frozenset({"NoSuchBucket"})
PRECONDITION_CODES = frozenset({"PreconditionFailed", "412", "ConditionalRequestConflict"})
TRANSIENT_CODES = frozenset({
    "500", "502", "503", "504", "InternalError", "ServiceUnavailable", "SlowDown",
    "RequestTimeout", "RequestTimeTooSkewed", "Throttling", "ThrottlingException",
    "RequestLimitExceeded", "OperationAborted",
})


def error_code(err: ClientError) -> str:
    """The S3 error code of a ClientError (``NoSuchKey``, ``404``, ...)."""
    return str(err.response.get("Error", {}).get("Code", ""))


def is_missing(err: BaseException) -> bool:
    """True when the error says the object does not exist."""
    return isinstance(err, ClientError) and error_code(err) in MISSING_CODES


def is_transient_boto(err: BaseException) -> bool:
    """True for errors that may go away: throttling, 5xx, timeouts, a connection that failed."""
    if isinstance(err, ClientError):
        return error_code(err) in TRANSIENT_CODES
    if isinstance(err, NoCredentialsError):
        return False
    return isinstance(err, EndpointConnectionError | ConnectionClosedError | ReadTimeoutError
                      | BotoCoreError | OSError)


def raise_storage(err: BaseException, action: str, tenant_id: str | None = None) -> NoReturn:
    """Re-raise a boto (or smart_open) error as ``TransientStorageError`` or ``StorageError``."""
    if isinstance(err, ClientError):
        code = error_code(err)
        if code in MISSING_BUCKET_CODES:
            raise StorageError(f"{action}: the bucket does not exist", tenant_id=tenant_id) from err
        if code in TRANSIENT_CODES:
            raise TransientStorageError(f"{action}: {code}", tenant_id=tenant_id) from err
        message = err.response.get("Error", {}).get("Message") or code
        raise StorageError(f"{action}: {code} {message}".strip(), tenant_id=tenant_id) from err
    if isinstance(err, NoCredentialsError):
        raise StorageError(f"{action}: no S3 credentials configured", tenant_id=tenant_id) from err
    if isinstance(err, EndpointConnectionError):
        raise TransientStorageError(f"{action}: cannot reach S3 ({err})",
                                    tenant_id=tenant_id) from err
    if isinstance(err, BotoCoreError | OSError):
        raise TransientStorageError(f"{action}: {err}", tenant_id=tenant_id) from err
    if isinstance(err, ValueError):  # smart_open's wrapper around a refused upload
        cause = err.__cause__ or err.__context__
        if isinstance(cause, ClientError | BotoCoreError):
            raise_storage(cause, action, tenant_id)
        raise StorageError(f"{action}: {err}", tenant_id=tenant_id) from err
    raise err
