"""``export`` and ``links``: the offboarding export and fresh links for a retained one."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated, Any

import typer

from kernel.ids import validate_export_id, validate_tenant_id
from kernel.timeparse import parse_link_ttl
from tenant_export.cliapp import JsonOption, TtlOption, app, run

if TYPE_CHECKING:
    from kernel.settings import Settings


def print_result(result: dict[str, Any], as_json: bool) -> None:
    """The ``--json`` document of DESIGN §3.1, or a readable list of files and links."""
    if as_json:
        typer.echo(json.dumps(result, indent=2))
        return
    typer.echo(f"Export {result['export_id']} of tenant {result['tenant_id']}")
    typer.echo(f"Links expire at {result['expires_at']}; each link is a secret, share it only "
               "with the tenant's authorised contacts.")
    if result.get("package_expires_at"):
        typer.echo(f"The package is kept until {result['package_expires_at']}.")
    files = result["files"]
    if files and files[0]["path"].startswith("export-") and files[0]["path"].endswith(".zip"):
        typer.echo("The first file holds every other one, folders kept: one download.")
    for f in files:
        rows = "" if f.get("rows") is None else f", {f['rows']} rows"
        typer.echo(f"\n{f['path']} ({f['bytes']} bytes{rows}, sha256 {f['sha256']})\n  {f['url']}")
    notice = result.get("notice")
    if notice:
        typer.echo(f"\nExport-ready email to the tenant's contacts: {notice['reason']}.")
    missing = result.get("documents_missing") or []
    if missing:
        typer.echo(f"\n{len(missing)} document(s) listed as missing in documents/index.csv "
                   "(the client sees them too):")
        for doc in missing:
            typer.echo(f"  document {doc['document_id']}: {doc['reason']}")
    shared = result.get("documents_shared_keys") or []
    if shared:
        typer.echo(f"\n{len(shared)} document(s) point at blobs other tenants' rows also use "
                   "(keys are not tenant-scoped): check they are this tenant's files:")
        for doc in shared:
            typer.echo(f"  document {doc['document_id']}: {doc['storage_key']}")


@app.command()
def export(
    tenant: Annotated[str, typer.Argument(help="Tenant id.")],
    link_ttl: TtlOption = "7d",
    excel: Annotated[bool, typer.Option(
        "--excel", help="CSV for spreadsheets: UTF-8 BOM, formulas neutralised with a leading "
        "apostrophe (recorded in datapackage.json).")] = False,
    excel_semicolon: Annotated[bool, typer.Option(
        "--excel-semicolon", help="As --excel, with ';' as the separator (spreadsheets in "
        "German, French... expect it).")] = False,
    no_notify: Annotated[bool, typer.Option(
        "--no-notify", help="Do not email the tenant's contacts that the export is "
        "ready.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Offboarding export of one tenant; prints signed links to every file."""

    def body(_settings: Settings) -> dict[str, Any]:
        parse_link_ttl(link_ttl)  # a bad duration is one clear line, exit 2
        validate_tenant_id(tenant)
        from flows.export_flow import ExportRequest, offboarding_export  # noqa: PLC0415

        return offboarding_export(ExportRequest(
            tenant_id=tenant, link_ttl=link_ttl.strip(), excel=excel,
            excel_semicolon=excel_semicolon, notify=not no_notify))

    print_result(run(body), as_json)


@app.command()
def links(
    tenant: Annotated[str, typer.Argument(help="Tenant id.")],
    export_id: Annotated[
        str | None, typer.Option("--export-id", help="Export id; default: the newest.")
    ] = None,
    link_ttl: TtlOption = "7d",
    as_json: JsonOption = False,
) -> None:
    """Fresh signed links for a retained export (refused once its retention ended)."""

    def body(settings: Settings) -> dict[str, Any]:
        ttl = parse_link_ttl(link_ttl)
        validate_tenant_id(tenant)
        if export_id is not None:
            validate_export_id(export_id)
        from flows.context import S3Context  # noqa: PLC0415
        from flows.observe import audit, current_actor  # noqa: PLC0415
        from flows.package_links import fresh_links  # noqa: PLC0415
        from storage.audit import AuditKind  # noqa: PLC0415

        # No flow run (Prefect costs seconds): what the export_links flow does, but its result
        # card. The package is checked against its manifest before any link is signed, and the
        # links are audited as they are by the flow.
        result = fresh_links(S3Context.open(settings), tenant, export_id, ttl)
        audit(settings, AuditKind.LINKS_MINTED, tenant, current_actor(),
              export_id=result.export_id, link_ttl_seconds=ttl, files_count=len(result.files))
        return result.model_dump(mode="json")

    print_result(run(body, flows=False), as_json)
