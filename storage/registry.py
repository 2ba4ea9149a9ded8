"""What the control database remembers about backups and tenant locks.

Two small registries, both outside the backup bucket on purpose:

* **Snapshots** (``backup_snapshots``): every snapshot a backup committed, and when ``prune``
  forgot it. The bucket alone cannot tell a snapshot that was deleted behind our back from one
  that never existed, so ``verify`` and ``restore`` compare the bucket with this record and
  warn when the newest snapshot they were promised is gone (a silent rollback).
* **Lock holders** (``tenant_lock_holders``): who holds a tenant's lock, under which Prefect
  lease, so that a waiter can recognise a holder that died and release its lease
  (``flows/locks.py`` decides when that is safe; this module only stores the facts).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from types import TracebackType
from typing import Self

from sqlalchemy import Column, Integer, MetaData, String, Table, and_, delete, insert, select
from sqlalchemy import update as sql_update
from sqlalchemy.exc import SQLAlchemyError

from kernel.dburl import error_reason
from kernel.errors import ControlDbError
from storage.control import open_control

metadata = MetaData()
snapshots_table = Table(
    "backup_snapshots",
    metadata,
    Column("tenant_id", String(200), primary_key=True),
    Column("snapshot_id", String(80), primary_key=True),
    Column("committed_at", String(40), nullable=False),
    Column("forgotten_at", String(40), nullable=True),
)
holders_table = Table(
    "tenant_lock_holders",
    metadata,
    Column("lock_name", String(250), primary_key=True),
    Column("lease_id", String(40), nullable=False),
    Column("host", String(255), nullable=False),
    Column("boot_id", String(80), nullable=False),
    Column("pid_namespace", String(80), nullable=False),
    Column("pid", Integer, nullable=False),
    Column("process_start", String(40), nullable=False),
    Column("acquired_at", String(40), nullable=False),
)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class _Store:
    """An engine on the control database, opened once per use (``with`` closes it)."""

    def __init__(self, url: str) -> None:
        self._engine = open_control(url, metadata)

    def close(self) -> None:
        """Release pooled connections."""
        self._engine.dispose()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.close()


@dataclass(frozen=True)
class RecordedSnapshot:
    """A snapshot the control database expects to exist (committed, not forgotten)."""

    snapshot_id: str
    committed_at: str


class SnapshotRegistry(_Store):
    """Committed and forgotten snapshots, per tenant."""

    def record_commit(self, tenant_id: str, snapshot_id: str) -> None:
        """A backup committed ``snapshot_id`` (its manifest is written and read back)."""
        row = {"tenant_id": tenant_id, "snapshot_id": snapshot_id, "committed_at": _now(),
               "forgotten_at": None}
        try:
            with self._engine.begin() as conn:
                conn.execute(delete(snapshots_table).where(and_(
                    snapshots_table.c.tenant_id == tenant_id,
                    snapshots_table.c.snapshot_id == snapshot_id)))
                conn.execute(insert(snapshots_table).values(**row))
        except SQLAlchemyError as err:
            raise ControlDbError(f"cannot record snapshot {snapshot_id} of tenant {tenant_id!r}: "
                                 f"{error_reason(err)}", tenant_id=tenant_id) from err

    def record_forgotten(self, tenant_id: str, snapshot_ids: Iterable[str]) -> None:
        """``prune`` is about to delete these snapshots: they are no longer expected."""
        ids = list(snapshot_ids)
        if not ids:
            return
        try:
            with self._engine.begin() as conn:
                conn.execute(sql_update(snapshots_table).where(and_(
                    snapshots_table.c.tenant_id == tenant_id,
                    snapshots_table.c.snapshot_id.in_(ids),
                    snapshots_table.c.forgotten_at.is_(None))).values(forgotten_at=_now()))
        except SQLAlchemyError as err:
            raise ControlDbError(
                f"cannot record forgotten snapshots of tenant {tenant_id!r} in the control "
                f"database (nothing was deleted): {error_reason(err)}",
                tenant_id=tenant_id) from err

    def expected(self, tenant_id: str) -> list[RecordedSnapshot]:
        """Snapshots committed and not forgotten, oldest first."""
        try:
            with self._engine.connect() as conn:
                rows = conn.execute(select(snapshots_table).where(and_(
                    snapshots_table.c.tenant_id == tenant_id,
                    snapshots_table.c.forgotten_at.is_(None))).order_by(
                    snapshots_table.c.snapshot_id)).all()
        except SQLAlchemyError as err:
            raise ControlDbError(f"cannot read the snapshot registry of tenant {tenant_id!r}: "
                                 f"{error_reason(err)}", tenant_id=tenant_id) from err
        return [RecordedSnapshot(r.snapshot_id, r.committed_at) for r in rows]


@dataclass(frozen=True)
class LockHolder:
    """The process holding a tenant lock, as it described itself when it acquired it."""

    lease_id: str
    host: str
    boot_id: str
    pid_namespace: str
    pid: int
    process_start: str
    acquired_at: str = ""

    def describe(self) -> str:
        """For messages: where the holder runs and since when (no secret in it)."""
        return f"pid {self.pid} on host {self.host!r} since {self.acquired_at or '?'}"


class LockHolders(_Store):
    """One row per held lock: its lease and its holder."""

    def claim(self, lock_name: str, holder: LockHolder) -> None:
        """Record ``holder`` as the holder of ``lock_name`` (it owns the slot: any older row
        describes a lease that is gone)."""
        row = {"lock_name": lock_name, "lease_id": holder.lease_id, "host": holder.host,
               "boot_id": holder.boot_id, "pid_namespace": holder.pid_namespace,
               "pid": holder.pid, "process_start": holder.process_start,
               "acquired_at": holder.acquired_at or _now()}
        try:
            with self._engine.begin() as conn:
                conn.execute(delete(holders_table).where(holders_table.c.lock_name == lock_name))
                conn.execute(insert(holders_table).values(**row))
        except SQLAlchemyError as err:
            raise ControlDbError(f"cannot record the holder of lock {lock_name!r}: "
                                 f"{error_reason(err)}") from err

    def holder(self, lock_name: str) -> LockHolder | None:
        """The recorded holder of ``lock_name``, if any."""
        try:
            with self._engine.connect() as conn:
                row = conn.execute(select(holders_table).where(
                    holders_table.c.lock_name == lock_name)).first()
        except SQLAlchemyError as err:
            raise ControlDbError(f"cannot read the holder of lock {lock_name!r}: "
                                 f"{error_reason(err)}") from err
        if row is None:
            return None
        return LockHolder(lease_id=row.lease_id, host=row.host, boot_id=row.boot_id,
                          pid_namespace=row.pid_namespace, pid=row.pid,
                          process_start=row.process_start, acquired_at=row.acquired_at)

    def forget(self, lock_name: str, lease_id: str) -> bool:
        """Delete the row if it still names ``lease_id``; True when this call deleted it.

        Conditional on the lease, so of several waiters that found the same dead holder
        exactly one wins the right to release its lease.
        """
        try:
            with self._engine.begin() as conn:
                result = conn.execute(delete(holders_table).where(and_(
                    holders_table.c.lock_name == lock_name,
                    holders_table.c.lease_id == lease_id)))
        except SQLAlchemyError as err:
            raise ControlDbError(f"cannot update the holder of lock {lock_name!r}: "
                                 f"{error_reason(err)}") from err
        return bool(result.rowcount == 1)
