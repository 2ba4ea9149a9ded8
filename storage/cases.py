"""Offboarding cases, legal holds and purges in the control database: append-only facts.

Nothing here is ever updated or deleted (triggers refuse it): a case is a row plus the steps
recorded against it, a legal hold is a series of set/released events, a purge is a row, its
steps, the inventory of every object version it found and the unsigned certificate document it
issued. Where a case or a purge stands is derived from these facts, so a run that crashed
resumes from what was recorded. Recording a step or an inventory row twice stores it once
(the first record wins), which is what makes the flows' steps idempotent.

Addresses of contacts are not stored: they are read from the platform database when a notice
is sent (``sources.contacts``).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Self

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Connection,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    and_,
    event,
    func,
    insert,
    select,
    text,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from kernel.dburl import error_reason
from kernel.errors import BadInput, ControlDbError
from kernel.ids import validate_tenant_id
from storage.control import open_control

MAX_REASON_CHARS = 500
metadata = MetaData()
cases_table = Table(
    "offboarding_cases", metadata,
    Column("case_id", String(40), primary_key=True),
    Column("tenant_id", String(200), nullable=False, index=True),
    Column("contract_end", String(10), nullable=False),
    Column("retention_days", Integer, nullable=False),
    Column("notice_days", Integer, nullable=False),
    Column("purge_due", String(40), nullable=False),
    Column("opened_at", String(40), nullable=False),
    Column("opened_by", String(200), nullable=False),
)
steps_table = Table(
    "offboarding_steps", metadata,
    Column("case_id", String(40), primary_key=True),
    Column("step", String(40), primary_key=True),
    Column("at", String(40), nullable=False),
    Column("actor", String(200), nullable=False),
    Column("details", Text, nullable=False),
)
holds_table = Table(
    "legal_holds", metadata,
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("tenant_id", String(200), nullable=False, index=True),
    Column("action", String(10), nullable=False),
    Column("reason", Text, nullable=False),
    Column("actor", String(200), nullable=False),
    Column("at", String(40), nullable=False),
)
purges_table = Table(
    "purges", metadata,
    Column("purge_id", String(40), primary_key=True),
    Column("tenant_id", String(200), nullable=False, index=True),
    Column("case_id", String(40), nullable=True),
    Column("started_at", String(40), nullable=False),
    Column("started_by", String(200), nullable=False),
)
purge_steps_table = Table(
    "purge_steps", metadata,
    Column("purge_id", String(40), primary_key=True),
    Column("step", String(40), primary_key=True),
    Column("at", String(40), nullable=False),
    Column("details", Text, nullable=False),
)
purge_objects_table = Table(
    "purge_objects", metadata,
    Column("purge_id", String(40), primary_key=True),
    Column("bucket", String(63), primary_key=True),
    Column("key", String(1024), primary_key=True),
    Column("version_id", String(200), primary_key=True),
    Column("category", String(40), nullable=False),
    Column("unit", String(200), nullable=False),
    Column("bytes", BigInteger, nullable=False),
    Column("marker", Boolean, nullable=False),
)
certificates_table = Table(
    "deletion_certificates", metadata,
    Column("purge_id", String(40), primary_key=True),
    Column("certificate_id", String(40), nullable=False, unique=True),
    Column("tenant_id", String(200), nullable=False, index=True),
    Column("document", Text, nullable=False),
)


def _guard(target: Table, connection: Connection, **_: Any) -> None:
    """Born with each table: triggers refusing UPDATE and DELETE (and TRUNCATE on PostgreSQL)."""
    refuse = "offboarding records are append-only"
    name = target.name
    if connection.dialect.name == "sqlite":
        for verb in ("UPDATE", "DELETE"):
            connection.execute(text(
                f"CREATE TRIGGER IF NOT EXISTS {name}_no_{verb.lower()} BEFORE {verb} ON "
                f"{name} BEGIN SELECT RAISE(ABORT, '{refuse}'); END"))
        return
    connection.execute(text(
        "CREATE OR REPLACE FUNCTION offboarding_append_only() RETURNS trigger LANGUAGE "
        f"plpgsql AS $$ BEGIN RAISE EXCEPTION '{refuse}'; END $$"))
    connection.execute(text(
        f"CREATE OR REPLACE TRIGGER {name}_append_only BEFORE UPDATE OR DELETE ON {name} "
        "FOR EACH ROW EXECUTE FUNCTION offboarding_append_only()"))
    connection.execute(text(
        f"CREATE OR REPLACE TRIGGER {name}_no_truncate BEFORE TRUNCATE ON {name} "
        "FOR EACH STATEMENT EXECUTE FUNCTION offboarding_append_only()"))


for _table in metadata.tables.values():
    event.listen(_table, "after_create", _guard)


def iso(moment: datetime) -> str:
    """UTC to the second, ``2026-12-26T02:03:42Z``: the one form every record uses."""
    if moment.tzinfo is None:
        raise BadInput("offboarding times must carry a time zone")
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_iso(value: str) -> datetime:
    """The inverse of :func:`iso`."""
    return datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)


@dataclass(frozen=True)
class Step:
    """One step of a case, as recorded the first time it was done."""

    step: str
    at: str
    actor: str
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Case:
    """An offboarding case: the tenant, its contract end and when purge becomes due."""

    case_id: str
    tenant_id: str
    contract_end: str
    retention_days: int
    notice_days: int
    purge_due: str
    opened_at: str
    opened_by: str


@dataclass(frozen=True)
class Hold:
    """A legal hold in force: purge is refused while it lasts."""

    tenant_id: str
    reason: str
    since: str
    by: str


@dataclass(frozen=True)
class Purge:
    """One purge of a tenant; finished once its certificate document is stored."""

    purge_id: str
    tenant_id: str
    case_id: str | None
    started_at: str
    started_by: str


@dataclass(frozen=True)
class ObjectVersion:
    """One stored object version (or delete marker) a purge found and will delete."""

    bucket: str
    key: str
    version_id: str
    category: str
    unit: str
    bytes: int
    marker: bool = False


class CaseStore:
    """Cases, holds and purges in the control database (``with`` closes the engine)."""

    def __init__(self, url: str) -> None:
        self._engine = open_control(url, metadata)
        self._dialect = self._engine.dialect.name

    def close(self) -> None:
        """Release pooled connections."""
        self._engine.dispose()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.close()

    # -- cases -----------------------------------------------------------------------------

    def open_case(self, case: Case) -> Case:
        """Record a new case and its ``opened`` step in one transaction."""
        validate_tenant_id(case.tenant_id)
        row = asdict(case)
        opened = {"case_id": case.case_id, "step": "opened", "at": case.opened_at,
                  "actor": case.opened_by, "details": "{}"}
        with self._write(f"open case {case.case_id}", case.tenant_id) as conn:
            conn.execute(insert(cases_table).values(**row))
            conn.execute(insert(steps_table).values(**opened))
        return case

    def cases(self, tenant_id: str | None = None) -> list[Case]:
        """Cases of a tenant (every tenant when None), oldest first."""
        query = select(cases_table).order_by(cases_table.c.opened_at, cases_table.c.case_id)
        if tenant_id is not None:
            query = query.where(cases_table.c.tenant_id == validate_tenant_id(tenant_id))
        return [Case(**row._asdict()) for row in self._read(query, tenant_id)]

    def steps(self, case_id: str) -> dict[str, Step]:
        """The steps a case has done, by name."""
        query = (select(steps_table).where(steps_table.c.case_id == case_id)
                 .order_by(steps_table.c.at, steps_table.c.step))
        return {r.step: Step(r.step, r.at, r.actor, json.loads(r.details))
                for r in self._read(query)}

    def record_step(self, case: Case, step: Step) -> tuple[Step, bool]:
        """Record ``step`` unless it is already done; returns (the stored step, whether new)."""
        row = {"case_id": case.case_id, "step": step.step, "at": step.at, "actor": step.actor,
               "details": json.dumps(step.details, sort_keys=True, ensure_ascii=False)}
        new = self._insert_once(steps_table, [row], f"record step {step.step}", case.tenant_id)
        return self.steps(case.case_id)[step.step], bool(new)

    def backup_exclusions(self) -> dict[str, str]:
        """Tenants the nightly backup must skip, with why: a purged tenant (a new backup would
        recreate what its certificate says is gone) or one whose case took its final backup."""
        final = (select(cases_table.c.tenant_id, cases_table.c.case_id)
                 .join(steps_table, steps_table.c.case_id == cases_table.c.case_id)
                 .where(steps_table.c.step == "final_backup"))
        found = {row.tenant_id: f"offboarding case {row.case_id}: final backup taken"
                 for row in self._read(final)}
        purged = select(purges_table.c.tenant_id, purges_table.c.purge_id)
        found.update({row.tenant_id: f"purged (purge {row.purge_id})"
                      for row in self._read(purged)})
        return found

    # -- legal holds -----------------------------------------------------------------------

    def hold(self, tenant_id: str) -> Hold | None:
        """The legal hold in force for the tenant, if any."""
        query = (select(holds_table).where(holds_table.c.tenant_id == validate_tenant_id(
            tenant_id)).order_by(holds_table.c.seq.desc()).limit(1))
        rows = self._read(query, tenant_id)
        if not rows or rows[0].action != "set":
            return None
        return Hold(tenant_id, rows[0].reason, rows[0].at, rows[0].actor)

    def set_hold(self, tenant_id: str, reason: str, actor: str, at: datetime) -> tuple[Hold, bool]:
        """Put the tenant on hold; the same reason again changes nothing (returns False).

        Raises:
            BadInput: an empty or overlong reason, or a hold already set for another reason.
        """
        reason = reason.strip()
        if not reason or len(reason) > MAX_REASON_CHARS or not reason.isprintable():
            raise BadInput(f"a legal hold needs a reason of 1-{MAX_REASON_CHARS} printable "
                           "characters", tenant_id=tenant_id)
        current = self.hold(tenant_id)
        if current is not None:
            if current.reason == reason:
                return current, False
            raise BadInput(f"tenant {tenant_id!r} is already on legal hold since "
                           f"{current.since} ({current.reason}); release it first",
                           tenant_id=tenant_id)
        self._append_hold(tenant_id, "set", reason, actor, at)
        return Hold(tenant_id, reason, iso(at), actor), True

    def release_hold(self, tenant_id: str, actor: str, at: datetime) -> Hold:
        """Release the hold in force (returned), recording who and when.

        Raises:
            BadInput: the tenant is not on hold.
        """
        current = self.hold(tenant_id)
        if current is None:
            raise BadInput(f"tenant {tenant_id!r} is not on legal hold", tenant_id=tenant_id)
        self._append_hold(tenant_id, "released", current.reason, actor, at)
        return current

    def _append_hold(self, tenant_id: str, action: str, reason: str, actor: str,
                     at: datetime) -> None:
        with self._write(f"record legal hold {action}", tenant_id) as conn:
            conn.execute(insert(holds_table).values(tenant_id=tenant_id, action=action,
                                                    reason=reason, actor=actor, at=iso(at)))

    # -- purges ----------------------------------------------------------------------------

    def start_purge(self, purge: Purge) -> Purge:
        """Record a purge about to begin (before anything is deleted)."""
        row = asdict(purge)
        with self._write(f"record purge {purge.purge_id}", purge.tenant_id) as conn:
            conn.execute(insert(purges_table).values(**row))
        return purge

    def purges(self, tenant_id: str) -> list[Purge]:
        """The tenant's purges, oldest first."""
        query = (select(purges_table).where(purges_table.c.tenant_id == validate_tenant_id(
            tenant_id)).order_by(purges_table.c.started_at, purges_table.c.purge_id))
        return [Purge(**row._asdict()) for row in self._read(query, tenant_id)]

    def purge_steps(self, purge_id: str) -> dict[str, str]:
        """When each step of a purge was first done."""
        query = select(purge_steps_table).where(purge_steps_table.c.purge_id == purge_id)
        return {row.step: row.at for row in self._read(query)}

    def record_purge_step(self, purge: Purge, step: str, at: datetime,
                          details: dict[str, Any] | None = None) -> str:
        """Record a purge step once; returns the time recorded first."""
        row = {"purge_id": purge.purge_id, "step": step, "at": iso(at),
               "details": json.dumps(details or {}, sort_keys=True, ensure_ascii=False)}
        self._insert_once(purge_steps_table, [row], f"record purge step {step}",
                          purge.tenant_id)
        return self.purge_steps(purge.purge_id)[step]

    def purge_step_details(self, purge_id: str, step: str) -> dict[str, Any] | None:
        """The facts recorded with a purge step, or None when it is not done."""
        query = select(purge_steps_table.c.details).where(and_(
            purge_steps_table.c.purge_id == purge_id, purge_steps_table.c.step == step))
        rows = self._read(query)
        return json.loads(rows[0][0]) if rows else None

    def add_inventory(self, purge: Purge, found: Iterable[ObjectVersion]) -> int:
        """Add object versions to the purge's inventory (known ones are kept as they are)."""
        rows = [{"purge_id": purge.purge_id, "bucket": v.bucket, "key": v.key,
                 "version_id": v.version_id, "category": v.category, "unit": v.unit,
                 "bytes": v.bytes, "marker": v.marker} for v in found]
        return self._insert_once(purge_objects_table, rows, "record the purge inventory",
                                 purge.tenant_id) if rows else 0

    def inventory_totals(self, purge_id: str) -> dict[str, dict[str, int]]:
        """Per category: distinct ``objects`` (bucket and key), ``versions``, ``bytes`` and
        ``units`` (snapshots, export packages); delete markers hold no data and count as none."""
        t = purge_objects_table
        query = (select(t.c.category, func.count(func.distinct(t.c.bucket + "/" + t.c.key)),
                        func.count(), func.coalesce(func.sum(t.c.bytes), 0),
                        func.count(func.distinct(t.c.unit)))
                 .where(and_(t.c.purge_id == purge_id, t.c.marker.is_(False)))
                 .group_by(t.c.category))
        return {row[0]: {"objects": int(row[1]), "versions": int(row[2]), "bytes": int(row[3]),
                         "units": int(row[4])} for row in self._read(query)}

    def inventory_units(self, purge_id: str, category: str) -> list[str]:
        """Distinct units of a category (the snapshot ids of ``backup_snapshots``)."""
        t = purge_objects_table
        query = (select(t.c.unit).distinct().where(and_(t.c.purge_id == purge_id,
                                                        t.c.category == category))
                 .order_by(t.c.unit))
        return [row[0] for row in self._read(query)]

    def store_certificate(self, purge: Purge, certificate_id: str,
                          document: dict[str, Any]) -> dict[str, Any]:
        """Keep the unsigned certificate document of a purge; the first one stored wins and is
        returned, so a resumed purge re-signs exactly the same document."""
        row = {"purge_id": purge.purge_id, "certificate_id": certificate_id,
               "tenant_id": purge.tenant_id,
               "document": json.dumps(document, sort_keys=True, ensure_ascii=False)}
        self._insert_once(certificates_table, [row], "store the certificate", purge.tenant_id)
        stored = self.certificate_document(purge.purge_id)
        if stored is None:  # pragma: no cover - just inserted
            raise ControlDbError(f"certificate of purge {purge.purge_id} vanished",
                                 tenant_id=purge.tenant_id)
        return stored

    def certificate_document(self, purge_id: str) -> dict[str, Any] | None:
        """The unsigned certificate document of a finished purge, or None."""
        query = select(certificates_table.c.document).where(
            certificates_table.c.purge_id == purge_id)
        rows = self._read(query)
        return json.loads(rows[0][0]) if rows else None

    # -- plumbing --------------------------------------------------------------------------

    def _insert_once(self, table: Table, rows: list[dict[str, Any]], what: str,
                     tenant_id: str | None) -> int:
        """INSERT rows whose primary key is new; returns how many were new."""
        dialect: Any = postgresql if self._dialect == "postgresql" else sqlite
        first_key = next(iter(table.primary_key.columns))
        statement = dialect.insert(table).on_conflict_do_nothing().returning(first_key)
        try:  # RETURNING lists the rows inserted (a rowcount is not reliable for batches)
            with self._engine.begin() as conn:
                total = 0
                for start in range(0, len(rows), 500):
                    total += len(conn.execute(statement, rows[start:start + 500]).all())
        except SQLAlchemyError as err:
            raise ControlDbError(f"cannot {what} in the control database: "
                                 f"{error_reason(err)}", tenant_id=tenant_id) from err
        return total

    def _read(self, query: Any, tenant_id: str | None = None) -> list[Any]:
        try:
            with self._engine.connect() as conn:
                return list(conn.execute(query).all())
        except SQLAlchemyError as err:
            raise ControlDbError(f"cannot read offboarding records: {error_reason(err)}",
                                 tenant_id=tenant_id) from err

    @contextmanager
    def _write(self, what: str, tenant_id: str) -> Iterator[Connection]:
        """A write transaction whose failure names what was recorded, for which tenant."""
        try:
            with self._engine.begin() as conn:
                yield conn
        except IntegrityError as err:
            raise ControlDbError(f"cannot {what}: it is already recorded",
                                 tenant_id=tenant_id) from err
        except SQLAlchemyError as err:
            raise ControlDbError(f"cannot {what} in the control database: "
                                 f"{error_reason(err)}", tenant_id=tenant_id) from err
