"""The catalog TOML of DESIGN §3.3: how the operator names, classifies and trims the platform's
tables. Only the shape is checked here; names are checked against the database by discovery
(:mod:`sources.classify`), so a typo is refused instead of being ignored.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from kernel.errors import BadInput
from sources.contacts import ContactsRule

_REFERENCE = re.compile(r"[^.\s]+(\.[^.\s]+)?\.[^.\s]+")


class TableRule(BaseModel):
    """Per-table override: ``[tables.NAME]``."""

    model_config = ConfigDict(extra="forbid")
    skip: bool = Field(default=False, description="Never exported (backed up when it reaches a "
                       "tenant); say why in ``reason``.")
    shared: bool = Field(default=False, description="Platform-wide data shared by all tenants: "
                         "never exported, never backed up per tenant, never warned about.")
    reason: str | None = Field(default=None, description="Why the table is skipped or shared; "
                               "recorded in the inventory.")
    exclude_columns: list[str] = Field(default_factory=list)
    references: dict[str, str] = Field(
        default_factory=dict,
        description="Relations the database does not declare: column = \"table.column\" "
        "(or \"schema.table.column\"); the target must be a primary key or unique.")

    @model_validator(mode="after")
    def _consistent(self) -> TableRule:
        if self.skip and self.shared:
            raise ValueError("a table is either skipped or shared, not both")
        bad = [t for t in self.references.values() if not _REFERENCE.fullmatch(t)]
        if bad:
            raise ValueError(f"references must read \"table.column\", got {bad[0]!r}")
        return self


class DocumentsRule(BaseModel):
    """Where uploaded documents are described, and how their keys are confined to a tenant."""

    model_config = ConfigDict(extra="forbid")
    table: str = "documents"
    id_column: str = "id"
    key_column: str = "storage_key"
    name_column: str = "filename"
    key_prefix: str | None = Field(
        default=None,
        description="Where a tenant's blobs must live, e.g. 'tenants/{tenant_id}/' (always a "
        "whole path segment): a key outside it fails the export instead of shipping another "
        "tenant's file.",
    )
    keys_tenant_scoped: bool | None = Field(
        default=None,
        description="false: keys are not confined to a per-tenant prefix (explicitly); every "
        "export then reports the keys its rows share with rows of other tenants.",
    )

    @model_validator(mode="after")
    def _consistent(self) -> DocumentsRule:
        if self.keys_tenant_scoped is False and self.key_prefix and "{tenant_id}" in (
                self.key_prefix):
            raise ValueError("key_prefix names a per-tenant prefix but keys_tenant_scoped is "
                             "false: keep one of the two")
        if self.keys_tenant_scoped and "{tenant_id}" not in (self.key_prefix or ""):
            raise ValueError("keys_tenant_scoped = true needs a key_prefix naming the tenant "
                             "(e.g. \"tenants/{tenant_id}/\")")
        if self.key_prefix is not None and not self.key_prefix.strip("/"):
            raise ValueError("key_prefix is empty")
        return self

    @property
    def has_key_rule(self) -> bool:
        """Whether the catalog says how keys relate to tenants: a per-tenant prefix, or
        explicitly none (a fixed prefix confines keys, but not to one tenant)."""
        return "{tenant_id}" in (self.key_prefix or "") or self.keys_tenant_scoped is False


class CatalogConfig(BaseModel):
    """The catalog TOML of DESIGN §3.3 (every key optional)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    tenant_column: str = "tenant_id"
    tenants_table: str = "tenants"
    tenants_id_column: str = "id"
    tenancy: Literal["column", "schema"] = "column"
    schema_pattern: str | None = Field(
        default=None, description="Schema-per-tenant: the schema of a tenant, e.g. "
        "'tenant_{tenant_id}' (characters other than letters, digits and '_' become '_').")
    db_schema: str | None = Field(default=None, alias="schema",
                                  description="The one schema to read (PostgreSQL).")
    schemas: list[str] | None = Field(
        default=None, description="PostgreSQL schemas holding platform tables (default: every "
        "non-system schema; with tenancy = \"schema\": every one the pattern does not match).")
    tables: dict[str, TableRule] = Field(default_factory=dict)
    documents: DocumentsRule = Field(default_factory=DocumentsRule)
    contacts: ContactsRule = Field(
        default_factory=ContactsRule, description="Where the platform keeps each tenant's "
        "authorised contacts (at most two), who receive the export and deletion notices.")

    @model_validator(mode="after")
    def _consistent(self) -> CatalogConfig:
        if self.tenancy == "schema":
            if not self.schema_pattern or "{tenant_id}" not in self.schema_pattern:
                raise ValueError("tenancy = \"schema\" needs schema_pattern containing "
                                 "{tenant_id}, e.g. \"tenant_{tenant_id}\"")
        elif self.schema_pattern is not None:
            raise ValueError("schema_pattern needs tenancy = \"schema\"")
        if self.db_schema is not None and self.schemas is not None:
            raise ValueError("use either schema or schemas")
        return self

    @property
    def shared_schemas(self) -> list[str] | None:
        """The schemas named by the catalog, or None for "every non-system schema" (except,
        per tenant, the tenants' own)."""
        if self.db_schema is not None:
            return [self.db_schema]
        return list(self.schemas) if self.schemas is not None else None

    @classmethod
    def load(cls, path: Path | None) -> CatalogConfig:
        """Read a catalog TOML, or the discovery defaults when no path is given."""
        if path is None:
            return cls()
        try:
            with path.open("rb") as handle:
                data = tomllib.load(handle)
        except OSError as err:
            raise BadInput(f"cannot read catalog {path}: {err.strerror or err}") from err
        except tomllib.TOMLDecodeError as err:
            raise BadInput(f"catalog {path} is not valid TOML: {err}") from err
        return cls.parse(data, str(path))

    @classmethod
    def parse(cls, data: dict[str, object], where: str = "catalog") -> CatalogConfig:
        """Validate a decoded catalog; the first problem becomes ``BadInput`` naming its key."""
        try:
            return cls.model_validate(data)
        except ValidationError as err:
            first = err.errors()[0]
            at = ".".join(str(p) for p in first["loc"])
            message = str(first["msg"]).removeprefix("Value error, ")
            raise BadInput(f"catalog {where}: {at + ': ' if at else ''}{message}") from err
