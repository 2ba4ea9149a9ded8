"""The per-tenant lock: a Prefect global concurrency limit of 1, used with ``strict=True``.

Without ``strict=True`` Prefect runs the block *without any lock* when the limit is missing, so
the limit is upserted first and the acquisition is strict. Exports and backups of one tenant share
the same limit name, so they exclude each other across processes and workers.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextlib import contextmanager

from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import (
    GlobalConcurrencyLimitCreate,
    GlobalConcurrencyLimitUpdate,
)
from prefect.concurrency.sync import concurrency
from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

from kernel.errors import TenantBusy
from kernel.ids import validate_tenant_id

LEASE_SECONDS = 300


def lock_name(tenant_id: str) -> str:
    """The global concurrency limit guarding one tenant: its exact id, so ``T.1`` and ``T_1``
    never share a lock (tenant ids contain no character Prefect bans in names)."""
    return "tenant-" + validate_tenant_id(tenant_id)


def _ensure_limit(name: str) -> None:
    """An active limit of exactly one slot: created if missing, re-activated if an operator
    disabled it (a disabled limit grants every request: no exclusion at all)."""
    with get_client(sync_client=True) as client:
        try:
            limit = client.read_global_concurrency_limit_by_name(name)
        except ObjectNotFound:
            with contextlib.suppress(ObjectAlreadyExists):  # another run created it just now
                client.create_global_concurrency_limit(
                    GlobalConcurrencyLimitCreate(name=name, limit=1, active=True))
            return
        if not limit.active or limit.limit != 1:
            client.update_global_concurrency_limit(
                name, GlobalConcurrencyLimitUpdate(limit=1, active=True))


@contextmanager
def tenant_lock(tenant_id: str, wait_seconds: float) -> Iterator[None]:
    """Hold the tenant's lock for the block, or raise ``TenantBusy`` after ``wait_seconds``."""
    name = lock_name(tenant_id)
    _ensure_limit(name)
    acquired = False
    try:
        with concurrency(name, occupy=1, timeout_seconds=wait_seconds, strict=True,
                         lease_duration=LEASE_SECONDS):
            acquired = True
            yield
    except TimeoutError as err:
        if acquired:  # a timeout inside the block is the block's own error
            raise
        raise TenantBusy(
            f"another export or backup of tenant {tenant_id!r} is running "
            f"(waited {wait_seconds:g} s for lock {name!r})", tenant_id=tenant_id,
        ) from err
