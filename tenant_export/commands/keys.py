"""Backup key management: ``keys rotate``, ``keys rewrap``, ``keys show``
(``docs/backup-format.md``, sections 2 and 3)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer

from kernel.errors import BadInput
from kernel.ids import validate_tenant_id
from tenant_export.cliapp import JsonOption, app, echo, run

if TYPE_CHECKING:
    from kernel.settings import Settings

keys_app = typer.Typer(no_args_is_help=True, help=(
    "Backup keys: rotate a tenant's data key, rewrap key records under the current master "
    "key, show a tenant's data keys (never the keys themselves)."))
app.add_typer(keys_app, name="keys")


@keys_app.command("rotate")
def rotate(
    tenant: Annotated[str, typer.Argument(help="Tenant id.")],
    as_json: JsonOption = False,
) -> None:
    """Add a new active data key for the tenant; older snapshots stay readable."""

    def body(_settings: Settings) -> dict[str, Any]:
        validate_tenant_id(tenant)
        from flows.keyring import rotate_data_key  # noqa: PLC0415 - imports Prefect

        return rotate_data_key(tenant)

    echo(run(body), as_json)


@keys_app.command("rewrap")
def rewrap(
    tenants: Annotated[list[str] | None, typer.Argument(help="Tenant ids.")] = None,
    all_tenants: Annotated[bool, typer.Option("--all", help="Every tenant with a key "
                                              "record.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Wrap key records under TENANT_EXPORT_MASTER_KEY, reading with it or with
    TENANT_EXPORT_PREVIOUS_MASTER_KEY (also upgrades format-1 records)."""

    def body(_settings: Settings) -> list[dict[str, Any]]:
        if not tenants and not all_tenants:
            raise BadInput("name tenants or pass --all")
        if tenants and all_tenants:
            raise BadInput("name tenants or pass --all, not both")
        for tenant in tenants or []:
            validate_tenant_id(tenant)
        from flows.keyring import rewrap_key_records  # noqa: PLC0415 - imports Prefect

        return rewrap_key_records(list(tenants or []))

    echo(run(body), as_json)


@keys_app.command("show")
def show(
    tenant: Annotated[str, typer.Argument(help="Tenant id.")],
    as_json: JsonOption = False,
) -> None:
    """The tenant's data keys (id, state, created) and the master key wrapping them."""

    def body(_settings: Settings) -> dict[str, Any]:
        validate_tenant_id(tenant)
        from flows.keyring import show_data_keys  # noqa: PLC0415 - imports Prefect

        return show_data_keys(tenant)

    echo(run(body), as_json)
