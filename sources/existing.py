"""Loading a snapshot into a schema that already exists: one the platform's own migrations made
(``restore --data-only``), or the live platform database (``--in-place``,
:mod:`sources.inplace`).

Where each snapshot table lives in the target, and whether the snapshot fits it, is settled
before anything is written: a missing table or column, or a NOT NULL column without default
that the snapshot cannot fill, is refused naming each. Then, in one transaction, every table is
staged in a temporary table (typed like its target table on PostgreSQL, so values parse as the
target types them; untyped on SQLite, so each value keeps its storage class until the target's
affinity applies, as it did in the source) and moved with set-based statements in foreign-key
order. PostgreSQL checks a statement's foreign keys when the statement ends, so a
self-referencing table needs no row order, and the platform's DEFERRABLE constraints wait for
the commit. Identity and serial sequences are advanced past the restored ids, never moved back.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Engine

from kernel.dburl import describe_url
from kernel.errors import BadInput, VerificationFailed
from sources.loader import TableLoad, Transaction, fill, load_order, transaction

Place = tuple[str | None, str]  # (schema, table) in the target

_PG_COLUMNS = """
SELECT n.nspname, c.relname, a.attname, format_type(a.atttypid, a.atttypmod),
       NOT a.attnotnull, a.atthasdef OR a.attidentity <> '',
       pg_get_serial_sequence(quote_ident(n.nspname) || '.' || quote_ident(c.relname), a.attname)
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition AND c.relname = ANY(%s)
  AND n.nspname <> 'information_schema' AND left(n.nspname, 3) <> 'pg_'
