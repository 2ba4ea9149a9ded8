"""``catalog init``: a catalog TOML for review, every table classified and why (as comments).

It starts from the catalog in use (its rules are kept) or from discovery, and fills the gaps
with guesses an operator can check line by line: a table no rule classifies is marked
``shared`` unless a ``<parent>_id`` column names a tenant-scoped table (then that relation is
declared); columns whose names look like secrets are excluded; the documents key rule is found
by looking at where each tenant's keys live. Used as written, it lets export and backup run.
"""

from __future__ import annotations

import json
import re
import tomllib
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, inspect

from sources.catalog import Catalog, CatalogConfig, discover
from sources.catalog_config import TableRule
from sources.classify import toml_key
from sources.database import Snapshot
from sources.reflect import schema_name
from sources.tables import Place, TableEntry
from sources.tenants import all_tenants

SECRET = re.compile(r"passw|secret|token|api_?key|private_?key|(^|_)(salt|t?otp)(_|$)",
                    re.IGNORECASE)


def render_catalog(engine: Engine, config: CatalogConfig, source: str) -> str:
    """The catalog TOML text for the platform behind ``engine``."""
    config = _tenancy(engine, config)
    catalog = discover(engine, config)
    lines = [
        f"# Catalog written by `tenant-export catalog init` for {source}",
        f"# on {datetime.now(UTC).isoformat(timespec='seconds')}. Review every line: each table "
        "is classified, and a comment says why.",
        "# Lines marked REVIEW are guesses.",
        "",
        f"tenant_column = {_s(config.tenant_column)}",
        f"tenants_table = {_s(config.tenants_table)}",
        f"tenants_id_column = {_s(config.tenants_id_column)}",
    ]
    if config.tenancy == "schema":
        lines += ['tenancy = "schema"', f"schema_pattern = {_s(config.schema_pattern or '')}",
                  "# characters other than letters, digits and '_' in a tenant id become '_'"]
    if config.db_schema is not None:
        lines.append(f"schema = {_s(config.db_schema)}")
    elif config.schemas is not None:
        lines.append(f"schemas = {json.dumps(config.schemas)}")
    for title, status in (("Exported", "exported"), ("Skipped", "skipped"),
                          ("Shared", "shared"), ("Not classified by any rule yet", "unclassified"),
                          ("Partitions (read through their parent)", "partition"),
                          ("Views (listed, never exported)", "view")):
        entries = sorted((e for e in catalog.entries if e.status == status), key=lambda e: e.name)
        if entries:
            lines += ["", f"# -- {title} {'-' * max(3, 80 - len(title))}"]
        for entry in entries:
            lines += ["", *_table_lines(entry, config.tables.get(entry.name))]
    lines += ["", *_documents_lines(engine, catalog)]
    text = "\n".join(lines) + "\n"
    return _checked(engine, text)


def _table_lines(entry: TableEntry, rule: TableRule | None) -> list[str]:
    """A table's comment and, where a rule is needed, its ``[tables.NAME]`` section."""
    rule = rule or TableRule()
    key = toml_key(entry.name)
    lines = [f"# {entry.name}: {entry.status} — {entry.why}"]
    body: list[str] = []
    if entry.status == "unclassified":
        suggestion = entry.suggestion or f"[tables.{key}]\nshared = true"
        if ".references]" in suggestion:
            lines.append("# REVIEW: the relation below is guessed from the column's name")
        else:
            lines.append("# REVIEW: no relation reaches a tenant; marked shared (platform-wide "
                         "data). If it holds tenant content, declare the relation instead.")
        return [*lines, *suggestion.splitlines()]
    if entry.status in ("shared", "skipped"):
        body.append("shared = true" if entry.status == "shared" else "skip = true")
        if rule.reason or entry.reason:
            body.append(f"reason = {_s(rule.reason or entry.reason or '')}")
    if entry.status in ("exported", "skipped"):
        excluded = list(rule.exclude_columns)
        guessed = [c.name for c in entry.info.columns
                   if SECRET.search(c.name) and c.name not in excluded]
        if guessed:
            lines.append(f"# REVIEW: excluded because the name looks like a secret: "
                         f"{', '.join(guessed)}")
        if excluded or guessed:
            body.append(f"exclude_columns = {json.dumps([*excluded, *guessed])}")
    section = [f"[tables.{key}]", *body] if body else []
    if rule.references:
        section += ["", f"[tables.{key}.references]",
                    *(f"{toml_key(c)} = {_s(t)}" for c, t in rule.references.items())]
    return [*lines, *section]


