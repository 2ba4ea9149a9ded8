"""Assisted migration (terms 14.2) and the support-hours calendar (Annex 1)."""

from __future__ import annotations

import json
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated, Any

import typer

from kernel.errors import BadInput
from tenant_export.cliapp import JsonOption, app, run

if TYPE_CHECKING:
    from kernel.settings import Settings

migration_app = typer.Typer(help="Assisted migration (terms 14.2): cases, time, bookings, "
                            "statement.", no_args_is_help=True)
sla_app = typer.Typer(help="Support-hours calendar (Annex 1).", no_args_is_help=True)
app.add_typer(migration_app, name="migration")
app.add_typer(sla_app, name="sla")


class TimeKind(StrEnum):
    """Kinds of time an operator logs."""

    work = "work"
    live = "live"


AtOption = Annotated[str | None, typer.Option("--at", help="When it happened (ISO 8601 with "
                                              "offset), now or earlier; default now.")]


def _migration(command: str, as_json: bool, **arguments: Any) -> None:
    given = {k: v for k, v in arguments.items() if v is not None}

    def check(_settings: Settings) -> None:
        from datetime import UTC, datetime  # noqa: PLC0415

        from flows.migration import parse_request  # noqa: PLC0415 - no Prefect

        parse_request(command, given, datetime.now(UTC))  # refused before any flow runs

    def body(_settings: Settings) -> dict[str, Any]:
        from flows.migration_flow import migration_command  # noqa: PLC0415

        return migration_command(command, given)

    def ledger_body(settings: Settings) -> dict[str, Any]:
        from datetime import UTC, datetime  # noqa: PLC0415

        from flows.migration import parse_request  # noqa: PLC0415
        from flows.migration_desk import ledger_command  # noqa: PLC0415 - loaded already

        now = datetime.now(UTC).replace(microsecond=0)
        return ledger_command(settings, parse_request(command, given, now), now)

    from flows.migration_desk import LEDGER_COMMANDS  # noqa: PLC0415 - a migration command

    # The ledger commands touch the control database only: no flow run (Prefect costs
    # seconds); ``open`` checks the tenant in the platform database and ``close`` publishes the
    # statement (S3, artifact): both run their flow.
    if command in LEDGER_COMMANDS:
        result = run(ledger_body, flows=False, check=check)
    else:
        result = run(body, check=check)
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
    if doc.get("unresolved"):
        typer.echo(f"  not closable until reversed: {', '.join(doc['unresolved'])}")
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
    minutes: Annotated[int, typer.Option("--minutes", help="Minutes spent, 1 to 600 (one "
                                         "support day; log longer work as several entries).")],
    kind: Annotated[TimeKind, typer.Option("--kind", help="work, or live (a live session "
                                           "held).")] = TimeKind.work,
    on: Annotated[str | None, typer.Option("--on", help="Day of the work (YYYY-MM-DD), today "
                                           "or earlier; default today.")] = None,
    note: Annotated[str | None, typer.Option("--note", help="Shown on the statement (one line, "
                                             "at most 500 characters).")] = None,
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
    minutes: Annotated[int, typer.Option("--minutes", help="Booked minutes, 1 to 600.")],
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

    def body(_settings: Settings) -> dict[str, str]:
        from billing.errors import RuleViolation  # noqa: PLC0415
        from billing.sla import due_time, parse_hours  # noqa: PLC0415
        from kernel.timeparse import parse_instant  # noqa: PLC0415

        moment = parse_instant(received, "--received")
        try:  # flows.migration.rules(), without the ledger (SQLAlchemy) that module loads
            due = due_time(moment, parse_hours(hours))  # checked before any arithmetic
        except RuleViolation as err:
            raise BadInput(str(err)) from err
        return {"received": moment.isoformat(), "hours": hours, "due": due.isoformat()}

    result = run(body, flows=False)
    typer.echo(json.dumps(result) if as_json else result["due"])