ORDER BY n.nspname, c.relname, a.attnum
"""


@dataclass(frozen=True)
class TargetColumn:
    """A column of a target table."""

    name: str
    type: str
    nullable: bool
    has_default: bool


@dataclass(frozen=True)
class TargetTable:
    """A table of the target: where it is, its columns, and (PostgreSQL) the sequences that
    fill its identity and serial columns, as ``(column, sequence)``."""

    schema: str | None
    name: str
    columns: tuple[TargetColumn, ...]
    sequences: tuple[tuple[str, str], ...] = ()

    def column(self, name: str, sqlite: bool) -> TargetColumn | None:
        """The column called ``name`` (SQLite ignores case in names)."""
        wanted = name.casefold() if sqlite else name
        return next((c for c in self.columns
                     if (c.name.casefold() if sqlite else c.name) == wanted), None)


@dataclass(frozen=True)
class Staged:
    """A snapshot table staged beside its target table."""

    load: TableLoad
    target: TargetTable
    ref: str  # the target table, quoted
    stage: str  # the temporary table, quoted
    columns: tuple[str, ...]
    key: tuple[str, ...]
    rows: int


@dataclass
class Loaded:
    """What a data-only restore did."""

    rows: dict[str, int] = field(default_factory=dict)
    sequences: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def existing_tables(tx: Transaction, names: set[str]) -> dict[Place, TargetTable]:
    """The target's tables called one of ``names`` (bare or ``schema.table``), partitions
    excluded (they are written through their parent)."""
    bare = {n.rpartition(".")[2] for n in names} | set(names)
    found: dict[Place, TargetTable] = {}
    if tx.sqlite:
        wanted = {n.casefold() for n in bare}
        for (name,) in tx.rows("SELECT name FROM main.sqlite_master WHERE type = 'table'"):
            if str(name).casefold() not in wanted:
                continue
            info = tx.rows(f"PRAGMA main.table_info({tx.quote(str(name))})")
            keys = [r for r in info if r[5]]
            columns = tuple(TargetColumn(
                str(r[1]), str(r[2]), not r[3],
                r[4] is not None or (len(keys) == 1 and bool(r[5])
                                     and str(r[2]).upper() == "INTEGER")) for r in info)
            found[(None, str(name))] = TargetTable(None, str(name), columns)
        return found
    grouped: dict[Place, list[tuple[Any, ...]]] = {}
    for row in tx.rows(_PG_COLUMNS, [sorted(bare)]):
        grouped.setdefault((str(row[0]), str(row[1])), []).append(row)
    for (schema, name), rows in grouped.items():
        found[(schema, name)] = TargetTable(
            schema, name, tuple(TargetColumn(str(r[2]), str(r[3]), bool(r[4]), bool(r[5]))
                                for r in rows),
            tuple((str(r[2]), str(r[6])) for r in rows if r[6]))
    return found


def locate(tx: Transaction, name: str, schema: str | None, found: dict[Place, TargetTable],
           default_schema: str | None) -> TargetTable | str:
    """The target table a snapshot table goes to, or why there is none. A bare name is looked
    up in ``schema`` (when the manifest says where the backup read it), then as
    ``schema.table``, then in every schema (the default one first)."""
    if tx.sqlite:
        matches = [t for (_, n), t in found.items() if n.casefold() == name.casefold()]
        return matches[0] if matches else f"table {name!r} is missing"
    if schema is not None:
        exact = found.get((schema, name))
        return exact if exact else f"table {schema}.{name} is missing"
    head, dot, tail = name.partition(".")
    if dot and (head, tail) in found:
        return found[(head, tail)]
    matches = [t for (_, n), t in found.items() if n == name]
    if len(matches) > 1:
        preferred = [t for t in matches if t.schema == default_schema]
        if preferred:
            return preferred[0]
        return (f"table {name!r} exists in several schemas "
                f"({', '.join(sorted(str(t.schema) for t in matches))})")
    return matches[0] if matches else f"table {name!r} is missing"


def fits(tx: Transaction, load: TableLoad, target: TargetTable) -> list[str]:
    """Why the snapshot's rows of a table cannot go into ``target`` (empty: they can)."""
    missing = [c for c in load.columns if target.column(c, tx.sqlite) is None]
    names = {c.casefold() if tx.sqlite else c for c in load.columns}
    unfilled = [c.name for c in target.columns if not c.nullable and not c.has_default
                and (c.name.casefold() if tx.sqlite else c.name) not in names]
    where = f"{target.schema}.{target.name}" if target.schema else target.name
    problems = []
    if missing:
        problems.append(f"table {where} has no column(s) {', '.join(missing)}")
    if unfilled:
        problems.append(f"table {where} has NOT NULL column(s) without default that the "
                        f"snapshot does not have: {', '.join(unfilled)}")
    return problems


def place_tables(tx: Transaction, tables: Sequence[TableLoad],
                 places: Mapping[str, Place] | None = None, *, also: Sequence[str] = ()
                 ) -> tuple[list[tuple[TableLoad, TargetTable]], dict[Place, TargetTable]]:
    """Each table with its target table (``places``: where each must be, by table name), and
    every target table found (``also``: other names to look up); ``BadInput`` naming every
    difference when the snapshot does not fit the target's schema."""
    found = existing_tables(tx, {t.name for t in tables} | {p[1] for p in (places or {}).values()}
                            | set(also))
    default = None if tx.sqlite else tx.scalar("SELECT current_schema()")
    placed: list[tuple[TableLoad, TargetTable]] = []
    problems: list[str] = []
    for load in tables:
        if places is not None and load.name in places:
            schema, name = places[load.name]
            target: TargetTable | str = found.get((schema, name)) or (
                f"table {schema + '.' if schema else ''}{name} is missing")
        else:
            target = locate(tx, load.name, load.db_schema, found, default)
        if isinstance(target, str):
            problems.append(target)
            continue
        problems += fits(tx, load, target)
        placed.append((load, target))
    if problems:
        raise BadInput("the target's schema does not fit the snapshot: " + "; ".join(problems)
                       + " (nothing was written)")
    return placed, found


