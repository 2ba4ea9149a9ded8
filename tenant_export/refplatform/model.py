"""The in-memory model that generates rows and, while it does, the ground truth of ownership.

Rows are produced table by table in dependency order, tenant by tenant, from one seeded
``random.Random``: the same spec gives the same rows on SQLite and on PostgreSQL. Each row comes
with its owner (a tenant index, or ``ORPHAN`` / ``CROSS`` / ``SHARED``), so the truth is known
from how the row was made, not from what the database says.

Ids of a table are allocated tenant after tenant, so a tenant's rows form one ``range`` of ids:
children pick parents from those ranges and nothing else per row is kept in memory.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta, timezone
from typing import TYPE_CHECKING

from .schema import TABLES, Table
from .spec import Key, PlatformSpec, tenant_ids

if TYPE_CHECKING:
    from collections.abc import Iterable

Row = tuple[object, ...]
Owned = Iterator[tuple[int, Row]]
ORPHAN, CROSS, SHARED = -1, -2, -3
TZS = [UTC, timezone(timedelta(hours=1)), timezone(timedelta(hours=2)),
       timezone(timedelta(hours=-5)), timezone(timedelta(hours=5, minutes=30))]
EPOCH_2015 = 1_420_070_400  # 2015-01-01T00:00:00Z
EPOCH_2025_07 = 1_751_328_000  # 2025-07-01T00:00:00Z, first activity_log partition
YEAR = 365 * 86_400
ORDINAL_2015 = date(2015, 1, 1).toordinal()


class Model:
    """Generator state: the seeded RNG, id counters, per-tenant id ranges, and the truth."""

    def __init__(self, spec: PlatformSpec, *, row_anomalies: bool = True,
                 schema_mode: bool = False) -> None:
        self.spec = spec
        self.rng = random.Random(spec.seed)  # noqa: S311 (test data, not a secret)
        self.tenants = tenant_ids(spec.tenants)
        self.anomalies = spec.anomalies and row_anomalies
        self.schema_mode = schema_mode
        self.ranges: dict[str, list[range]] = {}
        self.missing_blobs: list[str] = []
        self.blobs: dict[str, bytes] = {}
        self.refunds: list[tuple[int, int, int]] = []  # (payment id, tenant index, cents)
        self.orphan_registration: int | None = None
        self.next_id: dict[str, int] = {}
        content = [t.name for t in TABLES if t.kind != "shared"]
        self.owned: dict[str, dict[str, list[Key]]] = (
            {t: {name: [] for name in content} for t in self.tenants} if spec.track_truth else {})
        self.cross_tenant: dict[str, int] = {}
        self.orphans: dict[str, int] = {}
        self.row_counts: dict[str, int] = {}

    # -- helpers used by the row generators -------------------------------------------------
    def new_id(self, table: str) -> int:
        value = self.next_id.get(table, 1)
        self.next_id[table] = value + 1
        return value

    def per_tenant(self, table: str, count: int) -> Iterator[tuple[int, int, int]]:
        """(tenant index, row index within tenant, new id), recording each tenant's id range."""
        ranges = self.ranges.setdefault(table, [])
        for index in range(len(self.tenants)):
            start = self.next_id.get(table, 1)
            for j in range(count):
                yield index, j, self.new_id(table)
            ranges.append(range(start, self.next_id.get(table, 1)))

    def children(self, table: str, parent: str, count: Callable[[bool], int]) -> Iterator[
            tuple[int, int, int, bool]]:
        """(tenant, parent id, new id, first child of the tenant) for each tenant's parents;
        ``count(first_parent)`` says how many children a parent gets."""
        ranges = self.ranges.setdefault(table, [])
        for index, parents in enumerate(self.ranges[parent]):
            start = self.next_id.get(table, 1)
            for parent_id in parents:
                for _ in range(count(parent_id == parents.start)):
                    new = self.new_id(table)
                    yield index, parent_id, new, new == start
            ranges.append(range(start, self.next_id.get(table, 1)))

    def pick(self, table: str, index: int, none_one_in: int = 0) -> int | None:
        """A random id of the tenant's rows of ``table``; None once in ``none_one_in``."""
        ids = self.ranges[table][index]
        if not ids or (none_one_in and self.rng.randrange(none_one_in) == 0):
            return None
        return ids[self.rng.randrange(len(ids))]

    def stamp(self, start: int = EPOCH_2015, span: int = 11 * YEAR) -> str:
        at = start + self.rng.randrange(span)
        return datetime.fromtimestamp(at, TZS[self.rng.randrange(len(TZS))]).isoformat()

    def day(self, start: int = ORDINAL_2015, span: int = 11 * 365) -> str:
        return date.fromordinal(start + self.rng.randrange(span)).isoformat()

    def money(self, low: int = 0, high: int = 20_000) -> str:
        return cents(self.rng.randrange(low, high))

    # -- driving and recording --------------------------------------------------------------
    def generate(self) -> Iterator[tuple[Table, Owned]]:
        """Each table with its rows (owner, row); consume a table fully before the next."""
        from .rows_content import GENERATORS as CONTENT  # noqa: PLC0415 (they import Model)
        from .rows_people import GENERATORS as PEOPLE  # noqa: PLC0415

        generators = {**PEOPLE, **CONTENT}
        for table in TABLES:
            yield table, self._record(table, generators[table.name](self))
        for per_table in self.owned.values():
            for keys in per_table.values():
                keys.sort()

    def _record(self, table: Table, rows: Iterable[tuple[int, Row]]) -> Owned:
        positions = [table.names.index(c) for c in table.key(self.schema_mode)]
        name, count = table.name, 0
        for owner, row in rows:
            count += 1
            if owner >= 0:
                if self.owned:
                    self.owned[self.tenants[owner]][name].append(tuple(row[p] for p in positions))
            elif owner == ORPHAN:
                self.orphans[name] = self.orphans.get(name, 0) + 1
            elif owner == CROSS:
                self.cross_tenant[name] = self.cross_tenant.get(name, 0) + 1
            yield owner, row
        self.row_counts[name] = count


def cents(value: int) -> str:
    sign = "-" if value < 0 else ""
    return f"{sign}{abs(value) // 100}.{abs(value) % 100:02d}"
