"""``README.html`` and ``README.txt`` at the package root: the package explained to a person.

Everything the guide states comes from the files as written (names, sizes, checksums, rows),
the catalog (what is not exported and why) and the request (link and package expiry), in the
tenant's language. The guide is written before ``datapackage.json``, which lists the guide's
own checksum; so the guide names the manifest without a size, and the single-download archive
(written after both) only by name.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from exporters.csv_writer import CsvDialect
from exporters.datapackage import UNOWNED, FileRecord
from exporters.guide import (
    HTML_NAME,
    TEXT_NAME,
    GuideFile,
    Inventory,
    PackageGuide,
    render_guide,
)
from flows.package_documents import INDEX_PATH
from flows.package_tables import Sink
from sources.catalog import Catalog

MANIFEST = "datapackage.json"
_KINDS = {"table": "table", "workbook": "workbook", "index": "index", "zip": "documents"}


@dataclass(frozen=True)
class GuideFacts:
    """What the guide says beyond the files: who, when, until when, in which language."""

    tenant_id: str
    tenant_name: str
    export_id: str
    created_at: datetime
    links_expire_at: datetime
    package_expires_at: datetime | None
    language: str | None
    dialect: CsvDialect
    archive_path: str | None


def guide_inventory(catalog: Catalog, records: list[FileRecord], *, truncated_cells: int,
                    too_wide: list[tuple[str, int]]) -> Inventory:
    """What is not in the export and why, from the catalog and the files as written."""
    entries = sorted(catalog.entries, key=lambda e: e.name)
    tables = [r for r in records if r.kind == "table" and r.table is not None]
    index = next((r for r in records if r.path == INDEX_PATH), None)
    return Inventory(
        shared_tables=tuple(e.name for e in entries if e.status == "shared"),
        skipped_tables=tuple((e.name, e.reason or e.why) for e in entries
                             if e.status == "skipped"),
        excluded_columns=tuple((e.name, c) for e in entries if e.status == "exported"
                               for c in e.excluded),
        orphan_rows=tuple((str(r.table), int(r.extra.get(UNOWNED["orphan_rows"], 0)))
                          for r in tables),
        cross_tenant_rows=tuple((str(r.table), int(r.extra.get(UNOWNED["cross_tenant_rows"],
                                                                0))) for r in tables),
        missing_documents=int(index.extra.get("x-documents-missing", 0)) if index else 0,
        truncated_cells=truncated_cells,
        too_wide=tuple(too_wide),
    )


def guide_files(records: list[FileRecord]) -> tuple[GuideFile, ...]:
    """The files the guide lists: every file written before it, then the manifest."""
    listed = [GuideFile(r.path, r.bytes, r.sha256, _kind(r), rows=r.rows, table=r.table)
              for r in records]
    return (*listed, GuideFile(MANIFEST, None, None, "manifest"))


def _kind(record: FileRecord) -> str:
    """How the guide describes a file: the index's workbook as the list of documents too."""
    if record.kind == "workbook" and record.table is None:
        return "index"
    return _KINDS.get(record.kind, "other")


def write_guide(sink: Sink, facts: GuideFacts, records: list[FileRecord], inventory: Inventory
                ) -> list[FileRecord]:
    """Render the guide in the tenant's language and store both files (HTML first)."""
    rendered = render_guide(PackageGuide(
        tenant_id=facts.tenant_id, tenant_name=facts.tenant_name, export_id=facts.export_id,
        created_at=facts.created_at, links_expire_at=facts.links_expire_at,
        files=guide_files(records), package_expires_at=facts.package_expires_at,
        inventory=inventory, language=facts.language, dialect=facts.dialect,
        archive_path=facts.archive_path))
    written: list[FileRecord] = []
    for path, body, kind, content_type in (
            (HTML_NAME, rendered.html, "guide-html", "text/html; charset=utf-8"),
            (TEXT_NAME, rendered.text, "guide-text", "text/plain; charset=utf-8")):
        with sink(path, content_type) as out:
            out.write(body)
        written.append(FileRecord(path=path, bytes=out.bytes, sha256=out.sha256, kind=kind,
                                  extra={"x-language": rendered.language}))
    return written
