"""Recreating a snapshot's tables in an empty database: declared types where the target has
them, base types where it lacks them (reported), primary keys, NOT NULL and foreign keys.

Types: into the same kind of database each column keeps its declared type when the target
knows it; a PostgreSQL enum, domain or extension type (``citext``) that an empty database
lacks becomes its base type as the values were read (text; an array of it ``TEXT[]``). Across
kinds every column takes the generic type of its values (``BIGINT``, ``DOUBLE PRECISION``,
``BOOLEAN``, ``BYTEA``/``BLOB``, ``TEXT``). Every change is a :class:`TypeMapping`.

Foreign keys: only relations the platform's database declares, between tables of the snapshot,
onto the parent's primary key: a relation known only to the catalog was never enforced by the
platform, one onto a shared table would need that table, and unique constraints are not
recreated. PostgreSQL gets them after the data (``ALTER TABLE … ADD FOREIGN KEY``, the order
pg_restore uses), so self-references, cycles and load order never matter and each is checked
once; rows pointing outside the snapshot (another tenant's rows) make it ``NOT VALID``, with a
warning. SQLite can only declare them in ``CREATE TABLE``; the load runs with enforcement off
and ``PRAGMA foreign_key_check`` reports what does not hold.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import pyarrow as pa
from sqlalchemy import Engine

from kernel.arrowmeta import META_SOURCE_TYPE, META_TYPE_OF
from kernel.dburl import describe_url, driver_errors
from kernel.errors import VerificationFailed
from sources.loader import TableLoad, Transaction, fill, load_order, transaction


@dataclass(frozen=True)
class TypeMapping:
    """A column created with another type than the source declared."""

    table: str
    column: str
    source_type: str
    target_type: str


@dataclass(frozen=True)
class Relation:
    """A foreign key to declare in the target."""

    table: str
    columns: tuple[str, ...]
    parent: str
    parent_columns: tuple[str, ...]

    def describe(self) -> str:
        """``comments.post_id → posts.id``."""
        return (f"{self.table}.{', '.join(self.columns)} → "
                f"{self.parent}.{', '.join(self.parent_columns)}")


@dataclass
class Recreated:
    """What an empty-database restore did."""

    rows: dict[str, int] = field(default_factory=dict)
    type_mappings: list[TypeMapping] = field(default_factory=list)
    foreign_keys_declared: int = 0
    foreign_keys_not_declared: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def as_result(self) -> dict[str, Any]:
        """The result fields of the restore."""
        return {"rows": self.rows, "type_mappings": [asdict(m) for m in self.type_mappings],
                "foreign_keys": {"declared": self.foreign_keys_declared,
                                 "not_declared": self.foreign_keys_not_declared}}


def create_and_load(engine: Engine, source_backend: str, tables: Sequence[TableLoad],
                    tenant_id: str | None = None, *,
                    before_commit: Callable[[], None] | None = None) -> Recreated:
    """Create every table (parents first) and fill it, in one transaction; row counts checked,
    then foreign keys. ``before_commit`` runs last (a restore publishes its documents there);
    if it raises, nothing is committed."""
    ordered = load_order(tables)
    report = Recreated()
    types = column_types(engine, ordered, source_backend, report.type_mappings)
    relations = plan_relations(ordered, report.foreign_keys_not_declared)
    with transaction(engine, f"restoring into {describe_url(engine.url)}", tenant_id,
                     foreign_keys_off=True) as tx:
        for table in ordered:
            inline = [r for r in relations if r.table == table.name] if tx.sqlite else []
            tx.run(create_sql(tx, table, types[table.name], inline))
            fill(tx, tx.table(table.name), table)
            counted = int(tx.scalar(f"SELECT count(*) FROM {tx.table(table.name)}") or 0)
            report.rows[table.name] = counted
            if counted != table.expected_rows:
                raise VerificationFailed(f"table {table.name!r}: restored {counted} rows, the "
                                         f"manifest has {table.expected_rows}",
                                         tenant_id=tenant_id)
        if tx.sqlite:
            report.foreign_keys_declared = len(relations)
            report.warnings += _sqlite_violations(tx)
        else:
            for relation in relations:
                _add_foreign_key(tx, relation, report)
        if before_commit is not None:
            before_commit()
    return report


# -- types -----------------------------------------------------------------------------------


def _declared(field_: pa.Field) -> str:
    declared = (field_.metadata or {}).get(META_SOURCE_TYPE, b"").decode()
    return "" if declared == "NullType" else declared


def known_types(engine: Engine, declared: set[str]) -> set[str]:
    """The declared types a PostgreSQL target has (an empty database lacks the platform's
    enums, domains and extension types); every type on SQLite, which accepts any name."""
    if engine.dialect.name == "sqlite":
        return set(declared)
    known: set[str] = set()
    with engine.connect() as conn:
        for name in sorted(declared):
            try:
                if conn.exec_driver_sql("SELECT to_regtype(%(t)s)", {"t": name}).scalar():
                    known.add(name)
            except Exception:  # noqa: BLE001 - a name PostgreSQL cannot parse is not a type
                conn.rollback()
    return known


def generic_type(field_: pa.Field, backend: str) -> str:
    """The type a column's values need when its declared type is not available."""
    kind = field_.type
    if pa.types.is_integer(kind):
        return "BIGINT"
    if pa.types.is_floating(kind):
        return "REAL" if backend == "sqlite" or pa.types.is_float32(kind) else (
            "DOUBLE PRECISION")
    if pa.types.is_boolean(kind):
        return "BOOLEAN"
    if pa.types.is_binary(kind) or pa.types.is_large_binary(kind):
        return "BLOB" if backend == "sqlite" else "BYTEA"
    if backend == "postgresql" and _declared(field_).endswith("[]"):
        return "TEXT[]"  # an array of a type the target lacks: its text rendering parses
    return "TEXT"


