"""The catalog TOML the pipeline needs for this platform (DESIGN §3.3).

Shared lookups are marked ``shared``, the relations the database does not declare are given as
``references``, the password hash is excluded, and documents live under the tenant's prefix.
PostgreSQL partitions are skipped: their rows are the parent's rows, exported once through it.
"""

from __future__ import annotations

from .schema import TABLES


def catalog_toml(*, partitions: list[str], schema_per_tenant: bool = False) -> str:
    lines = ['tenant_column = "tenant_id"']
    if schema_per_tenant:
        lines += ['tenancy = "schema"',
                  "# '-' in a tenant id becomes '_' in its schema name",
                  'schema_pattern = "tenant_{tenant_id}"']
    for table in TABLES:
        if table.kind == "shared":
            lines += ["", f"[tables.{table.name}]", "shared = true"]
    lines += ["", "[tables.members]", 'exclude_columns = ["password_hash"]']
    for table in TABLES:
        undeclared = [c for c in table.columns if c.ref and not c.declared]
        if undeclared:
            lines += ["", f"[tables.{table.name}.references]"]
            lines += [f'{c.name} = "{c.ref[0]}.{c.ref[1]}"' for c in undeclared if c.ref]
    for partition in partitions:
        lines += ["", f"[tables.{partition}]", "skip = true"]
    lines += ["", "[documents]", 'table = "documents"', 'key_column = "storage_key"',
              'name_column = "filename"', 'key_prefix = "tenants/{tenant_id}/"']
    return "\n".join(lines) + "\n"
