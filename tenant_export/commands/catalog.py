"""``catalog init`` and ``catalog show``: fast commands (no Prefect) that read the platform
database's catalog and say how every table is classified."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from kernel.errors import BadInput
from tenant_export.cliapp import JsonOption, app, run

if TYPE_CHECKING:
    from kernel.settings import Settings

catalog_app = typer.Typer(help="The catalog: how every table of the platform is classified.",
                          no_args_is_help=True)
app.add_typer(catalog_app, name="catalog")


@catalog_app.command("init")
def init(
    out: Annotated[Path | None, typer.Option("--out", help="Write here (never over an existing "
                                             "file); default: stdout.")] = None,
) -> None:
    """A catalog TOML for review: every table classified, and why, as comments."""

    def body(settings: Settings) -> str:
        from kernel.dburl import describe_url  # noqa: PLC0415 - SQLAlchemy, pyarrow: not for --help
        from sources.catalog import CatalogConfig  # noqa: PLC0415
        from sources.catalog_init import render_catalog  # noqa: PLC0415
        from sources.database import open_engine  # noqa: PLC0415

        if out is not None and out.exists():
            raise BadInput(f"{out} exists: choose another file (a reviewed catalog is never "
                           "overwritten)")
        config = CatalogConfig.load(settings.catalog)
        url = settings.resolved_source_url()
        engine = open_engine(url)
        try:
            text = render_catalog(engine, config, describe_url(url))
        finally:
            engine.dispose()
        if out is not None:
            try:
                with out.open("x", encoding="utf-8") as handle:
                    handle.write(text)
            except OSError as err:
                raise BadInput(f"cannot write {out}: {err.strerror or err}") from err
        return text

    text = run(body, flows=False)
    if out is None:
        typer.echo(text, nl=False)
    else:
        typer.echo(f"wrote {out}: review it, then set TENANT_EXPORT_CATALOG={out}")


@catalog_app.command("show")
def show(as_json: JsonOption = False) -> None:
    """The classification the next export or backup will use (and what would stop it)."""

    def body(settings: Settings) -> dict[str, Any]:
        from sources.catalog import CatalogConfig, discover  # noqa: PLC0415
        from sources.database import open_engine  # noqa: PLC0415
        from sources.inventory import classification  # noqa: PLC0415

        config = CatalogConfig.load(settings.catalog)
        engine = open_engine(settings.resolved_source_url())
        try:
            catalog = discover(engine, config)
        finally:
            engine.dispose()
        doc = classification(catalog)
        doc["catalog"] = str(settings.catalog) if settings.catalog else None
        doc["problems"] = catalog.problems()
        doc["ready"] = not doc["problems"]
        return doc

    doc = run(body, flows=False)
    from sources.inventory import GROUPS  # noqa: PLC0415 - loaded by the body

    if as_json:
        typer.echo(json.dumps(doc, indent=2, ensure_ascii=False))
        return
    typer.echo(f"catalog: {doc['catalog'] or 'discovery rules (no TENANT_EXPORT_CATALOG)'}")
    typer.echo(f"tenancy: {doc['tenancy']}")
    for group in GROUPS.values():
        for table in doc[group]:
            name = f"{table['schema']}.{table['table']}" if table.get("schema") else table["table"]
            typer.echo(f"{group[:-1] if group.endswith('s') else group:<12} {name}: "
                       f"{table['why']}")
            for path in table.get("paths", []):
                typer.echo(f"{'':<13}{path}")
    for problem in doc["problems"]:
        typer.echo(f"refused: {problem}")
    typer.echo("ready: the next export and backup will run" if doc["ready"] else
               "not ready: export and backup refuse until the catalog is fixed")
