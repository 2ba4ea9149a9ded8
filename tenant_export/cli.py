"""``tenant-export``: the command line of DESIGN §3.1.

Exit status: 0 success, 2 bad input, 1 failure. Errors are one line on stderr; ``--debug`` adds
the traceback. Prefect is imported lazily so ``--help`` and input errors stay fast.
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from collections.abc import Callable
from typing import Annotated, Any, NoReturn

import typer

from tenant_export.errors import BadInput, ExportError
from tenant_export.ids import (
    DEFAULT_LINK_TTL_SECONDS,
    parse_link_ttl,
    validate_export_id,
    validate_tenant_id,
)

app = typer.Typer(
    name="tenant-export",
    help="Tenant data export and offboarding: CSV + ZIP packages on S3 behind signed links.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
_state: dict[str, bool] = {"debug": False}

TtlOption = Annotated[
    str, typer.Option("--link-ttl", help="Link lifetime: seconds or 90s/15m/12h/7d (max 7d).")
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout.")]


@app.callback()
def _main(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks on errors.")] = False,
) -> None:
    _state["debug"] = debug
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")


def _fail(err: BaseException, code: int) -> NoReturn:
    if _state["debug"]:
        traceback.print_exception(err)
    message = str(err) or type(err).__name__
    typer.echo(f"tenant-export: error: {message}", err=True)
    raise typer.Exit(code)


def _run(action: Callable[[], Any]) -> Any:
    """Run a command body, mapping errors to the exit-status contract."""
    import prefect  # noqa: F401, PLC0415 - installs Prefect's console handler, which we tune

    from tenant_export.logs import quiet_console  # noqa: PLC0415

    quiet_console(_state["debug"])
    try:
        return action()
    except BadInput as err:
        _fail(err, 2)
    except ExportError as err:
        _fail(err, 1)
    except (typer.Exit, typer.Abort, KeyboardInterrupt):
        raise
    except Exception as err:  # noqa: BLE001 - the last line of defence: one line, exit 1
        _fail(RuntimeError(f"unexpected {type(err).__name__}: {err}"), 1)


def _print_result(result: dict[str, Any], as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps(result, indent=2))
        return
    typer.echo(f"Export {result['export_id']} of tenant {result['tenant_id']}")
    typer.echo(f"Links expire at {result['expires_at']}; each link is a secret, share it only "
               "with the tenant's authorised contacts.")
    for f in result["files"]:
        rows = "" if f.get("rows") is None else f", {f['rows']} rows"
        typer.echo(f"\n{f['path']} ({f['bytes']} bytes{rows}, sha256 {f['sha256']})\n  {f['url']}")


@app.command()
def export(
    tenant: Annotated[str, typer.Argument(help="Tenant id.")],
    link_ttl: TtlOption = str(DEFAULT_LINK_TTL_SECONDS),
    excel: Annotated[bool, typer.Option("--excel", help="UTF-8 BOM in CSV files.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Offboarding export of one tenant; prints signed links to every file."""

    def body() -> dict[str, Any]:
        ttl = parse_link_ttl(link_ttl)
        validate_tenant_id(tenant)
        from flows.export_flow import ExportRequest, offboarding_export  # noqa: PLC0415

        return offboarding_export(ExportRequest(tenant_id=tenant, link_ttl_seconds=ttl,
                                                excel=excel))

    _print_result(_run(body), as_json)


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

    def body() -> dict[str, Any]:
        ttl = parse_link_ttl(link_ttl)
        validate_tenant_id(tenant)
        if export_id is not None:
            validate_export_id(export_id)
        from flows.export_flow import export_links  # noqa: PLC0415

        return export_links(tenant, export_id, ttl)

    _print_result(_run(body), as_json)


@app.command()
def demo(
    tenant: Annotated[str, typer.Option(help="Demo tenant to export.")] = "harbour-rowing",
) -> None:
    """The whole pipeline on embedded defaults (demo SQLite + local S3), with a summary."""
    from tenant_export.demo import run_demo  # noqa: PLC0415

    _run(lambda: run_demo(tenant))


@app.command()
def serve(
    port: Annotated[int, typer.Option(help="Port of the Prefect server to start.")] = 4200,
) -> None:
    """Start a Prefect server (unless PREFECT_API_URL is set) and serve the deployments."""
    from deployments.serve import serve_all  # noqa: PLC0415

    _run(lambda: serve_all(port))


def main() -> None:
    """Console-script entry point."""
    try:
        app()
    except BadInput as err:  # raised by option callbacks before a command body runs
        typer.echo(f"tenant-export: error: {err}", err=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
