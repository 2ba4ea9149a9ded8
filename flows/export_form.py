"""The export form as an operator sees it in the Prefect UI, and as programs call the flow.

Every field has a title in words and a description. The form itself refuses what cannot run:
the tenant id and the link lifetime carry their patterns in the JSON schema (so the UI shows
the field as invalid before anything starts), and the model checks them again with the
kernel's own rules. Programs may still pass ``link_ttl_seconds`` (seconds, as the portal always
did); the form shows only the duration an operator types (``7d``, ``36h``).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic.json_schema import SkipJsonSchema

from exporters.csv_writer import DEFAULT_DIALECT, CsvDialect
from kernel.errors import BadInput
from kernel.ids import validate_tenant_id
from kernel.timeparse import MAX_LINK_TTL_SECONDS, parse_link_ttl

# kernel.ids' rule as a JSON-schema (ECMAScript and Python ``re``) pattern: 1-128 letters,
# digits, '.', '_' or '-', starting with a letter or digit, never '..'.
TENANT_ID_PATTERN = r"^(?!.*\.\.)[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
# kernel.timeparse's durations of 1 s up to 7 days: seconds (optionally with s), minutes,
# hours or days, leading zeros allowed, surrounding spaces too.
LINK_TTL_PATTERN = (
    r"^\s*0*(?:"
    r"(?:[1-9][0-9]{0,4}|[1-5][0-9]{5}|60[0-3][0-9]{3}|604[0-7][0-9]{2}|604800)\s*s?"
    r"|(?:[1-9][0-9]{0,3}|100[0-7][0-9]|10080)\s*m"
    r"|(?:[1-9][0-9]?|1[0-5][0-9]|16[0-8])\s*h"
    r"|[1-7]\s*d"
    r")\s*$"
)
LEGACY_TTL = "link_ttl_seconds"


def _open_to_programs(schema: dict[str, Any]) -> None:
    """The form does not show ``link_ttl_seconds``; a server that enforces parameter schemas
    must still let programs pass it (the model itself refuses any unknown field)."""
    schema.pop("additionalProperties", None)


class ExportRequest(BaseModel):
    """Export one tenant: every table as CSV and .xlsx, the documents as ZIP, a guide in the
    tenant's language, verified, with expiring download links."""

    model_config = ConfigDict(extra="forbid", title="Export request",
                              json_schema_extra=_open_to_programs)

    tenant_id: str = Field(
        title="Tenant",
        description="The tenant's id as the platform database lists it (for example "
        "harbour-rowing): letters, digits, '.', '_' or '-'.",
        json_schema_extra={"pattern": TENANT_ID_PATTERN, "maxLength": 128})
    link_ttl: str = Field(
        default="7d", title="Links stay valid for",
        description="How long the download links work, as a duration: 7d, 36h, 90m or a "
        "number of seconds. At most 7 days (signed S3 links cannot live longer); fresh links "
        "can be made for as long as the package is kept.",
        json_schema_extra={"pattern": LINK_TTL_PATTERN})
    excel: bool = Field(
        default=False, title="CSV files prepared for Excel",
        description="Start every CSV file with a byte-order mark and put an apostrophe before "
        "texts a spreadsheet would run as a formula (=, +, -, @). The package always holds "
        "an .xlsx workbook of each table as well; leave this off for the exact CSV.")
    excel_semicolon: bool = Field(
        default=False, title="… with ';' as separator",
        description="The Excel preparation with ';' between fields, as spreadsheets set to "
        "German, French and other languages that write decimals with a comma expect.")
    notify: bool = Field(
        default=True, title="Tell the tenant's contacts",
        description="Email the tenant's authorised contacts (at most two) that the export is "
        "ready: file names and sizes, never a link. Turn off when the caller sends its own "
        "notice (an offboarding case does).")
    links_in_artifact: bool = Field(
        default=False, title="Show the links in the run's result",
        description="Also list the download links in the run's result (anyone who can read "
        "the Prefect UI can then use them until they expire).")
    requested_by: str = Field(
        default="", max_length=200, title="Requested by",
        description="Who asks for the export, for the audit trail (for example "
        "portal:anna@club.example). Empty: prefect-ui for a run started here, cli:<login> "
        "from the command line.")

    link_ttl_seconds: SkipJsonSchema[int | None] = Field(
        default=None, gt=0, le=MAX_LINK_TTL_SECONDS,
        description="For programs: the link lifetime in seconds instead of link_ttl.")

    @model_validator(mode="after")
    def _one_lifetime(self) -> ExportRequest:
        """Seconds from a program and a duration from the form must not disagree."""
        if self.link_ttl_seconds is not None and "link_ttl" in self.model_fields_set and (
                parse_link_ttl(self.link_ttl) != self.link_ttl_seconds):
            raise ValueError(f"give link_ttl or {LEGACY_TTL}, not both")
        return self

    @field_validator("tenant_id")
    @classmethod
    def _valid_tenant(cls, value: str) -> str:
        try:
            return validate_tenant_id(value)
        except BadInput as err:  # pydantic reports ValueError as a form validation error
            raise ValueError(str(err)) from err

    @field_validator("link_ttl")
    @classmethod
    def _valid_ttl(cls, value: str) -> str:
        try:
            parse_link_ttl(value)
        except BadInput as err:
            raise ValueError(str(err)) from err
        return value.strip()

    @property
    def ttl_seconds(self) -> int:
        """The link lifetime in seconds."""
        return self.link_ttl_seconds or parse_link_ttl(self.link_ttl)

    @property
    def dialect(self) -> CsvDialect:
        """The CSV dialect the request asks for."""
        if self.excel or self.excel_semicolon:
            return CsvDialect.excel(semicolon=self.excel_semicolon)
        return DEFAULT_DIALECT

    @property
    def variant(self) -> str:
        """``exact``, ``excel`` or ``excel-semicolon`` (for the audit trail)."""
        return ("excel-semicolon" if self.excel_semicolon else "excel" if self.excel
                else "exact")
