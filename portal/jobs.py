"""Exports requested through the portal, in the control database (table ``portal_exports``).

One row per request, from ``requested`` to ``completed`` (with the package's export id) or
``failed`` (with one line saying why). The column ``active`` is 1 while a request is requested
or running and NULL afterwards; a unique index on ``(tenant_id, active)`` makes "at most one
running export per tenant" a fact the database enforces, whatever number of portal processes
race. Requests that never reached a starter (``run_ref`` NULL) do not count towards the daily
limit.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from sqlalchemy import (
    Boolean,
    Column,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    insert,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from kernel.dburl import error_reason
from kernel.errors import ControlDbError
from storage.control import open_control

JobState = Literal["requested", "running", "completed", "failed"]
ACTIVE_STATES: tuple[JobState, ...] = ("requested", "running")
ALL_STATES: tuple[JobState, ...] = ("requested", "running", "completed", "failed")
MAX_FAILURE_CHARS = 500
WINDOW = timedelta(hours=24)

metadata = MetaData()
jobs_table = Table(
    "portal_exports", metadata,
    Column("request_id", String(40), primary_key=True),
    Column("tenant_id", String(200), nullable=False),
    Column("contact", String(254), nullable=False),
    Column("token_id", String(16), nullable=False),
    Column("excel", Boolean, nullable=False),
    Column("requested_at", String(40), nullable=False),
    Column("state", String(16), nullable=False),
    Column("active", Integer, nullable=True),
    Column("starter", String(16), nullable=True),
    Column("run_ref", String(80), nullable=True),
    Column("started_at", String(40), nullable=True),
    Column("heartbeat_at", String(40), nullable=True),
    Column("finished_at", String(40), nullable=True),
    Column("export_id", String(64), nullable=True),
    Column("failure", Text, nullable=True),
    Index("portal_exports_one_active", "tenant_id", "active", unique=True),
    Index("portal_exports_by_tenant", "tenant_id", "requested_at"),
)


def iso(moment: datetime) -> str:
    """UTC with microseconds: one text form, so stored times compare as strings."""
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


def new_request_id(now: datetime) -> str:
    """``req-20261126T101500Z-3f2a9c1b``: sortable, unguessable, unlike any export id."""
    return f"req-{now.astimezone(UTC):%Y%m%dT%H%M%SZ}-{secrets.token_hex(4)}"


def one_line(text: str) -> str:
    """A failure message as one bounded line."""
    line = " ".join(part.strip() for part in text.splitlines() if part.strip())
    return line if len(line) <= MAX_FAILURE_CHARS else line[:MAX_FAILURE_CHARS - 3] + "..."


@dataclass(frozen=True)
class Job:
    """One export request and where it stands."""

    request_id: str
    tenant_id: str
    contact: str
    token_id: str
    excel: bool
    requested_at: str
    state: JobState
    starter: str | None = None
    run_ref: str | None = None
    started_at: str | None = None
    heartbeat_at: str | None = None
    finished_at: str | None = None
    export_id: str | None = None
    failure: str | None = None

    @property
    def active(self) -> bool:
        """Requested or running."""
        return self.state in ACTIVE_STATES


class Busy(Exception):
    """The tenant already has an active request (``job`` is it, when still readable)."""

    def __init__(self, job: Job | None) -> None:
        super().__init__("an export of this tenant is already requested or running")
        self.job = job


class JobStore:
    """Rows of ``portal_exports``: create (one active per tenant), move forward, read."""

    def __init__(self, url: str, *, clock: Callable[[], datetime] | None = None) -> None:
        self._engine = open_control(url, metadata)
        self.clock = clock or (lambda: datetime.now(UTC))

    def close(self) -> None:
        """Release pooled connections."""
        self._engine.dispose()

    def create(self, tenant_id: str, contact: str, token_id: str, *, excel: bool) -> Job:
        """A new ``requested`` row; ``Busy`` when the tenant has an active one."""
        now = self.clock()
        job = Job(new_request_id(now), tenant_id, contact, token_id, excel, iso(now), "requested")
        try:
            with self._engine.begin() as conn:
                conn.execute(insert(jobs_table).values(
                    request_id=job.request_id, tenant_id=tenant_id, contact=contact,
                    token_id=token_id, excel=excel, requested_at=job.requested_at,
                    state="requested", active=1))
        except IntegrityError:
            raise Busy(self.active(tenant_id)) from None
        except SQLAlchemyError as err:
            raise ControlDbError(f"cannot record the export request: {error_reason(err)}",
                                 tenant_id=tenant_id) from err
        return job

    def counted_since(self, tenant_id: str, since: datetime) -> list[str]:
        """Request times (oldest first) of requests that reached a starter since ``since``."""
        where = (jobs_table.c.tenant_id == tenant_id, jobs_table.c.run_ref.is_not(None),
                 jobs_table.c.requested_at > iso(since))
        try:
            with self._engine.connect() as conn:
                return list(conn.execute(select(jobs_table.c.requested_at).where(*where)
                                         .order_by(jobs_table.c.requested_at)).scalars())
        except SQLAlchemyError as err:
            raise ControlDbError(f"cannot read export requests: {error_reason(err)}",
                                 tenant_id=tenant_id) from err

    def started(self, request_id: str, starter: str, run_ref: str) -> None:
        """The starter accepted the request: it now counts towards the daily limit, even
        when its run has already ended (a run that fails at once still ran)."""
        now = iso(self.clock())
        self._update(request_id, ALL_STATES, starter=starter, run_ref=run_ref,
                     heartbeat_at=now)

    def running(self, request_id: str, started_at: datetime | None = None) -> None:
        """The export is under way."""
        self._update(request_id, ACTIVE_STATES, state="running",
                     started_at=iso(started_at or self.clock()))

    def heartbeat(self, request_ids: list[str]) -> None:
        """The in-process runner of these requests is alive."""
        if request_ids:
            self._update_where(jobs_table.c.request_id.in_(request_ids), ACTIVE_STATES,
                               heartbeat_at=iso(self.clock()))

    def completed(self, request_id: str, export_id: str) -> None:
        """The package ``export_id`` is published."""
        self._update(request_id, ACTIVE_STATES, state="completed", active=None,
                     export_id=export_id, finished_at=iso(self.clock()))

    def failed(self, request_id: str, failure: str) -> None:
        """The request ended without a package; ``failure`` says why in one line."""
        self._update(request_id, ACTIVE_STATES, state="failed", active=None,
                     failure=one_line(failure), finished_at=iso(self.clock()))

    def get(self, tenant_id: str, request_id: str) -> Job | None:
        """One request of this tenant (another tenant's id finds nothing)."""
        rows = self._select(jobs_table.c.tenant_id == tenant_id,
                            jobs_table.c.request_id == request_id)
        return rows[0] if rows else None

    def active(self, tenant_id: str) -> Job | None:
        """The tenant's requested or running export, if any."""
        rows = self._select(jobs_table.c.tenant_id == tenant_id, jobs_table.c.active == 1)
        return rows[0] if rows else None

    def jobs(self, tenant_id: str) -> list[Job]:
        """Every request of the tenant, newest first."""
        return self._select(jobs_table.c.tenant_id == tenant_id)

    def claimed(self, tenant_id: str) -> set[str]:
        """Export ids that requests of this tenant completed with."""
        return {j.export_id for j in self.jobs(tenant_id) if j.export_id}

    def _update(self, request_id: str, states: tuple[JobState, ...], **values: Any) -> None:
        self._update_where(jobs_table.c.request_id == request_id, states, **values)

    def _update_where(self, where: Any, states: tuple[JobState, ...], **values: Any) -> None:
        """Only rows still in ``states`` move: a late update never revives a finished one."""
        try:
            with self._engine.begin() as conn:
                conn.execute(update(jobs_table).where(where, jobs_table.c.state.in_(states))
                             .values(**values))
        except SQLAlchemyError as err:
            raise ControlDbError(f"cannot update export requests: {error_reason(err)}") from err

    def _select(self, *where: Any) -> list[Job]:
        columns = [c for c in jobs_table.c if c.name != "active"]
        try:
            with self._engine.connect() as conn:
                rows = conn.execute(select(*columns).where(*where).order_by(
                    jobs_table.c.requested_at.desc())).all()
        except SQLAlchemyError as err:
            raise ControlDbError(f"cannot read export requests: {error_reason(err)}") from err
        return [Job(**row._asdict()) for row in rows]
