"""``export`` and ``links``: the offboarding export and fresh links for a retained one."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from kernel.ids import validate_export_id, validate_tenant_id
from kernel.settings import Settings
from kernel.timeparse import DEFAULT_LINK_TTL_SECONDS, parse_link_ttl
from tenant_export.cliapp import JsonOption, TtlOption, app, run


def print_result(result: dict[str, Any], as_json: bool) -> None:
    """The ``--json`` document of DESIGN §3.1, or a readable list of files and links."""
    if as_json:
        typer.echo(json.dumps(result, indent=2))
        return
    typer.echo(f"Export {result['export_id']} of tenant {result['tenant_id']}")
    typer.echo(f"Links expire at {result['expires_at']}; each link is a secret, share it only "
               "with the tenant's authorised contacts.")
    for f in result["files"]:
        rows = "" if f.get("rows") is None else f", {f['rows']} rows"
        typer.echo(f"\n{f['path']} ({f['bytes']} bytes{rows}, sha256 {f['sha256']})\n  {f['url']}")
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
    link_ttl: TtlOption = str(DEFAULT_LINK_TTL_SECONDS),
    excel: Annotated[bool, typer.Option("--excel", help="UTF-8 BOM in CSV files.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Offboarding export of one tenant; prints signed links to every file."""

    def body(_settings: Settings) -> dict[str, Any]:
        ttl = parse_link_ttl(link_ttl)
        validate_tenant_id(tenant)
        from flows.export_flow import ExportRequest, offboarding_export  # noqa: PLC0415

        return offboarding_export(ExportRequest(tenant_id=tenant, link_ttl_seconds=ttl,
                                                excel=excel))

    print_result(run(body), as_json)


@app.command()
def links(
    tenant: Annotated[str, typer.Argument(help="Tenant id.")],
    export_id: Annotated[
        str | None, typer.Option("--export-id", help="Export id; default: the newest.")
    ] = None,
    link_ttl: TtlOption = str(DEFAULT_LINK_TTL_SECONDS),
    as_json: JsonOption = False,
) -> None:
    """Fresh signed links for a retained export."""

    def body(_settings: Settings) -> dict[str, Any]:
        ttl = parse_link_ttl(link_ttl)
        validate_tenant_id(tenant)
        if export_id is not None:
            validate_export_id(export_id)
        from flows.export_flow import export_links  # noqa: PLC0415

        return export_links(tenant, export_id, ttl)

    print_result(run(body), as_json)
