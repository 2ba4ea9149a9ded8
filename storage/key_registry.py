"""What the control database remembers of every tenant's data keys: id and check value.

The key record lives in the backup bucket, so the bucket alone cannot tell a record replaced
by another valid one (a second installation with the same master key, a bug, an insider with
KMS access) or rolled back to an older version (from before a rotation) from the real one.
Every backup, rotation and rewrap therefore compares the record's keys with this table: a key
remembered here but missing from the record, or present with another check value, is refused
by name. The check value is a 128-bit HMAC fingerprint; it reveals nothing of the key.

Rows are never deleted: ``lost_at`` marks keys whose record vanished together with every
object they sealed (a backup then starts afresh and says so), ``destroyed_at`` keys that purge
crypto-shredded.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from types import TracebackType
from typing import Self

from sqlalchemy import Column, Integer, MetaData, String, Table, and_, insert, select, update
from sqlalchemy.exc import SQLAlchemyError

from kernel.dburl import error_reason
from kernel.errors import ControlDbError, VerificationFailed
from storage.control import open_control

metadata = MetaData()
keys_table = Table(
    "backup_data_keys",
    metadata,
    Column("tenant_id", String(200), primary_key=True),
    Column("data_key_id", Integer, primary_key=True),
    Column("check_value", String(64), primary_key=True),
    Column("recorded_at", String(40), nullable=False),
    Column("lost_at", String(40), nullable=True),
    Column("destroyed_at", String(40), nullable=True),
)


@dataclass(frozen=True)
class KnownKey:
    """A data key the control database expects in the tenant's key record."""

    data_key_id: int
    check_value: str
    recorded_at: str


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class KeyRegistry:
    """The ``backup_data_keys`` table, opened once per use (``with`` closes it)."""

    def __init__(self, url: str) -> None:
        self._engine = open_control(url, metadata)

    def close(self) -> None:
        self._engine.dispose()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.close()

    def known(self, tenant_id: str) -> list[KnownKey]:
        """Keys expected in the tenant's record (neither lost nor destroyed), by id."""
        try:
            with self._engine.connect() as conn:
                rows = conn.execute(select(keys_table).where(and_(
                    keys_table.c.tenant_id == tenant_id, keys_table.c.lost_at.is_(None),
                    keys_table.c.destroyed_at.is_(None))).order_by(
                    keys_table.c.data_key_id)).all()
        except SQLAlchemyError as err:
            raise ControlDbError(f"cannot read the data keys of tenant {tenant_id!r} from the "
                                 f"control database: {error_reason(err)}",
                                 tenant_id=tenant_id) from err
        return [KnownKey(r.data_key_id, r.check_value, r.recorded_at) for r in rows]

    def reconcile(self, tenant_id: str, checks: dict[int, str], where: str) -> None:
        """Refuse a record that lacks a remembered key or holds another key under its id;
        then remember the record's keys not known yet (new ones, or from before this table).

        Raises:
            VerificationFailed: naming the key, when and what was remembered, and ``where``.
        """
        known = self.known(tenant_id)
        for key in known:
            found = checks.get(key.data_key_id)
            if found != key.check_value:
                what = "is missing from it" if found is None else (
                    f"holds another key there (check value {found}, expected {key.check_value})")
                raise VerificationFailed(
                    f"{where}: the key record of tenant {tenant_id!r} was replaced or rolled "
                    f"back: data key {key.data_key_id}, known to the control database since "
                    f"{key.recorded_at}, {what}. Put back the record's newest version; a new "
                    "key would leave the backups sealed under the old one unreadable",
                    tenant_id=tenant_id)
        new = {i: c for i, c in checks.items() if i not in {k.data_key_id for k in known}}
        if not new:
            return
        try:
            with self._engine.begin() as conn:
                conn.execute(insert(keys_table), [
                    {"tenant_id": tenant_id, "data_key_id": i, "check_value": c,
                     "recorded_at": _now(), "lost_at": None, "destroyed_at": None}
                    for i, c in sorted(new.items())])
        except SQLAlchemyError as err:
            raise ControlDbError(f"cannot record the data keys of tenant {tenant_id!r} in the "
                                 f"control database: {error_reason(err)}",
                                 tenant_id=tenant_id) from err

    def mark(self, tenant_id: str, column: str) -> list[KnownKey]:
        """Set ``lost_at`` or ``destroyed_at`` on every expected key; returns them."""
        if column not in ("lost_at", "destroyed_at"):
            raise ValueError(f"not a mark: {column!r}")
        known = self.known(tenant_id)
        try:
            with self._engine.begin() as conn:
                conn.execute(update(keys_table).where(and_(
                    keys_table.c.tenant_id == tenant_id, keys_table.c.lost_at.is_(None),
                    keys_table.c.destroyed_at.is_(None))).values({column: _now()}))
        except SQLAlchemyError as err:
            raise ControlDbError(f"cannot update the data keys of tenant {tenant_id!r} in the "
                                 f"control database: {error_reason(err)}",
                                 tenant_id=tenant_id) from err
        return known

    def record_destroyed(self, tenant_id: str) -> list[KnownKey]:
        """Purge destroyed the tenant's key record: its keys are no longer expected."""
        return self.mark(tenant_id, "destroyed_at")