def _documents_lines(engine: Engine, catalog: Catalog) -> list[str]:
    """The ``[documents]`` section, with the key rule kept or found from the keys in use."""
    rule = catalog.config.documents
    entry = catalog.entry(rule.table)
    if entry is None:
        return ["# No documents table: nothing goes into ZIP parts."]
    lines = ["[documents]", f"table = {_s(rule.table)}", f"id_column = {_s(rule.id_column)}",
             f"key_column = {_s(rule.key_column)}", f"name_column = {_s(rule.name_column)}"]
    kept = [f"key_prefix = {_s(rule.key_prefix)}"] if rule.key_prefix is not None else []
    if rule.has_key_rule:
        scoped = [] if rule.keys_tenant_scoped is None else [
            f"keys_tenant_scoped = {str(rule.keys_tenant_scoped).lower()}"]
        return [*lines, *kept, *scoped]
    prefix, outside = _guess_prefix(engine, catalog, entry)
    if prefix is not None:
        return [*lines, "# every tenant's keys lie under this prefix: a key outside it fails "
                "the export", f"key_prefix = {_s(prefix)}"]
    return [*lines, f"# REVIEW: {outside} keys lie under no per-tenant prefix; each export "
            "reports the keys its rows share with other tenants' rows",
            *kept, "keys_tenant_scoped = false"]


def _guess_prefix(engine: Engine, catalog: Catalog, entry: TableEntry
                  ) -> tuple[str | None, int]:
    """A ``.../{tenant_id}/`` prefix every key of a tenant-column documents table lies under,
    or None with how many keys do not."""
    scope, rule = entry.scope, catalog.config.documents
    if scope is None or scope.kind != "column" or scope.column is None:
        return None, 0
    template: str | None = None
    outside = 0
    with Snapshot(engine) as snap:
        sql = snap.sql
        statement = (f"SELECT {sql.quote(scope.column)}, {sql.quote(rule.key_column)} FROM "
                     f"{sql.table(Place(entry.info.schema, entry.info.table))}")
        for owner, stored in snap.rows(statement, [], f"table {entry.name!r}"):
            if not stored or owner is None:
                continue
            tenant, key = str(owner), str(stored)
            if template is None:
                segments = key.split("/")
                if tenant in segments[:-1]:
                    at = segments.index(tenant)
                    template = "/".join([*segments[:at], "{tenant_id}"]) + "/"
            if template is None or not key.startswith(template.replace("{tenant_id}", tenant)):
                outside += 1
    return (template, 0) if template is not None and not outside else (None, outside)


def _tenancy(engine: Engine, config: CatalogConfig) -> CatalogConfig:
    """Schema per tenant when no catalog says otherwise and every tenant has a schema named
    by one pattern (``tenant_<id>``), as django-tenants lays them out."""
    if config.tenancy == "schema" or engine.dialect.name != "postgresql" or config.tables:
        return config
    catalog = discover(engine, config)
    if catalog.tenants_info is None:
        return config
    with Snapshot(engine) as snap:
        tenants = all_tenants(catalog, snap)
    schemas = set(inspect(engine).get_schema_names())
    for tenant in tenants[:1]:
        for schema in sorted(schemas):
            tail = schema_name("{tenant_id}", tenant)
            if not schema.endswith(tail) or schema == tail:
                continue
            pattern = schema[: -len(tail)] + "{tenant_id}"
            if len(tenants) > 1 and all(schema_name(pattern, t) in schemas for t in tenants):
                data: dict[str, Any] = {**config.model_dump(by_alias=True, exclude_unset=True),
                                        "tenancy": "schema", "schema_pattern": pattern}
                return CatalogConfig.parse(data)
    return config


def _checked(engine: Engine, text: str) -> str:
    """The text, with what would still stop a run said at its top (it should be nothing)."""
    catalog = discover(engine, CatalogConfig.parse(tomllib.loads(text), "written by init"))
    problems = catalog.problems()
    if not problems:
        return text
    head = ["# REVIEW: a run would still refuse with this catalog:",
            *(f"#   {p}" for p in problems)]
    return "\n".join(head) + "\n" + text


def _s(value: str) -> str:
    """A TOML basic string (JSON's escapes are TOML's)."""
    return json.dumps(value, ensure_ascii=False)
