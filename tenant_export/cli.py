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
from enum import StrEnum
from typing import Annotated, Any, NoReturn

import typer
from pydantic import ValidationError

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
    except ValidationError as err:  # a TENANT_EXPORT_* setting or a form value out of range
        first = err.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or err.title
        _fail(BadInput(f"invalid {where}: {first['msg']}"), 2)
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


migration_app = typer.Typer(help="Assisted migration (terms 14.2): cases, time, bookings, "
                            "statement.", no_args_is_help=True)
sla_app = typer.Typer(help="Support-hours calendar (Annex 1).", no_args_is_help=True)
app.add_typer(migration_app, name="migration")
app.add_typer(sla_app, name="sla")


class TimeKind(StrEnum):
    """Kinds of time an operator logs."""

    work = "work"
    live = "live"


AtOption = Annotated[str | None, typer.Option("--at", help="When it happens (ISO 8601 with "
                                              "offset); default now.")]


def _migration(command: str, as_json: bool, **arguments: Any) -> None:
    def body() -> dict[str, Any]:
        from flows.migration_flow import migration_command  # noqa: PLC0415

        return migration_command(command, {k: v for k, v in arguments.items() if v is not None})

    result = _run(body)
    if as_json:
        typer.echo(json.dumps(result, indent=2))
    elif "lines" in result:
        _print_statement(result)
    else:
        for key, value in result.items():
            typer.echo(f"{key}: {value}")


def _print_statement(doc: dict[str, Any]) -> None:
    typer.echo(f"Statement of case {doc['case_id']} (tenant {doc['tenant_id']})")
    for line in doc["lines"]:
        typer.echo(f"  {line['date']}  {line['kind']:<18} {line['minutes']:>5} min "
                   f"-> {line['billed_minutes']:>5} billed x {line['rate_eur_per_hour']} EUR/h "
                   f"= {line['amount_eur']:>10} EUR  {line.get('note', '')}")
    typer.echo(f"  total {doc['total_eur']} EUR")
    if doc.get("statement_csv"):
        typer.echo(f"  CSV: {doc['statement_csv']}")


@migration_app.command("open")
def migration_open(
    tenant: Annotated[str, typer.Argument(help="Tenant id.")],
    critical: Annotated[bool, typer.Option("--critical", help="10 support hours to first "
                                           "response instead of 30.")] = False,
    at: AtOption = None,
    as_json: JsonOption = False,
) -> None:
    """Open a case: prints its id and the first-response due time."""
    _migration("open", as_json, tenant_id=tenant, critical=critical, at=at)


@migration_app.command("log")
def migration_log(
    case: Annotated[str, typer.Argument(help="Case id.")],
    minutes: Annotated[int, typer.Option("--minutes", help="Minutes spent (> 0).")],
    kind: Annotated[TimeKind, typer.Option("--kind", help="work, or live (a live session "
                                           "held).")] = TimeKind.work,
    on: Annotated[str | None, typer.Option("--on", help="Day of the work (YYYY-MM-DD); "
                                           "default today.")] = None,
    note: Annotated[str | None, typer.Option("--note", help="Shown on the statement.")] = None,
    entry_id: Annotated[str | None, typer.Option("--entry-id", help="Your id: the same id "
                                                 "twice counts once.")] = None,
    as_json: JsonOption = False,
) -> None:
    """Record time spent on the case."""
    _migration("log", as_json, case_id=case, minutes=minutes, kind=kind.value, on=on, note=note,
               entry_id=entry_id)


@migration_app.command("book")
def migration_book(
    case: Annotated[str, typer.Argument(help="Case id.")],
    start: Annotated[str, typer.Option("--start", help="Start (ISO 8601 with offset).")],
    minutes: Annotated[int, typer.Option("--minutes", help="Booked minutes (> 0).")],
    at: AtOption = None,
    as_json: JsonOption = False,
) -> None:
    """Book live assistance (at least 3 days ahead)."""
    _migration("book", as_json, case_id=case, start=start, minutes=minutes, at=at)


@migration_app.command("cancel")
def migration_cancel(
    booking: Annotated[str, typer.Argument(help="Booking id.")],
    at: AtOption = None,
    as_json: JsonOption = False,
) -> None:
    """Cancel a booking: free up to the eve of the appointment, else the booked time is due."""
    _migration("cancel", as_json, booking_id=booking, at=at)


@migration_app.command("no-show")
def migration_no_show(
    booking: Annotated[str, typer.Argument(help="Booking id.")],
    at: AtOption = None,
    as_json: JsonOption = False,
) -> None:
    """The client was not online within 5 minutes of the start: the booked time is due."""
    _migration("no-show", as_json, booking_id=booking, at=at)


@migration_app.command("correct")
def migration_correct(
    case: Annotated[str, typer.Argument(help="Case id.")],
    reverses: Annotated[str, typer.Option("--reverses", help="Entry or booking id whose "
                                          "charge is reversed.")],
    note: Annotated[str | None, typer.Option("--note", help="Why.")] = None,
    entry_id: Annotated[str | None, typer.Option("--entry-id", help="Your id for the "
                                                 "correction.")] = None,
    as_json: JsonOption = False,
) -> None:
    """Reverse an earlier charge with a negative line (entries are never edited)."""
    _migration("correct", as_json, case_id=case, reverses=reverses, note=note,
               entry_id=entry_id)


