"""The assisted-migration ledger: an append-only event log in the control database.

Every fact (case opened, time logged, booking, cancellation, no-show, correction, case closed)
is one row that is never updated nor deleted: corrections are new rows that reverse earlier
ones. Database triggers refuse UPDATE and DELETE, so the rule holds even against a careless
operator with a SQL prompt. Each event carries a caller-chosen ``event_id``: appending the same
event twice stores it once, appending a different event under a used id is refused.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    Column,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    event,
    insert,
    select,
    text,
)
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from kernel.dburl import error_reason
from kernel.errors import BadInput, ControlDbError
from storage.control import open_control

metadata = MetaData()
events_table = Table(
    "migration_events",
    metadata,
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("event_id", String(200), nullable=False, unique=True),
    Column("case_id", String(200), nullable=False, index=True),
    Column("kind", String(40), nullable=False),
    Column("payload", Text, nullable=False),
    Column("recorded_at", String(40), nullable=False),
)

_SQLITE_GUARDS = [
    text("CREATE TRIGGER IF NOT EXISTS migration_events_no_update BEFORE UPDATE ON "
        "migration_events BEGIN SELECT RAISE(ABORT, 'the ledger is append-only'); END"),
    text("CREATE TRIGGER IF NOT EXISTS migration_events_no_delete BEFORE DELETE ON "
        "migration_events BEGIN SELECT RAISE(ABORT, 'the ledger is append-only'); END"),
]
_POSTGRES_GUARDS = [
    text("CREATE OR REPLACE FUNCTION migration_events_append_only() RETURNS trigger "
        "LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'the ledger is append-only'; END $$"),
    text("CREATE OR REPLACE TRIGGER migration_events_append_only BEFORE UPDATE OR DELETE ON "
        "migration_events FOR EACH ROW EXECUTE FUNCTION migration_events_append_only()"),
    text("CREATE OR REPLACE TRIGGER migration_events_no_truncate BEFORE TRUNCATE ON "
        "migration_events FOR EACH STATEMENT EXECUTE FUNCTION migration_events_append_only()"),
]


@event.listens_for(events_table, "after_create")
def _guard(_target: Table, connection: Any, **_: Any) -> None:
    guards = _SQLITE_GUARDS if connection.dialect.name == "sqlite" else _POSTGRES_GUARDS
    for ddl in guards:
        connection.execute(ddl)


@dataclass(frozen=True)
class LedgerEvent:
    """One fact of a migration case."""

    event_id: str
    case_id: str
    kind: str
    payload: dict[str, Any] = field(default_factory=dict)
    recorded_at: str = ""
    seq: int | None = None

    def same_fact(self, other: LedgerEvent) -> bool:
        """Equal ignoring when and in which order it was recorded."""
        return (self.event_id, self.case_id, self.kind, self.payload) == (
            other.event_id, other.case_id, other.kind, other.payload)


class Ledger:
    """Append and read migration events in the control database."""

    def __init__(self, url: str) -> None:
        self._engine = open_control(url, metadata)

    def close(self) -> None:
        """Release pooled connections."""
        self._engine.dispose()

    def append(self, new: LedgerEvent) -> tuple[LedgerEvent, bool]:
        """Store ``new`` unless its id is known; returns (stored event, whether it was new)."""
        row = {
            "event_id": new.event_id, "case_id": new.case_id, "kind": new.kind,
            "payload": json.dumps(new.payload, sort_keys=True, ensure_ascii=False),
            "recorded_at": new.recorded_at or datetime.now(UTC).isoformat(),
        }
        try:
            with self._engine.begin() as conn:
                conn.execute(insert(events_table).values(**row))
        except IntegrityError:
            existing = self.get(new.event_id)
            if existing is None:  # pragma: no cover - a unique violation on another column
                raise
            if not existing.same_fact(new):
                where = (f"entry of case {existing.case_id!r}" if existing.case_id == new.case_id
                         else "entry of another case")  # never name another tenant's case
                raise BadInput(f"id {new.event_id!r} is already used by another "
                               f"{existing.kind} {where}; nothing was written") from None
            return existing, False
        except SQLAlchemyError as err:
            raise ControlDbError(f"cannot write to the control database: {_reason(err)}") from err
        stored = self.get(new.event_id)
        if stored is None:  # pragma: no cover - just inserted
            raise ControlDbError(f"event {new.event_id!r} vanished after insert")
        return stored, True

    def get(self, event_id: str) -> LedgerEvent | None:
        """One event by id."""
        rows = self._select(events_table.c.event_id == event_id)
        return rows[0] if rows else None

    def events(self, case_id: str) -> list[LedgerEvent]:
        """Every event of a case, in the order recorded."""
        return self._select(events_table.c.case_id == case_id)

    def _select(self, where: Any) -> list[LedgerEvent]:
        try:
            with self._engine.connect() as conn:
                rows = conn.execute(select(events_table).where(where).order_by(
                    events_table.c.seq)).all()
        except SQLAlchemyError as err:
            raise ControlDbError(f"cannot read the control database: {_reason(err)}") from err
        return [
            LedgerEvent(event_id=r.event_id, case_id=r.case_id, kind=r.kind,
                        payload=json.loads(r.payload), recorded_at=r.recorded_at, seq=r.seq)
            for r in rows
        ]


def _reason(err: SQLAlchemyError) -> str:
    return error_reason(err)
