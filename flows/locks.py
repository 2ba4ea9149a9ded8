"""The per-tenant lock: a Prefect global concurrency limit of one slot, held under a lease.

Exports, backups and prunes of one tenant share the limit ``tenant-<id>``, so they exclude
each other across processes and machines. The Prefect server is the only arbiter of who holds
the slot; this module adds what Prefect's ``concurrency()`` lacks for long, crash-prone runs:

* **Strict.** The limit is upserted (and re-activated) first, and a grant without the limit is
  refused: Prefect would otherwise run the block without any lock.
* **Lease.** The slot is taken with ``increment-with-lease`` (``LEASE_SECONDS``) and renewed
  every ``RENEW_SECONDS`` by a thread, so a holder gets three chances to renew before the
  server may expire its lease.
* **Holder record.** The holder writes its lease id and who it is (host, boot id, PID
  namespace, PID, the process's start time) to the control database
  (:class:`storage.registry.LockHolders`).
* **Takeover of a dead holder, never of a live one.** A waiter that is refused reads the
  record. It releases the recorded lease only with *proof* that the holder is dead: the record
  was written on this machine (same host, boot id and PID namespace) and its PID no longer
  exists, is a zombie, or now belongs to a process started at another time. Of several waiters,
  the one whose conditional delete of the record succeeds releases the lease (exactly one
  release per dead lease); all then compete for the slot through the server. A holder on
  another machine is never judged: it is dead only when its lease expires and Prefect's lease
  service frees the slot (at most ``LEASE_SECONDS`` plus the service's loop).
* **Fence.** Before a run commits (a snapshot manifest, ``datapackage.json``) it calls
  :meth:`HeldLock.check`, which renews the lease synchronously and refuses to go on if the
  lease is gone; a holder that lost its lock writes debris but never a commit marker.

The wait for the slot polls the server every ``POLL_SECONDS`` (as Prefect's own acquisition
does on HTTP 423); it is the lock's semantics, not a retry policy.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from uuid import UUID

import httpx
from prefect import get_run_logger
from prefect.client.orchestration import SyncPrefectClient, get_client
from prefect.client.schemas.actions import (
    GlobalConcurrencyLimitCreate,
    GlobalConcurrencyLimitUpdate,
)
from prefect.client.schemas.responses import ConcurrencyLimitWithLeaseResponse
from prefect.exceptions import MissingContextError, ObjectAlreadyExists, ObjectNotFound

from flows.context import current_settings
from kernel.errors import ControlDbError, TenantBusy, TerminalError, TransientError
from kernel.ids import validate_tenant_id
from storage.registry import LockHolder, LockHolders

LEASE_SECONDS = 300.0
RENEW_SECONDS = LEASE_SECONDS / 3
POLL_SECONDS = 1.0
LOCKED, GONE = 423, 410
PROC = Path("/proc")


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


def _log() -> logging.Logger | logging.LoggerAdapter[logging.Logger]:
    try:
        return get_run_logger()
    except MissingContextError:
        return logging.getLogger(__name__)


# -- who holds it ----------------------------------------------------------------------------


def _read(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return ""


def _pid_namespace() -> str:
    try:
        info = os.stat(PROC / "self" / "ns" / "pid")
    except OSError:
        return ""
    return f"{info.st_dev}:{info.st_ino}"


def _process_stat(pid: int) -> tuple[str, str] | None:
    """State letter and start time (clock ticks after boot) of a process, None if it is gone."""
    text = _read(PROC / str(pid) / "stat")
    if not text:
        return None
    fields = text.rsplit(")", 1)[-1].split()  # after "pid (comm)": state is field 3
    return fields[0], fields[19]  # starttime is field 22


def this_process(lease_id: str) -> LockHolder:
    """This process as a lock holder (empty fields where the platform cannot tell)."""
    stat = _process_stat(os.getpid())
    return LockHolder(lease_id=lease_id, host=socket.gethostname(),
                      boot_id=_read(PROC / "sys" / "kernel" / "random" / "boot_id"),
                      pid_namespace=_pid_namespace(), pid=os.getpid(),
                      process_start=stat[1] if stat else "")


def proven_dead(holder: LockHolder) -> bool:
    """True only when ``holder`` certainly runs no more; False whenever in doubt.

    Proof needs the holder's machine: same host name, boot id and PID namespace as this
    process (PIDs mean nothing across them), and a start time to tell PID reuse apart.
    """
    me = this_process("")
    if not (me.boot_id and me.pid_namespace and holder.process_start):
        return False
    if (holder.host, holder.boot_id, holder.pid_namespace) != (
            me.host, me.boot_id, me.pid_namespace):
        return False
    stat = _process_stat(holder.pid)
    if stat is None:
        return True
    state, started = stat
    return state in ("Z", "X") or started != holder.process_start


# -- the lease -------------------------------------------------------------------------------


class HeldLock:
    """A granted lock: its lease is renewed in the background until the block ends."""

    def __init__(self, tenant_id: str, name: str, lease_id: UUID) -> None:
        self.tenant_id, self.name, self.lease_id = tenant_id, name, lease_id
        self._lost = threading.Event()
        self._renewed = time.monotonic()

    def _renew(self, client: SyncPrefectClient) -> None:
        try:
            client.renew_concurrency_lease(lease_id=self.lease_id, lease_duration=LEASE_SECONDS)
        except httpx.HTTPStatusError as err:
            if err.response.status_code == GONE:
                self._lost.set()
                return
            raise
        self._renewed = time.monotonic()

    def check(self) -> None:
        """The fence before a commit: raise ``TenantBusy`` unless the lease is still ours.

        Renews now; when the server cannot be asked, the lease still counts while the last
        renewal is younger than half a lease.
        """
        if not self._lost.is_set():
            try:
                with get_client(sync_client=True) as client:
                    self._renew(client)
            except Exception as err:  # judged by the age of the last renewal
                if time.monotonic() - self._renewed > LEASE_SECONDS / 2:
                    raise TenantBusy(f"cannot confirm the lock {self.name!r} of tenant "
                                     f"{self.tenant_id!r} before committing: {err}",
                                     tenant_id=self.tenant_id) from err
        if self._lost.is_set():
            raise TenantBusy(f"the lock {self.name!r} of tenant {self.tenant_id!r} was lost "
                             "(its lease expired or was released): refusing to commit",
                             tenant_id=self.tenant_id)

    @contextmanager
    def renewing(self) -> Iterator[HeldLock]:
        """Renew the lease every ``RENEW_SECONDS`` while the block runs."""
        stop = threading.Event()
        context = contextvars.copy_context()  # Prefect's settings (API URL) live in contextvars

        def loop() -> None:
            with get_client(sync_client=True) as client:
                while not stop.wait(RENEW_SECONDS) and not self._lost.is_set():
                    try:
                        self._renew(client)
                    except Exception as err:  # noqa: BLE001 - try again at the next tick
                        _log().warning("renewing lock %s failed (will retry): %s", self.name, err)
            if self._lost.is_set() and not stop.is_set():
                _log().error("lock %s of tenant %s was lost: this run will not commit",
                             self.name, self.tenant_id)

        thread = threading.Thread(target=context.run, args=(loop,), daemon=True,
                                  name=f"renew-{self.name}")
        thread.start()
        try:
            yield self
        finally:
            stop.set()
            thread.join(timeout=5)


def _try_acquire(client: SyncPrefectClient, name: str, tenant_id: str) -> UUID | None:
    """One request for the slot: the lease id, or None while someone holds it."""
    try:
        response = client.increment_concurrency_slots_with_lease(
            names=[name], slots=1, mode="concurrency", lease_duration=LEASE_SECONDS)
    except httpx.HTTPStatusError as err:
        if err.response.status_code == LOCKED:
            return None
        if err.response.status_code in (500, 503):  # refused, nothing granted: ask again
            # (not 502/504: a proxy's timeout may hide a grant, whose lease then runs out)
            raise TransientError(f"the Prefect API could not grant lock {name!r} just now: "
                                 f"{err}", tenant_id=tenant_id) from err
        raise TerminalError(f"cannot take lock {name!r}: {err}", tenant_id=tenant_id) from err
    except httpx.HTTPError as err:
        raise TransientError(f"cannot reach the Prefect API to take lock {name!r}: {err}",
                             tenant_id=tenant_id) from err
    granted = ConcurrencyLimitWithLeaseResponse.model_validate(response.json())
    if not granted.limits:  # the limit vanished: Prefect grants, but nothing is excluded
        client.release_concurrency_slots_with_lease(lease_id=granted.lease_id)
        raise TerminalError(f"lock {name!r} does not exist; refusing to run without it",
                            tenant_id=tenant_id)
    return granted.lease_id


def _take_over(client: SyncPrefectClient, holders: LockHolders | None, name: str,
               tenant_id: str) -> LockHolder | None:
    """Release the lease of a holder proven dead; returns it, or None (nothing done)."""
    if holders is None:
        return None
    try:
        holder = holders.holder(name)
        if holder is None or not proven_dead(holder):
            return None
        if not holders.forget(name, holder.lease_id):
            return None  # another waiter is releasing it
    except ControlDbError as err:
        _log().warning("cannot check the holder of lock %s: %s", name, err)
        return None
    try:
        client.release_concurrency_slots_with_lease(lease_id=UUID(holder.lease_id))
    except httpx.HTTPError as err:  # the record is gone: the lease now waits for its expiry
        raise TransientError(f"releasing the lease {holder.lease_id} of the dead holder of "
                             f"lock {name!r} ({holder.describe()}) failed: {err}",
                             tenant_id=tenant_id) from err
    return holder


def _holder_text(holders: LockHolders | None, name: str) -> str:
    with contextlib.suppress(ControlDbError):
        holder = holders.holder(name) if holders else None
        if holder is not None:
            return f"; held by {holder.describe()}"
    return ""


def _acquire(name: str, tenant_id: str, wait_seconds: float, holders: LockHolders | None
             ) -> UUID:
    deadline = time.monotonic() + wait_seconds
    with get_client(sync_client=True) as client:
        while True:
            try:
                lease_id = _try_acquire(client, name, tenant_id)
            except TransientError as err:  # asked again while the wait lasts, then raised
                if time.monotonic() >= deadline:
                    raise
                _log().warning("taking lock %s: %s; asking again", name, err)
                time.sleep(min(POLL_SECONDS, max(0.0, deadline - time.monotonic())))
                continue
            if lease_id is not None:
                return lease_id
            dead = _take_over(client, holders, name, tenant_id)
            if dead is not None:
                _log().warning("lock %s: its holder, %s, is dead; released its lease %s",
                               name, dead.describe(), dead.lease_id)
                continue
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TenantBusy(
                    f"another export or backup of tenant {tenant_id!r} is running (waited "
                    f"{wait_seconds:g} s for lock {name!r}{_holder_text(holders, name)})",
                    tenant_id=tenant_id)
            time.sleep(min(POLL_SECONDS, remaining))


def _open_holders(url: str) -> LockHolders | None:
    try:
        return LockHolders(url)
    except ControlDbError as err:
        _log().warning("lock holders cannot be recorded (a dead holder will not be "
                       "recognised): %s", err)
        return None


def _release(lease_id: UUID, name: str, url: str) -> None:
    """Give the slot back, then drop our record (only if it still names our lease)."""
    try:
        with get_client(sync_client=True) as client:
            client.release_concurrency_slots_with_lease(lease_id=lease_id)
    except Exception as err:  # noqa: BLE001 - the block's own outcome must stand
        _log().warning("releasing lock %s failed (its lease expires within %g s): %s", name,
                       LEASE_SECONDS, err)
    with contextlib.suppress(ControlDbError), LockHolders(url) as holders:
        holders.forget(name, str(lease_id))


@contextmanager
def tenant_lock(tenant_id: str, wait_seconds: float, *, control_url: str | None = None
                ) -> Iterator[HeldLock]:
    """Hold the tenant's lock for the block, or raise ``TenantBusy`` after ``wait_seconds``.

    ``control_url`` is where holders are recorded (default: the settings' control database).
    """
    name = lock_name(tenant_id)
    _ensure_limit(name)
    url = control_url or current_settings().resolved_control_url()
    holders = _open_holders(url)
    try:
        lease_id = _acquire(name, tenant_id, wait_seconds, holders)
        try:
            _claim(holders, name, lease_id)
            held = HeldLock(tenant_id, name, lease_id)
            if holders is not None:
                holders.close()
                holders = None
            with held.renewing():
                yield held
        finally:
            _release(lease_id, name, url)
    finally:
        if holders is not None:
            holders.close()


def _claim(holders: LockHolders | None, name: str, lease_id: UUID) -> None:
    if holders is None:
        return
    try:
        holders.claim(name, this_process(str(lease_id)))
    except ControlDbError as err:
        _log().warning("lock %s is held, but its holder could not be recorded (a crash will "
                       "not be recognised before the lease expires): %s", name, err)
