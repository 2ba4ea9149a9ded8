"""The fields of the flows' Prefect UI forms, in an operator's words (issue 13).

Prefect builds a deployment's form (its parameter schema) from the flow's signature. It sets
each field's title to the parameter's name and its description from the docstring, over what
an ``Annotated[..., Field(title=..., description=...)]`` says, but keeps the field's
``json_schema_extra``, constraints and validators: :func:`form_field` carries the title and the
description there too, so they reach the form.

An optional value (``str | None``) renders as a "Property is type None" toggle. The types below
show a plain field instead whose empty value, the form's default, means "none"; Python callers
still pass ``None``. A value the flow cannot run with is refused by the form itself (a pattern
in the schema, which the server checks too: every deployment enforces its parameter schema) and
again when the run validates its parameters, with the kernel's reason.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator, Field, WithJsonSchema

from flows.export_form import LINK_TTL_PATTERN, TENANT_ID_PATTERN
from kernel.dburl import TARGET_NAME_PATTERN
from kernel.errors import BadInput
from kernel.ids import validate_export_id, validate_snapshot_id, validate_tenant_id
from kernel.timeparse import parse_instant, parse_link_ttl, shown

# kernel.ids' rules as JSON-schema patterns ([0-9], not \d: a JSON-schema \d is ASCII only).
SNAPSHOT_ID_PATTERN = r"^[0-9]{8}T[0-9]{6}([0-9]{6})?Z-[0-9a-f]{8,32}$"
EXPORT_ID_PATTERN = r"^[0-9]{8}T[0-9]{6}Z-[0-9a-f]{4,32}$"
# An ISO 8601 date-time with an offset (kernel.timeparse.parse_instant refuses naive times).
INSTANT_PATTERN = (r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}(:[0-9]{2}(\.[0-9]{1,6})?)?"
                   r"(Z|[+-][0-9]{2}:[0-9]{2})$")
# An S3 bucket name: 3-63 lowercase letters, digits, '.' or '-', a letter or digit at each end.
BUCKET_PATTERN = r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$"
_BUCKET_RE = re.compile(BUCKET_PATTERN)


def or_empty(pattern: str) -> str:
    """``pattern`` (anchored with ``^...$``) that also matches the empty text."""
    return f"^(?:{pattern.removeprefix('^').removesuffix('$')})?$"


def form_field(title: str, description: str, **schema: Any) -> Any:
    """A ``Field`` whose title and description reach Prefect's parameter schema; ``schema``
    adds JSON-schema keywords (a ``default`` the form shows where Python's is ``None``)."""
    return Field(title=title, description=description,
                 json_schema_extra={"title": title, "description": description, **schema})


def _refused(check: Any, value: Any) -> Any:
    """``check(value)``, its ``BadInput`` as the ``ValueError`` pydantic reports with the
    field."""
    try:
        return check(value)
    except BadInput as err:
        raise ValueError(str(err)) from err


def _blank_is_none(value: Any) -> Any:
    """The form's empty value (``""``, ``[]``) as the ``None`` the flow understands."""
    return None if value in ("", []) else value


def _tenant(value: str) -> str:
    return str(_refused(validate_tenant_id, value))


def _snapshot(value: str | None) -> str | None:
    return None if value is None else str(_refused(validate_snapshot_id, value))


def _export(value: str | None) -> str | None:
    return None if value is None else str(_refused(validate_export_id, value))


def _bucket(value: Any) -> Any:
    if value is not None and not _BUCKET_RE.fullmatch(value):
        raise ValueError(f"invalid bucket name {shown(value)}: S3 bucket names are 3-63 "
                         "lowercase letters, digits, '.' or '-', a letter or digit at each end")
    return value


def _link_ttl(value: str) -> str:
    _refused(parse_link_ttl, value)
    return value.strip()


def _instant(value: Any) -> Any:
    """A text from the form as an aware ``datetime`` (empty: ``None``); a ``datetime`` from a
    program unchanged."""
    if value == "":
        return None
    if isinstance(value, str):
        return _refused(lambda text: parse_instant(text, "replay time"), value)
    return value


TenantId = Annotated[str, AfterValidator(_tenant),
                     Field(json_schema_extra={"pattern": TENANT_ID_PATTERN, "maxLength": 128})]
"""A tenant id, refused by the form and by the run unless kernel.ids accepts it."""

TenantIds = Annotated[
    list[TenantId] | None, BeforeValidator(_blank_is_none),
    WithJsonSchema({"type": "array", "items": {"type": "string", "pattern": TENANT_ID_PATTERN,
                                               "maxLength": 128}})]
"""Tenant ids; the form's empty list is ``None``."""

LinkTtl = Annotated[str, AfterValidator(_link_ttl),
                    Field(json_schema_extra={"pattern": LINK_TTL_PATTERN})]
"""A link lifetime as an operator types it (7d, 36h, 90m, seconds), at most 7 days."""

OptionalSnapshotId = Annotated[
    str | None, BeforeValidator(_blank_is_none), AfterValidator(_snapshot),
    WithJsonSchema({"type": "string", "pattern": or_empty(SNAPSHOT_ID_PATTERN)})]
"""A snapshot id, or empty (``None``): the newest complete snapshot."""

OptionalExportId = Annotated[
    str | None, BeforeValidator(_blank_is_none), AfterValidator(_export),
    WithJsonSchema({"type": "string", "pattern": or_empty(EXPORT_ID_PATTERN)})]
"""An export id, or empty (``None``): the newest complete export."""

Bucket = Annotated[str, AfterValidator(_bucket),
                   Field(json_schema_extra={"pattern": BUCKET_PATTERN})]
"""An S3 bucket name."""

OptionalBucket = Annotated[
    str | None, BeforeValidator(_blank_is_none), AfterValidator(_bucket),
    WithJsonSchema({"type": "string", "pattern": or_empty(BUCKET_PATTERN)})]
"""An S3 bucket name, or empty (``None``)."""

RESTORE_TARGET_PATTERN = TARGET_NAME_PATTERN


def _target_name(value: str | None) -> str | None:
    if value is not None and not re.fullmatch(RESTORE_TARGET_PATTERN, value):
        raise ValueError("name the target as env:VARIABLE_URL or secret:BLOCK: a database URL "
                         "is never a run parameter (Prefect would store it, and a host named in "
                         "a form could receive the worker's PostgreSQL credentials); the CLI "
                         "takes a URL, or set TENANT_EXPORT_RESTORE_TARGET_URL on the worker")
    return value


OptionalTargetName = Annotated[
    str | None, BeforeValidator(_blank_is_none), AfterValidator(_target_name),
    WithJsonSchema({"type": "string", "pattern": or_empty(RESTORE_TARGET_PATTERN)})]
"""Where a restore writes, by name only (``env:VARIABLE_URL``, ``secret:BLOCK``); empty
(``None``): ``TENANT_EXPORT_RESTORE_TARGET_URL``."""

OptionalText = Annotated[str | None, BeforeValidator(_blank_is_none),
                         WithJsonSchema({"type": "string", "maxLength": 2000})]
"""A text, or empty (``None``)."""

ReplayTime = Annotated[
    datetime | None, BeforeValidator(_instant),
    WithJsonSchema({"type": "string", "pattern": or_empty(INSTANT_PATTERN)})]
"""An ISO 8601 date-time with offset from the form, a ``datetime`` from a program; empty
(``None``): now."""

REPLAY_TITLE = "Replay the day as of"
REPLAY_HELP = ("Leave empty: now (what every scheduled run does). To replay a past day, its "
               "time as ISO 8601 with offset, for example 2026-12-01T07:00:00+01:00; a time "
               "ahead of the clock is refused.")
