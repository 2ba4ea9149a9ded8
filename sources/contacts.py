"""A tenant's authorised contacts (Annex 1: at most two), read from the platform database.

They are read when a notice is sent and never stored elsewhere: addresses are personal data,
and the platform's table is the one place where a client changes them. Where they live is a
small rule (``ContactsRule``), by default the table ``tenant_contacts`` with the columns
``tenant_id``, ``email`` and ``language`` when the platform has it; a platform without such a
table has no contacts, and the notices say "not sent: the tenant has no authorised contact".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import Engine, column, inspect, select, table
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.sql.expression import ColumnClause

from kernel.dburl import error_reason
from kernel.errors import BadInput, SourceUnavailable
from kernel.ids import validate_tenant_id

MAX_CONTACTS = 2
DEFAULT_TABLE = "tenant_contacts"


class ContactsRule(BaseModel):
    """Where the platform keeps each tenant's authorised contacts (a catalog ``[contacts]``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    table: str | None = Field(default=None, description="Table of contacts; default "
                              f"{DEFAULT_TABLE!r} when the platform has it (none otherwise). "
                              "A table named here must exist.")
    db_schema: str | None = Field(default=None, description="Schema of the table (PostgreSQL).")
    tenant_column: str = Field(default="tenant_id", description="Column naming the tenant.")
    email_column: str = Field(default="email", description="Column holding the address.")
    language_column: str | None = Field(default="language", description="Column holding the "
                                        "contact's language (en, fr, de); None: English.")


@dataclass(frozen=True)
class Contacts:
    """The addresses to write to, and the language of the letter (the first contact's)."""

    addresses: tuple[str, ...] = ()
    language: str | None = None


def read_contacts(engine: Engine, rule: ContactsRule, tenant_id: str) -> Contacts:
    """The tenant's contacts, ordered by address so the language choice is stable.

    Raises:
        BadInput: a configured table that does not exist, or more than two contacts.
        SourceUnavailable: the database cannot be read.
    """
    validate_tenant_id(tenant_id)
    name = rule.table or DEFAULT_TABLE
    try:
        exists = inspect(engine).has_table(name, schema=rule.db_schema)
    except SQLAlchemyError as err:
        raise SourceUnavailable(f"cannot read the contacts table {name!r}: "
                                f"{error_reason(err)}", tenant_id=tenant_id) from err
    if not exists:
        if rule.table is not None:
            raise BadInput(f"the contacts table {name!r} does not exist in the platform "
                           "database", tenant_id=tenant_id)
        return Contacts()
    columns: list[ColumnClause[Any]] = [column(rule.email_column)]
    if rule.language_column:
        columns.append(column(rule.language_column))
    source = table(name, column(rule.tenant_column), *columns, schema=rule.db_schema)
    query = (select(*columns).select_from(source)
             .where(column(rule.tenant_column) == tenant_id)
             .order_by(column(rule.email_column)))
    try:
        with engine.connect() as conn:
            rows = conn.execute(query).all()
    except SQLAlchemyError as err:
        raise SourceUnavailable(f"cannot read the contacts of tenant {tenant_id!r} from "
                                f"{name!r}: {error_reason(err)}", tenant_id=tenant_id) from err
    found = [(str(row[0]).strip(), row[1] if len(row) > 1 else None) for row in rows
             if row[0] is not None and str(row[0]).strip()]
    distinct = {address.lower() for address, _ in found}
    if len(distinct) > MAX_CONTACTS:
        raise BadInput(f"tenant {tenant_id!r} has {len(distinct)} contacts in {name!r}; the "
                       f"terms allow at most {MAX_CONTACTS} authorised contacts (Annex 1): fix "
                       "the platform's table", tenant_id=tenant_id)
    language = next((str(lang) for _, lang in found if lang), None)
    return Contacts(tuple(address for address, _ in found), language)