def column_types(engine: Engine, tables: Sequence[TableLoad], source_backend: str,
                 mappings: list[TypeMapping]) -> dict[str, list[tuple[pa.Field, str]]]:
    """Each table's columns with the type to create them with; changes appended to
    ``mappings``."""
    backend = engine.dialect.name
    same = backend == source_backend
    fields = {t.name: [f for f in t.schema if META_TYPE_OF not in (f.metadata or {})]
              for t in tables}
    wanted = {_declared(f) for fs in fields.values() for f in fs if _declared(f)}
    known = known_types(engine, wanted) if same else set()
    result: dict[str, list[tuple[pa.Field, str]]] = {}
    for table in tables:
        columns: list[tuple[pa.Field, str]] = []
        for f in fields[table.name]:
            declared = _declared(f)
            keep = declared in known or (same and backend == "sqlite" and not declared)
            chosen = declared if keep else generic_type(f, backend)
            if " ".join(chosen.upper().split()) != " ".join(declared.upper().split()):
                mappings.append(TypeMapping(table.name, f.name, declared, chosen))
            columns.append((f, chosen))
        result[table.name] = columns
    return result


# -- statements ------------------------------------------------------------------------------


def plan_relations(tables: Sequence[TableLoad], skipped: list[dict[str, Any]]
                   ) -> list[Relation]:
    """The foreign keys to declare; the others appended to ``skipped`` with the reason."""
    by_name = {t.name: t for t in tables}
    declare: list[Relation] = []
    for table in tables:
        for fk in table.foreign_keys:
            parent = by_name.get(fk.parent)
            reason = None
            if fk.origin != "database":
                reason = "declared only in the catalog: the platform's database never enforced it"
            elif parent is None:
                reason = f"parent table {fk.parent!r} is not in the snapshot (shared or skipped)"
            elif set(fk.parent_columns) != set(parent.primary_key) or not parent.primary_key:
                reason = (f"it references {', '.join(fk.parent_columns)}, which is not the "
                          f"primary key of {fk.parent!r} (unique constraints are not restored)")
            elif not set(fk.columns) <= set(table.columns):
                reason = "its columns are not in the snapshot"
            if reason is None:
                declare.append(Relation(table.name, fk.columns, fk.parent, fk.parent_columns))
            else:
                skipped.append({"table": table.name, "columns": list(fk.columns),
                                "parent": fk.parent, "parent_columns": list(fk.parent_columns),
                                "reason": reason})
    return declare


