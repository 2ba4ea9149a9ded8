"""Assisted migration flows: the long-running case an operator drives from the Prefect UI, and
one small flow per CLI command so every action shows up as a run."""

from __future__ import annotations

import math
import time
from datetime import UTC, date, datetime
from typing import Any, Literal, TypeVar

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.exceptions import FlowPauseTimeout
from prefect.flow_runs import pause_flow_run
from prefect.input import RunInput
from pydantic import BaseModel, ConfigDict, Field

from billing.pricelist import DEFAULT_PRICE_LIST, PriceList
from billing.statement import Statement
from billing.tz import berlin_date
from flows import packaging
from flows.context import RunContext, current_settings
from flows.export_flow import ExportRequest, export_links, offboarding_export
from flows.migration import MigrationDesk, Request, parse_request, statement_csv
from kernel.errors import BadInput, ExportError
from kernel.ids import artifact_key
from kernel.settings import Settings
from kernel.timeparse import MAX_LINK_TTL_SECONDS
from storage import objects
from storage.ledger import Ledger
from storage.s3 import make_client


def open_desk(settings: Settings) -> MigrationDesk:
    """The ledger of the control database and the operators' price list."""
    prices = DEFAULT_PRICE_LIST
    if settings.price_list is not None:
        from billing.errors import RuleViolation  # noqa: PLC0415

        try:
            prices = PriceList.from_file(settings.price_list)
        except RuleViolation as err:
            raise BadInput(str(err)) from err
    return MigrationDesk(Ledger(settings.resolved_control_url()), prices)


def publish_statement(settings: Settings, statement: Statement) -> str:
    """The statement as CSV in the export bucket (verified) and as a Prefect table artifact."""
    data = statement_csv(statement)
    key = f"migrations/{statement.tenant_id}/{statement.case_id}/statement.csv"
    s3 = make_client(settings)
    stored = objects.put_bytes(s3, settings.export_bucket, key, data,
                               content_type="text/csv; charset=utf-8",
                               tenant_id=statement.tenant_id)
    objects.verify(s3, settings.export_bucket, stored, statement.tenant_id)
    doc = statement.to_json()
    create_table_artifact(
        key=artifact_key("statement", statement.case_id),
        table=[*doc["lines"], {"date": "", "kind": "total", "amount_eur": doc["total_eur"]}],
        description=f"Statement of migration case {statement.case_id} for tenant "
        f"{statement.tenant_id}: total {doc['total_eur']} EUR. CSV: "
        f"s3://{settings.export_bucket}/{key}",
    )
    return f"s3://{settings.export_bucket}/{key}"


def close_case(settings: Settings, desk: MigrationDesk, case_id: str, at: datetime
               ) -> dict[str, Any]:
    """Price the case, publish the statement, then mark it closed (in that order, so a failed
    upload leaves the case open and the command can simply be repeated). A case that cannot be
    closed is refused before anything is published."""
    location = publish_statement(settings, desk.closable_statement(case_id))
    statement = desk.close(case_id, at)
    return {**statement.to_json(), "statement_csv": location}


# -- the case an operator drives from the UI --------------------------------------------------


class MigrationCaseRequest(BaseModel):
    """Start (or resume) an assisted-migration case."""

    model_config = ConfigDict(extra="forbid")
    tenant_id: str = Field(description="The departing tenant.")
    critical: bool = Field(default=False, description="Critical: first response within 10 "
                           "support hours instead of 30.")
    case_id: str | None = Field(default=None, description="Continue this open case instead of "
                                "opening a new one.")


class CaseInput(RunInput):
    """What the operator records next (the form shown when the case flow waits)."""

    action: Literal["log-time", "book", "cancel", "no-show", "correct", "deliver-export",
                    "fresh-links", "close"] = Field(description="What to record.")
    minutes: int | None = Field(default=None, description="log-time, book: minutes, 1 to 600 "
                                "(one support day).")
    kind: Literal["work", "live"] = Field(default="work", description="log-time: work, or a "
                                          "live-assistance session held.")
    on: date | None = Field(default=None, description="log-time: the day (default today; "
                            "never later).")
    note: str = Field(default="", description="log-time, correct: a note for the statement "
                      "(one line, at most 500 characters).")
    entry_id: str | None = Field(default=None, description="log-time, correct: your id, so a "
                                 "repeated submission counts once.")
    start: datetime | None = Field(default=None, description="book: start, with offset.")
    booking_id: str | None = Field(default=None, description="cancel, no-show: the booking.")
    reverses: str | None = Field(default=None, description="correct: the entry to reverse.")
    target_uri: str | None = Field(default=None, description="deliver-export: the "
                                   "successor's s3://bucket/prefix.")
    link_ttl_seconds: int = Field(default=MAX_LINK_TTL_SECONDS, gt=0,
                                  le=MAX_LINK_TTL_SECONDS, description="fresh-links: lifetime.")


def _automated(desk: MigrationDesk, case_id: str, started: float, what: str) -> dict[str, Any]:
    """Record an automated step with its own duration (whole minutes, rounded up)."""
    minutes = max(1, math.ceil((time.monotonic() - started) / 60))
    return desk.log(case_id, minutes, "automation", berlin_date(datetime.now(UTC)), what)


