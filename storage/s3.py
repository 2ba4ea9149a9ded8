"""The S3 client, built from the settings the edge resolved.

Endpoint, region and explicit credentials come from :class:`kernel.settings.Settings` (which
reads the standard ``AWS_ENDPOINT_URL_S3``, ``AWS_REGION``, ... at the edge); without explicit
credentials boto3's own chain applies (variables, profile, instance role), so real S3 and an
emulator differ only by configuration.

Every client gets a session of its own (credentials resolved as today, never cached across
clients) on the process's one botocore data loader: the S3 model and the endpoint files are
decoded once per process instead of once per client, about 11 MiB of Python objects and 60 ms
of CPU each time (a backup made two clients, a nightly run two per tenant). Its response parsers
read S3's two timestamp forms without dateutil's general parser (a tenth of a GET's CPU).
"""

from __future__ import annotations

import re
import threading
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, cast

import boto3
import botocore.session
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError
from botocore.utils import parse_timestamp

from kernel.errors import StorageError
from kernel.s3errors import error_code, raise_storage
from kernel.settings import Settings


def make_client(settings: Settings, *, quick: bool = False) -> Any:
    """An S3 client that signs with SigV4 (required for links) and retries throttling.

    ``quick`` gives up after one attempt and a few seconds: for checks that report a
    misconfiguration, where waiting out retries only delays the answer.
    """
    style = "path" if settings.s3_endpoint_url else "auto"
    config = Config(
        signature_version="s3v4",
        retries={"max_attempts": 1 if quick else 5, "mode": "standard"},
        s3=cast(Any, {"addressing_style": style}),
        connect_timeout=3 if quick else 10,
        read_timeout=10 if quick else 60,
        max_pool_connections=max(32, settings.fetch_concurrency + 8),  # GETs ahead + uploads
    )
    secret = settings.s3_secret_value()
    explicit = bool(settings.s3_access_key_id and secret)
    return _session().client(
        "s3", region_name=settings.s3_region or "us-east-1", endpoint_url=settings.s3_endpoint_url,
        config=config, aws_access_key_id=settings.s3_access_key_id if explicit else None,
        aws_secret_access_key=secret if explicit else None)


_loader: Any = None
_loader_lock = threading.Lock()


def _session() -> boto3.session.Session:
    """A new boto3 session on the process's shared data loader (see the module's docstring)."""
    global _loader  # noqa: PLW0603 - one loader per process is the point
    core = botocore.session.get_session()
    with _loader_lock:
        if _loader is None:
            _loader = core.get_component("data_loader")
        core.register_component("data_loader", _loader)
        core.get_component("response_parser_factory").set_parser_defaults(
            timestamp_parser=s3_timestamp)
        session = boto3.session.Session(botocore_session=core)
        paths = _loader.search_paths  # boto3 appends its own data path once per session
        paths[:] = list(dict.fromkeys(paths))
    return session


_HTTP_DATE = re.compile(r"[A-Z][a-z]{2}, \d\d [A-Z][a-z]{2} \d{4} \d\d:\d\d:\d\d GMT")
_ISO_UTC = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,6})?Z")


def s3_timestamp(value: Any) -> datetime:
    """The instant botocore's parser returns, in UTC, for exactly S3's two forms: HTTP dates
    with a four-digit year (``Last-Modified``) and ISO 8601 UTC times (listings), without
    dateutil's general parser; anything else (another zone, a two-digit year, a week date...)
    goes to botocore's, which decides as before."""
    if isinstance(value, str):
        try:
            if _HTTP_DATE.fullmatch(value):
                return parsedate_to_datetime(value).replace(tzinfo=UTC)
            if _ISO_UTC.fullmatch(value):
                return datetime.fromisoformat(value[:-1]).replace(tzinfo=UTC)
        except (TypeError, ValueError):
            pass
    found: datetime = parse_timestamp(value)
    return found


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