def create_sql(tx: Transaction, table: TableLoad, columns: list[tuple[pa.Field, str]],
               inline: list[Relation]) -> str:
    """``CREATE TABLE`` with types, NOT NULL, the primary key and (SQLite) foreign keys."""
    key = [c for c in table.primary_key if c in table.columns]
    parts = []
    for f, declared in columns:
        # SQLite: INT has INTEGER's affinity but is not the rowid alias, which would refuse or
        # renumber values SQLite's loose typing let the source keep ('abc', 2.5, NULL)
        alias = tx.sqlite and key == [f.name] and declared.upper() == "INTEGER"
        kind = "INT" if alias else declared
        not_null = "NOT NULL" if f.name in table.not_null else ""
        parts.append(" ".join(p for p in (tx.quote(f.name), kind, not_null) if p))
    if key:
        parts.append(f"PRIMARY KEY ({', '.join(tx.quote(c) for c in key)})")
    parts += [f"FOREIGN KEY ({', '.join(tx.quote(c) for c in r.columns)}) REFERENCES "
              f"{tx.quote(r.parent)} ({', '.join(tx.quote(c) for c in r.parent_columns)})"
              for r in inline]
    return f"CREATE TABLE {tx.table(table.name)} ({', '.join(parts)})"


def _add_foreign_key(tx: Transaction, relation: Relation, report: Recreated) -> None:
    """PostgreSQL, after the data: declared, NOT VALID when rows point outside the snapshot,
    or reported with the database's reason (columns of incompatible types)."""
    child, parent = tx.table(relation.table), tx.table(relation.parent)
    cols = ", ".join(tx.quote(c) for c in relation.columns)
    parent_cols = ", ".join(tx.quote(c) for c in relation.parent_columns)
    is_set = " AND ".join(f"c.{tx.quote(c)} IS NOT NULL" for c in relation.columns)
    match = " AND ".join(f"p.{tx.quote(pc)} = c.{tx.quote(c)}"
                         for c, pc in zip(relation.columns, relation.parent_columns, strict=True))
    dangling = 0

    def add() -> None:
        nonlocal dangling
        dangling = int(tx.scalar(f"SELECT count(*) FROM {child} c WHERE {is_set} AND NOT "
                                 f"EXISTS (SELECT 1 FROM {parent} p WHERE {match})") or 0)
        tail = " NOT VALID" if dangling else ""
        tx.run(f"ALTER TABLE {child} ADD FOREIGN KEY ({cols}) REFERENCES {parent} "
               f"({parent_cols}){tail}")

    reason = tx.attempt(add)
    if reason is not None:
        report.foreign_keys_not_declared.append({
            "table": relation.table, "columns": list(relation.columns),
            "parent": relation.parent, "parent_columns": list(relation.parent_columns),
            "reason": f"the target refused it: {reason}"})
        return
    report.foreign_keys_declared += 1
    if dangling:
        report.warnings.append(
            f"{dangling} row(s) of {relation.table!r} reference rows of {relation.parent!r} "
            f"that are not in the snapshot ({relation.describe()}): the foreign key is "
            "declared NOT VALID (checked for new rows only)")


def _sqlite_violations(tx: Transaction) -> list[str]:
    """Rows whose declared foreign key does not hold, counted per table and parent."""
    try:
        found = tx.rows("PRAGMA main.foreign_key_check")
    except driver_errors() as err:  # a declaration SQLite cannot check ("mismatch")
        return [f"the restored foreign keys cannot be checked: {err}"]
    counts = Counter((str(r[0]), str(r[2])) for r in found)
    return [f"{n} row(s) of {table!r} reference rows of {parent!r} that are not in the "
            "snapshot: the foreign key is declared, and SQLite enforces it only on "
            "connections with PRAGMA foreign_keys = ON"
            for (table, parent), n in sorted(counts.items())]
