"""Backup commands: backup, snapshots, verify, restore, prune, keygen."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Annotated, Any

import typer

from kernel.errors import BadInput
from kernel.ids import validate_tenant_id
from tenant_export.cliapp import JsonOption, app, echo, run

if TYPE_CHECKING:
    from kernel.settings import Settings


@app.command()
def backup(
    tenants: Annotated[list[str] | None, typer.Argument(help="Tenant ids.")] = None,
    all_tenants: Annotated[bool, typer.Option("--all", help="Every tenant.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Encrypted, verified backup snapshots (only changed documents are uploaded)."""

    def body(_settings: Settings) -> list[dict[str, Any]]:
        if not tenants and not all_tenants:
            raise BadInput("name tenants or pass --all")
        if tenants and all_tenants:
            raise BadInput("name tenants or pass --all, not both")
        for tenant in tenants or []:
            validate_tenant_id(tenant)
        from flows.backup_flow import nightly_backup  # noqa: PLC0415

        return nightly_backup(list(tenants or []))

    echo(run(body), as_json)


@app.command()
def snapshots(
    tenant: Annotated[str, typer.Argument(help="Tenant id.")],
    as_json: JsonOption = False,
) -> None:
    """Complete backup snapshots of a tenant, oldest first."""

    def body(settings: Settings) -> list[str]:
        validate_tenant_id(tenant)
        from storage.s3 import make_client  # noqa: PLC0415
        from storage.snapshot_list import complete_snapshots  # noqa: PLC0415

        # A read of the backup bucket: no flow run (Prefect costs seconds), the listing of
        # the backup_snapshots flow the UI offers, without the keys and Arrow it does not need.
        return complete_snapshots(make_client(settings), settings.backup_bucket, tenant)

    echo(run(body, flows=False), as_json)


@app.command()
def verify(
    tenant: Annotated[str, typer.Argument(help="Tenant id.")],
    snapshot: Annotated[str | None, typer.Option("--snapshot", help="Snapshot id; default: "
                                                 "the newest.")] = None,
    as_json: JsonOption = False,
) -> None:
    """Read back and decrypt every object of a snapshot (like restic check --read-data)."""

    def body(_settings: Settings) -> dict[str, Any]:
        validate_tenant_id(tenant)
        from flows.restore_flow import verify_backup  # noqa: PLC0415

        return verify_backup(tenant, snapshot)

    echo(run(body), as_json)


@app.command()
def restore(
    tenant: Annotated[str, typer.Argument(help="Tenant id.")],
    target: Annotated[str | None, typer.Option(
        "--target", help="SQLAlchemy URL of an empty database (with --data-only: of a database "
        "the platform's migrations created); default: TENANT_EXPORT_RESTORE_TARGET_URL.")] = None,
    snapshot: Annotated[str | None, typer.Option("--snapshot", help="Snapshot id; default: "
                                                 "the newest.")] = None,
    documents_bucket: Annotated[str | None, typer.Option(
        "--documents-bucket", help="Bucket to restore documents into.")] = None,
    data_only: Annotated[bool, typer.Option(
        "--data-only", help="Load into the platform's own schema, which must hold none of the "
        "tenant's rows.")] = False,
    in_place: Annotated[bool, typer.Option(
        "--in-place", help="Replace the tenant's rows in the live platform database with the "
        "snapshot's (rows created since are removed) and rewrite its documents that are "
        "missing or differ.")] = False,
    confirm: Annotated[bool, typer.Option(
        "--confirm", help="Required with --in-place.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Restore a snapshot: verified first, then tables and documents, checked, all or nothing."""

    def check(_settings: Settings) -> None:
        from kernel.dburl import TARGET_NAME_PATTERN, normalize_url  # noqa: PLC0415 - SQLAlchemy

        validate_tenant_id(tenant)
        if in_place:
            if target is not None or documents_bucket is not None or data_only:
                raise BadInput("--in-place restores into the platform database and its "
                               "documents bucket: --target, --documents-bucket and --data-only "
                               "do not apply")
            if not confirm:
                raise BadInput(f"restore --in-place replaces tenant {tenant!r}'s rows in the "
                               "live platform database with the snapshot's: rows created since "
                               "the snapshot are removed. Add --confirm to do it (nothing was "
                               "touched)", tenant_id=tenant)
        elif confirm:
            raise BadInput("--confirm only applies to --in-place")
        if target is not None and target.startswith(("env:", "secret:")):
            if not re.fullmatch(TARGET_NAME_PATTERN, target):
                raise BadInput(f"--target {target!r}: name a variable ending in _URL "
                               "(env:PLATFORM_RESTORE_URL) or a Prefect Secret block "
                               "(secret:restore-target)")
        elif target is not None:
            normalize_url(target)  # refused now, not after a flow started (never quoted back)

    def body(settings: Settings) -> dict[str, Any]:
        from pydantic import SecretStr  # noqa: PLC0415

        from flows.context import using  # noqa: PLC0415
        from flows.restore_flow import restore_backup, restore_in_place  # noqa: PLC0415

        if in_place:
            return restore_in_place(tenant, snapshot, confirm)
        named = target is not None and target.startswith(("env:", "secret:"))
        if target is not None and not named:
            # a URL travels in the settings of this process, never as a flow parameter
            with using(settings.model_copy(update={"restore_target_url": SecretStr(target)})):
                return restore_backup(tenant, None, snapshot, documents_bucket, data_only)
        return restore_backup(tenant, target, snapshot, documents_bucket, data_only)

    echo(run(body, check=check), as_json)


@app.command()
def prune(
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only show what would go.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Apply backup retention (7 daily, 4 weekly, 12 monthly by default)."""

    def body(_settings: Settings) -> list[dict[str, Any]]:
        from flows.backup_flow import prune_backups  # noqa: PLC0415

        return prune_backups(dry_run)

    echo(run(body), as_json)


@app.command()
def keygen() -> None:
    """Print a new random master key for TENANT_EXPORT_MASTER_KEY (store it in a vault)."""
    from storage.keys import generate_master_key  # noqa: PLC0415

    typer.echo(generate_master_key())