def stage(tx: Transaction, load: TableLoad, target: TargetTable, index: int,
          tenant_id: str | None) -> Staged:
    """The snapshot's rows of one table in a temporary table; the count checked."""
    ref = tx.table(target.name, target.schema)
    columns = load.columns
    name = tx.quote(f"te_stage_{index}")
    if tx.sqlite:
        tx.run(f"CREATE TEMP TABLE {name} ({', '.join(tx.quote(c) for c in columns)})")
        staged = f"temp.{name}"
    else:
        tx.run(f"CREATE TEMP TABLE {name} ON COMMIT DROP AS SELECT "
               f"{', '.join(tx.quote(c) for c in columns)} FROM {ref} WITH NO DATA")
        staged = f"pg_temp.{name}"
    rows = fill(tx, staged, load)
    if rows != load.expected_rows:
        raise VerificationFailed(f"table {load.name!r}: read {rows} rows, the manifest has "
                                 f"{load.expected_rows}", tenant_id=tenant_id)
    key = tuple(c for c in load.primary_key if c in columns)
    return Staged(load, target, ref, staged, columns, key, rows)


def key_match(tx: Transaction, left: str, right: str, columns: Sequence[str]) -> str:
    """``left.k1 = right.k1 AND …``."""
    return " AND ".join(f"{left}.{tx.quote(c)} = {right}.{tx.quote(c)}" for c in columns)


def move_sql(tx: Transaction, staged: Staged, where: str = "") -> str:
    """``INSERT INTO target SELECT … FROM stage`` (explicit columns; PostgreSQL identity
    columns take the snapshot's values)."""
    cols = ", ".join(tx.quote(c) for c in staged.columns)
    values = ", ".join(f"s.{tx.quote(c)}" for c in staged.columns)
    overriding = "" if tx.sqlite else " OVERRIDING SYSTEM VALUE"
    return (f"INSERT INTO {staged.ref} ({cols}){overriding} SELECT {values} "
            f"FROM {staged.stage} s{where}")


def advance_sequences(tx: Transaction, staged: Sequence[Staged]) -> list[dict[str, Any]]:
    """PostgreSQL: identity and serial sequences moved past the ids now in their tables (never
    back: other tenants' rows draw from them too)."""
    advanced: list[dict[str, Any]] = []
    for table in staged:
        for column, sequence in table.target.sequences:
            if column not in table.columns:
                continue
            value = tx.scalar(
                f"SELECT setval(%s::regclass, x.m) FROM (SELECT max({tx.quote(column)}) AS m "
                f"FROM {table.ref}) x, {sequence.replace('%', '%%')} q WHERE x.m IS NOT NULL "
                "AND x.m > CASE WHEN q.is_called THEN q.last_value ELSE q.last_value - 1 END",
                [sequence])
            if value is not None:
                advanced.append({"table": table.load.name, "column": column,
                                 "sequence": sequence, "value": int(value)})
    return advanced


def drop_stages(tx: Transaction, staged: Sequence[Staged]) -> None:
    """The temporary tables go before the commit (SQLite would keep them on the connection)."""
    for table in staged:
        tx.run(f"DROP TABLE {table.stage}")


