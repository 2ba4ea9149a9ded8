"""Restore targets named without credentials: a flow parameter is stored by Prefect and shown in
the UI, so a database password must never be one."""

from __future__ import annotations

import os
import re
from typing import Any

from kernel.dburl import has_password, normalize_url
from kernel.errors import BadInput
from kernel.settings import Settings

_VARIABLE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")
_BLOCK = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")
_NOT_TARGETS = frozenset({"TENANT_EXPORT_CONTROL_URL", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"})
"""Variables ending in ``_URL`` that are never a restore target (the control database, S3)."""


def _checked(target: str, value: str) -> str:
    """``value`` if it is a database URL; the refusal never quotes it (it may be a secret)."""
    try:
        normalize_url(value)
    except BadInput:
        raise BadInput(f"restore target {target!r} does not hold a database URL "
                       "(sqlite:///... or postgresql://...)") from None
    return value


def resolve_target(target: str | None, settings: Settings) -> str:
    """The database URL a restore writes into.

    ``target`` is a URL without a password (PostgreSQL may take one from ``PGPASSWORD`` or
    ``.pgpass``), ``env:VARIABLE`` (read in the process running the flow: the worker), or
    ``secret:BLOCK`` (a Prefect Secret block holding the URL); ``None`` means
    ``TENANT_EXPORT_RESTORE_TARGET_URL``.
    """
    if target is None or target == "":
        configured = settings.restore_target_value()
        if not configured:
            raise BadInput("no restore target: name one (a URL without password, env:VARIABLE "
                           "or secret:BLOCK) or set TENANT_EXPORT_RESTORE_TARGET_URL")
        return configured
    if target.startswith("env:"):
        name = target.removeprefix("env:")
        if not _VARIABLE.fullmatch(name):
            raise BadInput(f"restore target {target!r}: not an environment variable name")
        if not name.endswith("_URL") or name in _NOT_TARGETS:
            # anyone who can start a run names the variable: only database URLs may be read
            raise BadInput(f"restore target {target!r}: the variable's name must end in _URL "
                           "and not be the control database's or S3's")
        value = os.environ.get(name)  # the worker is the edge of a deployment's run
        if not value:
            raise BadInput(f"restore target {target!r}: variable {name} is not set where the "
                           "flow runs")
        return _checked(target, value)
    if target.startswith("secret:"):
        name = target.removeprefix("secret:")
        if not _BLOCK.fullmatch(name):
            raise BadInput(f"restore target {target!r}: not a Prefect block name")
        from prefect.blocks.system import Secret  # noqa: PLC0415 - only for this form

        try:
            block: Any = Secret.load(name)  # a sync load: this flow is not async
            value = block.get()
        except ValueError as err:
            raise BadInput(f"restore target {target!r}: no Prefect Secret block {name!r}") from err
        return _checked(target, str(value))
    if has_password(target):
        raise BadInput("restore target URL carries a password, which would be stored with the "
                       "run: use env:VARIABLE, secret:BLOCK or TENANT_EXPORT_RESTORE_TARGET_URL")
    return target
