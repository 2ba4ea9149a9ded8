"""The S3 client and the translation of boto errors into the project's error hierarchy.

Endpoint, credentials and region come from boto3's standard variables (``AWS_ENDPOINT_URL_S3``,
``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``, ...), so real S3 and an emulator differ only by
environment.
"""

from __future__ import annotations

import os
from typing import Any, NoReturn, cast

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, EndpointConnectionError

from tenant_export.errors import StorageError, TransientStorageError

_TRANSIENT_CODES = {
    "500", "502", "503", "504", "InternalError", "ServiceUnavailable", "SlowDown",
    "RequestTimeout", "RequestTimeTooSkewed", "Throttling", "ThrottlingException",
}


def endpoint_url() -> str | None:
    """The S3 endpoint boto3 will use, when one is configured."""
    return os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")


def make_client() -> Any:
    """An S3 client that signs with SigV4 (required for links) and retries throttling."""
    style = "path" if endpoint_url() else "auto"
    config = Config(
        signature_version="s3v4",
        retries={"max_attempts": 5, "mode": "standard"},
        s3=cast(Any, {"addressing_style": style}),
        connect_timeout=10,
        read_timeout=60,
    )
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
    return boto3.session.Session().client("s3", region_name=region, config=config)


def error_code(err: ClientError) -> str:
    """The S3 error code of a ClientError (``NoSuchKey``, ``404``, ...)."""
    return str(err.response.get("Error", {}).get("Code", ""))


def raise_storage(err: Exception, action: str, tenant_id: str | None = None) -> NoReturn:
    """Re-raise a boto error as ``TransientStorageError`` or ``StorageError``."""
    if isinstance(err, ClientError):
        code = error_code(err)
        if code in ("NoSuchBucket",):
            raise StorageError(f"{action}: the bucket does not exist", tenant_id=tenant_id) from err
        if code in _TRANSIENT_CODES:
            raise TransientStorageError(f"{action}: {code}", tenant_id=tenant_id) from err
        message = err.response.get("Error", {}).get("Message") or code
        raise StorageError(f"{action}: {code} {message}".strip(), tenant_id=tenant_id) from err
    if isinstance(err, EndpointConnectionError):
        raise StorageError(f"{action}: cannot reach S3 ({err})", tenant_id=tenant_id) from err
    if isinstance(err, BotoCoreError | OSError):
        raise TransientStorageError(f"{action}: {err}", tenant_id=tenant_id) from err
    if isinstance(err, ValueError):  # smart_open's wrapper around a refused upload
        cause = err.__cause__ or err.__context__
        if isinstance(cause, ClientError | BotoCoreError):
            raise_storage(cause, action, tenant_id)
        raise StorageError(f"{action}: {err}", tenant_id=tenant_id) from err
    raise err


def require_bucket(client: Any, bucket: str, role: str, tenant_id: str | None = None) -> None:
    """Fail early, naming the bucket, when it is missing or unreachable."""
    try:
        client.head_bucket(Bucket=bucket)
    except ClientError as err:
        if error_code(err) in ("404", "NoSuchBucket", "NotFound"):
            raise StorageError(
                f"{role} bucket {bucket!r} does not exist", tenant_id=tenant_id
            ) from err
        raise_storage(err, f"checking {role} bucket {bucket!r}", tenant_id)
    except BotoCoreError as err:
        raise_storage(err, f"checking {role} bucket {bucket!r}", tenant_id)