def load_existing(engine: Engine, tables: Sequence[TableLoad], tenant_id: str, *,
                  owner_columns: Mapping[str, str] | None = None,
                  before_commit: Callable[[], None] | None = None) -> Loaded:
    """Insert a snapshot into the platform's schema, parents first, in one transaction.

    Refused (``BadInput``, nothing written) when the schema does not fit, when the target
    already holds rows of the tenant (rows with the snapshot's keys, or rows whose
    ``owner_columns[table]`` is the tenant id), or (PostgreSQL) when rows reference rows of a
    table outside the snapshot that the target lacks.
    """
    ordered = load_order(tables)
    report = Loaded()
    parents = {fk.parent for t in ordered for fk in t.foreign_keys}
    with transaction(engine, f"restoring into {describe_url(engine.url)}", tenant_id) as tx:
        placed, found = place_tables(tx, ordered, also=sorted(parents))
        staged = [stage(tx, load, target, i, tenant_id)
                  for i, (load, target) in enumerate(placed, 1)]
        _refuse_tenant_rows(tx, staged, owner_columns or {}, tenant_id)
        _check_outside_parents(tx, staged, found, report, tenant_id)
        for table in staged:
            moved = tx.run(move_sql(tx, table))
            if moved != table.rows:
                raise VerificationFailed(f"table {table.load.name!r}: inserted {moved} of "
                                         f"{table.rows} rows", tenant_id=tenant_id)
            report.rows[table.load.name] = moved
        if not tx.sqlite:
            report.sequences = advance_sequences(tx, staged)
        drop_stages(tx, staged)
        if before_commit is not None:
            before_commit()
    return report


def _refuse_tenant_rows(tx: Transaction, staged: Sequence[Staged], owner_columns: Mapping[
        str, str], tenant_id: str) -> None:
    held = []
    for table in staged:
        count = 0
        if table.key:
            count = int(tx.scalar(
                f"SELECT count(*) FROM {table.stage} s WHERE EXISTS (SELECT 1 FROM {table.ref} "
                f"t WHERE {key_match(tx, 't', 's', table.key)})") or 0)
        column = owner_columns.get(table.load.name)
        if column and table.target.column(column, tx.sqlite) is not None:
            count = max(count, int(tx.scalar(
                f"SELECT count(*) FROM {table.ref} t WHERE CAST(t.{tx.quote(column)} AS TEXT) "
                f"= {tx.param}", [tenant_id]) or 0))
        if count:
            held.append(f"{table.load.name} ({count} row(s))")
    if held:
        raise BadInput(f"the target already holds rows of tenant {tenant_id!r} (rows of the "
                       f"tenant, or with the snapshot's keys): {', '.join(held)}; a data-only "
                       "restore loads into a database without them (nothing was written)",
                       tenant_id=tenant_id)


def _check_outside_parents(tx: Transaction, staged: Sequence[Staged],
                           found: dict[Place, TargetTable], report: Loaded,
                           tenant_id: str) -> None:
    """Rows pointing at a table outside the snapshot (a shared table) need its rows in the
    target: refused on PostgreSQL (its foreign key would fail), a warning on SQLite."""
    inside = {t.load.name for t in staged}
    default = None if tx.sqlite else tx.scalar("SELECT current_schema()")
    problems = []
    for table in staged:
        for fk in table.load.foreign_keys:
            if fk.origin != "database" or fk.parent in inside or not set(fk.columns) <= set(
                    table.columns):
                continue
            parent = locate(tx, fk.parent, None, found, default)
            if isinstance(parent, str):
                problems.append(f"{parent} (referenced by {fk.describe(table.load.name)})")
                continue
            is_set = " AND ".join(f"s.{tx.quote(c)} IS NOT NULL" for c in fk.columns)
            match = " AND ".join(f"p.{tx.quote(pc)} = s.{tx.quote(c)}"
                                 for c, pc in zip(fk.columns, fk.parent_columns, strict=True))
            count = int(tx.scalar(
                f"SELECT count(*) FROM {table.stage} s WHERE {is_set} AND NOT EXISTS (SELECT 1 "
                f"FROM {tx.table(parent.name, parent.schema)} p WHERE {match})") or 0)
            if count:
                problems.append(f"{count} row(s) reference rows the target lacks "
                                f"({fk.describe(table.load.name)})")
    if problems and not tx.sqlite:
        raise BadInput("the snapshot's rows reference tables outside it: "
                       + "; ".join(problems) + "; load the platform's shared rows first "
                       "(nothing was written)", tenant_id=tenant_id)
    report.warnings += [f"{p}: SQLite does not enforce the foreign key" for p in problems]