def apply_input(settings: Settings, desk: MigrationDesk, case_id: str, tenant_id: str,
                action: CaseInput) -> dict[str, Any]:
    """Carry out one operator input on the case."""
    now = datetime.now(UTC).replace(microsecond=0)
    if action.action == "log-time":
        return desk.log(case_id, _need(action.minutes, "minutes"), action.kind,
                        action.on or berlin_date(now), action.note, action.entry_id)
    if action.action == "book":
        return desk.book(case_id, _need(action.start, "start"), _need(action.minutes, "minutes"),
                         now)
    if action.action == "cancel":
        return desk.cancel(_need(action.booking_id, "booking_id"), now)
    if action.action == "no-show":
        return desk.no_show(_need(action.booking_id, "booking_id"), now)
    if action.action == "correct":
        return desk.correct(case_id, _need(action.reverses, "reverses"), action.note,
                            action.entry_id)
    if action.action == "close":
        return close_case(settings, desk, case_id, now)
    started = time.monotonic()
    if action.action == "fresh-links":
        links = export_links(tenant_id, None, action.link_ttl_seconds)
        return {"links": links, **_automated(desk, case_id, started, "fresh export links")}
    target = _need(action.target_uri, "target_uri")
    ctx = RunContext.open(settings)
    try:
        packaging.parse_target(ctx, target, tenant_id)  # refuse before exporting anything
        result = offboarding_export(ExportRequest(tenant_id=tenant_id))
        export_id, _, manifest, records = packaging.load_package(ctx, tenant_id,
                                                                 result["export_id"])
        copied = packaging.deliver(ctx, tenant_id, export_id, records, manifest, target)
    finally:
        ctx.close()
    return {"delivered": copied,
            **_automated(desk, case_id, started, f"export {export_id} delivered to {target}")}


T = TypeVar("T")


def _need(value: T | None, name: str) -> T:
    if value is None:
        raise BadInput(f"this action needs {name}")
    return value


@flow(name="assisted_migration", flow_run_name="migration-{request.tenant_id}")
def assisted_migration(request: MigrationCaseRequest) -> dict[str, Any]:
    """Open (or resume) a case, then wait for operator input until the case is closed."""
    logger = get_run_logger()
    settings = current_settings()
    desk = open_desk(settings)
    if request.case_id:
        case = desk.open_case_of(request.case_id)
        if case.tenant_id != request.tenant_id:
            raise BadInput(f"case {case.case_id!r} belongs to tenant {case.tenant_id!r}")
        case_id, due = case.case_id, case.first_response_due
    else:
        ctx = RunContext.open(settings)
        try:
            ctx.check_tenant(request.tenant_id)
        finally:
            ctx.close()
        opened = desk.open(request.tenant_id, request.critical,
                           datetime.now(UTC).replace(microsecond=0))
        case_id, due = opened["case_id"], opened["first_response_due"]
    create_markdown_artifact(
        key=artifact_key("migration", case_id),
        markdown=f"# Migration case `{case_id}`\nTenant `{request.tenant_id}`; first response "
        f"due {due}. Resume this run to record time, bookings and automated steps; "
        "choose `close` to produce the statement.",
    )
    logger.info("migration case %s for tenant %s; first response due %s", case_id,
                request.tenant_id, due)
    step = 0
    while not desk.case(case_id).closed:
        step += 1
        try:
            action = pause_flow_run(
                wait_for_input=CaseInput, timeout=settings.migration_wait_seconds,
                poll_interval=settings.migration_poll_seconds,
                key=f"{case_id.lower()}-input-{step}")  # Prefect: lowercase keys only
        except FlowPauseTimeout:
            logger.warning("no input for %s s: this run ends, case %s stays open (continue "
                           "it from the CLI or a new run with case_id)",
                           settings.migration_wait_seconds, case_id)
            return {"case_id": case_id, "open": True}
        try:
            outcome = apply_input(settings, desk, case_id, request.tenant_id, action)
        except ExportError as err:  # a wrong entry or a failed step must not end the case
            logger.error("%s failed: %s", action.action, err)
            continue
        logger.info("%s recorded: %s", action.action,
                    {k: v for k, v in outcome.items() if k not in ("links", "lines")})
        if action.action == "close":
            return outcome
    return desk.statement(case_id).to_json()


# -- one flow per CLI command -----------------------------------------------------------------


@flow(name="migration_command", flow_run_name="migration-{command}")
def migration_command(command: str, arguments: dict[str, Any]) -> dict[str, Any]:
    """Carry out one ``tenant-export migration`` command (so it appears as a run in the UI)."""
    settings = current_settings()
    now = datetime.now(UTC).replace(microsecond=0)
    request = parse_request(command, arguments, now)  # the CLI checked it too, before this run
    desk = open_desk(settings)
    try:
        return _carry_out(settings, desk, request, now)
    finally:
        desk.ledger.close()


def _carry_out(settings: Settings, desk: MigrationDesk, r: Request, now: datetime
               ) -> dict[str, Any]:
    if r.command == "open":
        ctx = RunContext.open(settings)
        try:
            ctx.check_tenant(r.tenant_id)
        finally:
            ctx.close()
        return desk.open(r.tenant_id, r.critical, r.at or now)
    if r.command == "log":
        return desk.log(r.case_id, r.minutes, r.kind, r.on or berlin_date(now), r.note,
                        r.entry_id)
    if r.command == "book":
        return desk.book(r.case_id, _need(r.start, "start"), r.minutes, r.at or now)
    if r.command == "cancel":
        return desk.cancel(r.booking_id, r.at or now)
    if r.command == "no-show":
        return desk.no_show(r.booking_id, r.at or now)
    if r.command == "correct":
        return desk.correct(r.case_id, r.reverses, r.note, r.entry_id)
    if r.command == "close":
        return close_case(settings, desk, r.case_id, now)
    issued = desk.closed_statement(r.case_id)  # "statement"
    return issued if issued is not None else desk.statement(r.case_id).to_json()
