"""Every table of the platform classified: exported (with the path that scopes it to a tenant),
shared, skipped, a partition read through its parent, a view, or unclassified.

Scoping, in order: the tenants table by its id; a table with the tenant column by that column
(authoritative: its other relations do not matter); a table reaching tenant-scoped tables through
foreign keys (declared in the database or in the catalog) by those relations, level by level
(a table one relation away from a tenant-column table first). A row of such a table belongs to
a tenant when every non-NULL relation to a tenant-scoped parent leads to that tenant and at
least one does. Relations that would make ownership circular (a table referencing itself,
cycles of child tables) do not scope: a reply belongs to its post's tenant, not to its parent
comment's.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import replace

from kernel.errors import BadInput
from sources.catalog_config import CatalogConfig, TableRule
from sources.reflect import Reflected
from sources.tables import ForeignKey, Hop, Place, Scope, TableEntry, TableInfo

MAX_PATHS = 12
_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def toml_key(name: str) -> str:
    """A table name as a TOML key (quoted unless it is a bare key)."""
    if _BARE_KEY.fullmatch(name):
        return name
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def classify(reflected: Reflected, config: CatalogConfig) -> list[TableEntry]:
    """Every table and view with its class, or ``BadInput`` for a catalog naming what the
    database lacks (a typo must not let a secret column out or leave a table unscoped)."""
    rules = _rules(reflected, config)
    relations = _relations(reflected, rules)
    tenants = reflected.resolve(config.tenants_table)
    if tenants is not None and tenants.kind == "table" and tenants.column(
            config.tenants_id_column) is None:
        raise BadInput(f"table {tenants.name!r} has no column {config.tenants_id_column!r} to "
                       "filter tenants")
    scopes: dict[str, Scope] = {}
    levels: dict[str, int] = {}
    why: dict[str, str] = {}
    place = None
    if tenants is not None:
        id_column = tenants.column(config.tenants_id_column)
        place = Place(tenants.schema, tenants.table, config.tenants_id_column,
                      id_column.category if id_column else None)
    for info in _tables(reflected):
        rule = rules.get(info.name, TableRule())
        tenant_column = info.column(config.tenant_column)
        if place is not None and tenants is not None and info.name == tenants.name:
            if rule.shared:
                raise BadInput(f"catalog marks the tenants table {info.name!r} shared")
            scopes[info.name] = Scope("root", column=place.column, category=place.category,
                                      tenants=place)
            levels[info.name] = 0
        elif info.in_tenant_schema:
            if rule.shared:
                raise BadInput(f"catalog marks {info.name!r} shared, but it lives in every "
                               "tenant's own schema")
            scopes[info.name] = Scope("schema")
        elif not rule.shared and tenant_column is not None:
            scopes[info.name] = Scope("column", column=tenant_column.name,
                                      category=tenant_column.category, tenants=place)
            levels[info.name] = 0
    _scope_by_references(reflected, rules, relations, scopes, levels, why)
    return [replace(_entry(info, rules.get(info.name, TableRule()), scopes, why, reflected),
                    relations=relations.get(info.name, ()))
            for info in reflected.tables.values()]


def _tables(reflected: Reflected) -> Iterable[TableInfo]:
    return (t for t in reflected.tables.values() if t.kind == "table" and t.parent is None)


def _rules(reflected: Reflected, config: CatalogConfig) -> dict[str, TableRule]:
    """Catalog rules by catalog table name; unknown tables and columns are refused."""
    rules: dict[str, TableRule] = {}
    unknown = []
    for key, rule in config.tables.items():
        info = reflected.resolve(key)
        if info is None:
            unknown.append(key)
            continue
        if info.name in rules:
            raise BadInput(f"catalog names table {info.name!r} twice (as {key!r})")
        rules[info.name] = rule
        if rule.exclude_columns and info.kind != "table":
            raise BadInput(f"catalog excludes columns of {info.name!r}, which is a {info.kind}")
        missing = sorted(set(rule.exclude_columns) - {c.name for c in info.columns})
        if info.kind == "table" and missing:
            raise BadInput(f"catalog excludes columns that {info.name!r} lacks: "
                           f"{', '.join(missing)}")
    if unknown:
        raise BadInput(f"catalog names tables that do not exist: {', '.join(sorted(unknown))}")
    return rules


def _relations(reflected: Reflected, rules: dict[str, TableRule]
               ) -> dict[str, tuple[ForeignKey, ...]]:
    """Each table's relations: declared in the database plus those the catalog declares."""
    result = {name: info.foreign_keys for name, info in reflected.tables.items()}
    for name, rule in rules.items():
        info = reflected.tables[name]
        added = list(result[name])
        for column, target in rule.references.items():
            owner = info.column(column)
            if owner is None:
                raise BadInput(f"catalog references: {name!r} has no column {column!r}")
            table_ref, _, parent_column = target.rpartition(".")
            parent = reflected.resolve(table_ref)
            if parent is None or parent.kind != "table":
                raise BadInput(f"catalog references {name}.{column} = {target!r}: no table "
                               f"{table_ref!r}")
            if parent.column(parent_column) is None:
                raise BadInput(f"catalog references {name}.{column} = {target!r}: "
                               f"{parent.name!r} has no column {parent_column!r}")
            if not parent.is_unique((parent_column,)):
                raise BadInput(f"catalog references {name}.{column} = {target!r}: "
                               f"{parent.name}.{parent_column} is neither a primary key nor "
                               "unique, so a row could have several parents")
            declared = next((f for f in added if f.columns == (column,)), None)
            if declared is not None and (declared.parent, declared.parent_columns) != (
                    parent.name, (parent_column,)):
                raise BadInput(f"catalog references {name}.{column} = {target!r}, but the "
                               f"database declares {declared.describe(name)}")
            if declared is None:
                added.append(ForeignKey((column,), parent.name, (parent_column,), "catalog",
                                        owner.nullable))
        result[name] = tuple(added)
    return result


