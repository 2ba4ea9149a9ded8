"""The figures, kept in the control database so every process and machine reads the same.

A flow run is a short-lived process started by a worker, possibly on another machine: figures
held in its memory would vanish with it. So each run writes its figures here (one small upsert
per figure), and whatever serves ``/metrics`` renders the whole platform's figures from here.
The caller opens the engine (``storage.control.open_control(url, METADATA)`` in the wiring
layer): this stage owns its table, not the connection rules.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from sqlalchemy import Column, Engine, Float, MetaData, String, Table, case, select
from sqlalchemy.dialects import postgresql, sqlite

from kernel.errors import ControlDbError

METADATA = MetaData()
FIGURES = Table(
    "monitoring_figures", METADATA,
    Column("family", String(100), primary_key=True),
    Column("tenant_id", String(128), primary_key=True),
    Column("value", Float, nullable=False),
    Column("updated_at", Float, nullable=False, comment="Unix time of the last write"),
)


@dataclass(frozen=True)
class Figure:
    """One figure of one tenant."""

    family: str
    tenant_id: str
    value: float
    updated_at: float


class FigureStore:
    """Upserts and reads figures on an engine opened by the caller."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        dialect = engine.dialect.name
        if dialect not in ("sqlite", "postgresql"):
            raise ControlDbError(f"metrics need a SQLite or PostgreSQL control database, "
                                 f"not {dialect}")
        self._insert = sqlite.insert if dialect == "sqlite" else postgresql.insert

    def record(self, tenant_id: str, at: float, *, set_: Mapping[str, float] | None = None,
               add: Mapping[str, float] | None = None,
               raise_to: Mapping[str, float] | None = None) -> None:
        """Set gauges, add to counters and raise high-water marks (a gauge that never goes
        down, such as the time of the newest verified backup) of one tenant, in one
        transaction."""
        with self.engine.begin() as conn:
            for family, value in (raise_to or {}).items():
                stmt = self._insert(FIGURES).values(
                    family=family, tenant_id=tenant_id, value=value, updated_at=at)
                higher = case((stmt.excluded.value > FIGURES.c.value, stmt.excluded.value),
                              else_=FIGURES.c.value)
                conn.execute(stmt.on_conflict_do_update(
                    index_elements=["family", "tenant_id"],
                    set_={"value": higher, "updated_at": at}))
            for family, value in (set_ or {}).items():
                stmt = self._insert(FIGURES).values(
                    family=family, tenant_id=tenant_id, value=value, updated_at=at)
                conn.execute(stmt.on_conflict_do_update(
                    index_elements=["family", "tenant_id"],
                    set_={"value": stmt.excluded.value, "updated_at": at}))
            for family, delta in (add or {}).items():
                stmt = self._insert(FIGURES).values(
                    family=family, tenant_id=tenant_id, value=delta, updated_at=at)
                conn.execute(stmt.on_conflict_do_update(
                    index_elements=["family", "tenant_id"],
                    set_={"value": FIGURES.c.value + stmt.excluded.value, "updated_at": at}))

    def figures(self) -> list[Figure]:
        """Every figure, ordered by family and tenant."""
        with self.engine.connect() as conn:
            rows = conn.execute(select(FIGURES).order_by(FIGURES.c.family, FIGURES.c.tenant_id))
            return [Figure(r.family, r.tenant_id, r.value, r.updated_at) for r in rows]