@migration_app.command("statement")
def migration_statement(
    case: Annotated[str, typer.Argument(help="Case id.")],
    as_json: JsonOption = False,
) -> None:
    """The statement as it stands, without closing the case."""
    _migration("statement", as_json, case_id=case)


@migration_app.command("close")
def migration_close(
    case: Annotated[str, typer.Argument(help="Case id.")],
    as_json: JsonOption = False,
) -> None:
    """Close the case and print the statement (also stored as CSV and as an artifact)."""
    _migration("close", as_json, case_id=case)


@sla_app.command("due")
def sla_due(
    received: Annotated[str, typer.Option("--received", help="When the request arrived "
                                          "(ISO 8601 with offset).")],
    hours: Annotated[str, typer.Option("--hours", help="Support hours to react in.")],
    as_json: JsonOption = False,
) -> None:
    """Due time of a reaction within N support hours (Mon-Fri 08-18 Berlin, RP holidays off)."""

    def body() -> dict[str, str]:
        from decimal import Decimal, InvalidOperation  # noqa: PLC0415

        from billing.sla import due_time  # noqa: PLC0415
        from flows.migration import parse_instant, rules  # noqa: PLC0415

        moment = parse_instant(received, "--received")
        try:
            amount = Decimal(hours)
        except InvalidOperation as err:
            raise BadInput(f"--hours: {hours!r} is not a number") from err
        if not amount.is_finite():
            raise BadInput(f"--hours: {hours!r} is not a finite number")
        with rules():
            due = due_time(moment, amount if amount != amount.to_integral() else int(amount))
        return {"received": moment.isoformat(), "hours": hours, "due": due.isoformat()}

    result = _run(body)
    typer.echo(json.dumps(result) if as_json else result["due"])


def _echo(result: Any, as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps(result, indent=2, default=str))
    elif isinstance(result, list):
        for item in result:
            typer.echo(item if isinstance(item, str) else json.dumps(item, default=str))
    else:
        for key, value in result.items():
            typer.echo(f"{key}: {value}")


@app.command()
def backup(
    tenants: Annotated[list[str] | None, typer.Argument(help="Tenant ids.")] = None,
    all_tenants: Annotated[bool, typer.Option("--all", help="Every tenant.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Encrypted, verified backup snapshots (only changed documents are uploaded)."""

    def body() -> list[dict[str, Any]]:
        if not tenants and not all_tenants:
            raise BadInput("name tenants or pass --all")
        if tenants and all_tenants:
            raise BadInput("name tenants or pass --all, not both")
        for tenant in tenants or []:
            validate_tenant_id(tenant)
        from flows.backup_flow import nightly_backup  # noqa: PLC0415

        return nightly_backup(list(tenants or []))

    _echo(_run(body), as_json)


@app.command()
def snapshots(
    tenant: Annotated[str, typer.Argument(help="Tenant id.")],
    as_json: JsonOption = False,
) -> None:
    """Complete backup snapshots of a tenant, oldest first."""

    def body() -> list[str]:
        validate_tenant_id(tenant)
        from flows.backup_flow import list_snapshots  # noqa: PLC0415

        return list_snapshots(tenant)

    _echo(_run(body), as_json)


@app.command()
def verify(
    tenant: Annotated[str, typer.Argument(help="Tenant id.")],
    snapshot: Annotated[str | None, typer.Option("--snapshot", help="Snapshot id; default: "
                                                 "the newest.")] = None,
    as_json: JsonOption = False,
) -> None:
    """Read back and decrypt every object of a snapshot (like restic check --read-data)."""

    def body() -> dict[str, Any]:
        validate_tenant_id(tenant)
        from flows.backup_flow import verify_backup  # noqa: PLC0415

        return verify_backup(tenant, snapshot)

    _echo(_run(body), as_json)


@app.command()
def restore(
    tenant: Annotated[str, typer.Argument(help="Tenant id.")],
    target: Annotated[str, typer.Option("--target", help="SQLAlchemy URL of an empty "
                                        "database.")],
    snapshot: Annotated[str | None, typer.Option("--snapshot", help="Snapshot id; default: "
                                                 "the newest.")] = None,
    documents_bucket: Annotated[str | None, typer.Option(
        "--documents-bucket", help="Bucket to restore documents into.")] = None,
    as_json: JsonOption = False,
) -> None:
    """Restore a snapshot: verified first, then tables and documents, checked."""

    def body() -> dict[str, Any]:
        validate_tenant_id(tenant)
        from flows.backup_flow import restore_backup  # noqa: PLC0415

        return restore_backup(tenant, target, snapshot, documents_bucket)

    _echo(_run(body), as_json)


@app.command()
def prune(
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only show what would go.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Apply backup retention (7 daily, 4 weekly, 12 monthly by default)."""

    def body() -> list[dict[str, Any]]:
        from flows.backup_flow import prune_backups  # noqa: PLC0415

        return prune_backups(dry_run)

    _echo(_run(body), as_json)


@app.command()
def keygen() -> None:
    """Print a new random master key for TENANT_EXPORT_MASTER_KEY (store it in a vault)."""
    from storage.keys import generate_master_key  # noqa: PLC0415

    typer.echo(generate_master_key())


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