def _scope_by_references(reflected: Reflected, rules: dict[str, TableRule],
                         relations: dict[str, tuple[ForeignKey, ...]], scopes: dict[str, Scope],
                         levels: dict[str, int], why: dict[str, str]) -> None:
    """Breadth first from the tenant-scoped tables, then keep an acyclic set of relations."""
    candidates = [t.name for t in _tables(reflected) if t.name not in scopes
                  and not rules.get(t.name, TableRule()).shared]

    def usable(fk: ForeignKey) -> bool:
        parent = reflected.tables.get(fk.parent)
        return (fk.parent in levels and parent is not None
                and parent.is_unique(fk.parent_columns))

    level = 0
    while True:
        reached = [name for name in candidates if name not in levels and any(
            usable(fk) and levels[fk.parent] <= level for fk in relations[name])]
        if not reached:
            break
        level += 1
        for name in reached:
            levels[name] = level
    kept: dict[str, list[ForeignKey]] = {}
    later: list[tuple[str, ForeignKey]] = []
    for name in sorted(n for n in candidates if n in levels):
        kept[name] = []
        for fk in relations[name]:
            if fk.parent == name or not usable(fk):
                continue
            if levels[fk.parent] < levels[name]:
                kept[name].append(fk)
            else:
                later.append((name, fk))
    for name, fk in later:  # same or deeper level: only where it closes no cycle
        if fk.parent not in kept or not _reaches(kept, fk.parent, name):
            kept[name].append(fk)
        else:
            why[name] = (f"{fk.describe(name)} is not used for scoping (it would make "
                         "ownership circular)")
    built = dict(scopes)

    def build(name: str) -> Scope:
        if name not in built:
            hops = []
            for fk in kept[name]:
                parent = reflected.tables[fk.parent]
                hops.append(Hop(fk, Place(parent.schema, parent.table), build(fk.parent)))
            scope = Scope("references", hops=tuple(hops))
            built[name] = replace(scope, paths=tuple(_paths(name, scope)))
        return built[name]

    for name in kept:
        scopes[name] = build(name)


def _reaches(kept: dict[str, list[ForeignKey]], start: str, goal: str) -> bool:
    seen, todo = set(), [start]
    while todo:
        node = todo.pop()
        if node == goal:
            return True
        if node not in seen:
            seen.add(node)
            todo.extend(fk.parent for fk in kept.get(node, []))
    return False


def _paths(name: str, scope: Scope) -> list[str]:
    """Human-readable chains up to a tenant-scoped table: ``a.x_id → b.y_id → c.tenant_id``."""
    paths: list[str] = []

    def walk(table: str, hops: tuple[Hop, ...], trail: list[str]) -> None:
        for hop in hops:
            if len(paths) >= MAX_PATHS:
                return
            here = [*trail, f"{table}.{', '.join(hop.fk.columns)}"]
            if hop.scope.kind in ("root", "column"):
                paths.append(" → ".join([*here, f"{hop.fk.parent}.{hop.scope.column}"]))
            else:
                walk(hop.fk.parent, hop.scope.hops, here)

    walk(name, scope.hops, [])
    return paths


def _entry(info: TableInfo, rule: TableRule, scopes: dict[str, Scope], why: dict[str, str],
           reflected: Reflected) -> TableEntry:
    name = info.name
    if info.kind != "table":
        return TableEntry(info, "view", f"a {info.kind}: listed, never exported")
    if info.parent is not None:
        return TableEntry(info, "partition",
                          f"partition of {info.parent}: its rows are read once, through it")
    scope = scopes.get(name)
    excluded = tuple(rule.exclude_columns)
    note = f" ({why[name]})" if name in why else ""
    if rule.shared:
        return TableEntry(info, "shared", "marked shared in the catalog: platform-wide data, "
                          "never exported", reason=rule.reason)
    if rule.skip:
        reached = (f"backed up, reached through {scope.describe()}" if scope
                   else "no path to a tenant: not backed up either")
        return TableEntry(info, "skipped", f"skipped by the catalog; {reached}", scope=scope,
                          reason=rule.reason or "no reason given", excluded=excluded)
    if scope is not None:
        return TableEntry(info, "exported", f"scoped by {scope.describe()}{note}", scope=scope,
                          excluded=excluded)
    return TableEntry(info, "unclassified", "no tenant column and no foreign key reaching a "
                      "tenant-scoped table", suggestion=suggest(info, scopes, reflected))


def suggest(info: TableInfo, scopes: dict[str, Scope], reflected: Reflected) -> str:
    """The catalog lines that would classify an unclassified table: a relation guessed from a
    ``<parent>_id`` column when a tenant-scoped ``<parent>s`` table has a unique ``id``, else
    ``shared = true``."""
    guesses = []
    for column in info.columns:
        if not column.name.endswith("_id"):
            continue
        stem = column.name.removesuffix("_id")
        for parent_name in (stem + "s", stem + "es", stem):
            parent = reflected.tables.get(parent_name)
            if parent is not None and parent_name in scopes and parent.is_unique(("id",)):
                guesses.append(f'{toml_key(column.name)} = "{parent_name}.id"')
                break
    if guesses:
        return "\n".join([f"[tables.{toml_key(info.name)}.references]", *guesses])
    return f"[tables.{toml_key(info.name)}]\nshared = true"
