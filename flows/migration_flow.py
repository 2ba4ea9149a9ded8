"""Assisted migration flows: the long-running case an operator drives from the Prefect UI, and
one small flow per CLI command so every action shows up as a run.

The case run asks in two forms per input: which action, then only that action's fields
(titles in words, no optional-type toggles). A refused input is shown in the next form and in
the run's case card; the case keeps waiting.
"""

from __future__ import annotations

import math
import time
from datetime import UTC, date, datetime
from typing import Annotated, Any, Literal, TypeVar, cast
from uuid import UUID

from prefect import flow, get_client, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.client.schemas.actions import ArtifactUpdate
from prefect.exceptions import FlowPauseTimeout
from prefect.flow_runs import pause_flow_run
from prefect.input import RunInput
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model
from pydantic.fields import FieldInfo

from billing.rules import MAX_ENTRY_MINUTES
from billing.statement import Statement
from billing.tz import berlin_date
from flows.context import RunContext, current_settings
from flows.forms import TenantId, form_field
from flows.migration import MigrationDesk, Request, parse_request, statement_csv
from flows.migration_desk import carry_out, open_desk
from flows.progress import md_text
from kernel.errors import BadInput, ExportError
from kernel.ids import artifact_key
from kernel.settings import Settings
from kernel.timeparse import MAX_LINK_TTL_SECONDS, parse_link_ttl
from storage import objects
from storage.s3 import make_client


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

Action = Literal["log-time", "book", "cancel", "no-show", "correct", "deliver-export",
                 "fresh-links", "close"]
_ID = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,99}$"
_ID_OR_EMPTY = r"^([A-Za-z0-9][A-Za-z0-9_-]{0,99})?$"


class MigrationCaseRequest(BaseModel):
    """Start (or resume) an assisted-migration case."""

    model_config = ConfigDict(extra="forbid", title="Migration case")
    tenant_id: TenantId = Field(title="Departing tenant", description="The tenant's id as the "
                                "platform database lists it (for example harbour-rowing).")
    critical: bool = Field(default=False, title="Critical case", description="Critical: first "
                           "response within 10 support hours instead of 30.")
    case_id: str = Field(default="", pattern=_ID_OR_EMPTY, title="Continue case",
                         description="Continue this open case (its id, for example "
                         "M-20261126-3f2a9c1b) instead of opening a new one. Leave empty: a "
                         "new case.")


class CaseInput(BaseModel):
    """One operator action as the case applies it: what a form (or a test) hands over."""

    model_config = ConfigDict(extra="forbid")
    action: Action = Field(description="What to record.")
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


# The UI renders a pause form from the input's JSON schema. An optional (``X | None``) field
# becomes a "Property is type None" toggle, so the forms below have none: the first asks for
# the action only, the second for that action's fields, required or with a plain default.


class ChooseAction(RunInput):
    """What to record next on the case."""

    action: Action = Field(title="What to record", description=(
        "log-time: time spent · book: a live-assistance appointment · cancel: a booking the "
        "client cancelled · no-show: the client was not online · correct: reverse a charge · "
        "deliver-export: copy an export into the successor's S3 · fresh-links: new download "
        "links · close: close the case and issue the statement"))


class ActionForm(RunInput):
    """The fields of one action."""

    def case_input(self, action: Action) -> CaseInput:
        """The action record (an empty text means "not given")."""
        return CaseInput(action=action, **{k: v for k, v in self.model_dump().items() if v != ""})


class LogTimeForm(ActionForm):
    """Record time spent on the case."""

    minutes: int = Field(ge=1, le=MAX_ENTRY_MINUTES, title="Minutes spent", description=(
        "1 to 600 (a support day); log longer work as several entries."))
    kind: Literal["work", "live"] = Field(title="Kind of time", description=(
        "work: any tracked work, billed per minute. live: a live-assistance session that was "
        "held, billed in 30-minute units."))
    on: date = Field(title="Day", description="The day of the work (a live session: the day "
                     "it started), never after today.")
    note: str = Field(default="", max_length=500, title="Note on the statement",
                      description="One line the client reads on the statement.")
    entry_id: str = Field(default="", pattern=_ID_OR_EMPTY, title="Entry id", description=(
        "Optional: your id, so the same entry submitted twice counts once."))


class BookForm(ActionForm):
    """Book live assistance."""

    start: datetime = Field(title="Appointment start", description=(
        "Date and time with its offset; at least 3 days ahead (Berlin dates)."))
    minutes: int = Field(ge=1, le=MAX_ENTRY_MINUTES, title="Booked minutes",
                         description="1 to 600.")


class BookingForm(ActionForm):
    """A cancellation or a no-show, recorded now."""

    booking_id: str = Field(pattern=_ID, title="Booking id",
                            description="The id `book` returned (B-...).")


class CorrectForm(ActionForm):
    """Reverse an earlier charge with a negative line."""

    reverses: str = Field(pattern=_ID, title="Entry or booking to reverse", description=(
        "The id in the statement's ref column, or a charged booking's id."))
    note: str = Field(default="", max_length=500, title="Why",
                      description="One line, shown on the statement.")
    entry_id: str = Field(default="", pattern=_ID_OR_EMPTY, title="Correction id",
                          description="Optional: your id for the correction.")


class DeliverForm(ActionForm):
    """Export the tenant again and copy it into the successor's bucket."""

    target_uri: str = Field(pattern=r"^s3://[^/\s]+(/\S*)?$", title="Successor's S3 location",
                            description="s3://bucket/prefix; the bucket must exist.")


class FreshLinksForm(ActionForm):
    """New download links for the newest export."""

    lifetime: str = Field(default="7d", pattern=r"^\s*[0-9]{1,15}\s*[smhd]?\s*$",
                          title="Link lifetime",
                          description="How long the links work: 90s, 15m, 12h or 7d (at most).")

    def case_input(self, action: Action) -> CaseInput:
        """The lifetime in seconds (more than 7 days is refused)."""
        return CaseInput(action=action, link_ttl_seconds=parse_link_ttl(self.lifetime))


FORMS: dict[str, type[ActionForm]] = {
    "log-time": LogTimeForm, "book": BookForm, "cancel": BookingForm, "no-show": BookingForm,
    "correct": CorrectForm, "deliver-export": DeliverForm, "fresh-links": FreshLinksForm}
"""The second form of each action; ``close`` has none."""
TITLES = {"log-time": "Log time", "book": "Book live assistance", "cancel": "Cancel a booking",
          "no-show": "Record a no-show", "correct": "Correct a charge",
          "deliver-export": "Deliver the export", "fresh-links": "Fresh download links",
          "close": "Close the case"}
F = TypeVar("F", bound=RunInput)


def form(model: type[F], title: str, description: str, **defaults: Any) -> type[F]:
    """``model`` as a form: its title, the description shown above it and prefilled values
    (Prefect's ``with_initial_data`` would drop the fields' titles and descriptions)."""
    fields: dict[str, Any] = {
        name: (model.model_fields[name].annotation,
               FieldInfo.merge_field_infos(model.model_fields[name], default=value))
        for name, value in defaults.items()}
    prefilled = create_model(title, __base__=model, **fields)  # the name is the schema's title
    return prefilled.with_initial_data(description=description)


class CaseCard:
    """The run's markdown artifact: the case, then each input of this run, recorded or
    refused with the reason. It is updated in place, and the last outcome opens the next
    form: a refusal is seen where the operator looks, not only in the logs."""

    def __init__(self, case_id: str, tenant_id: str, due: str) -> None:
        self.case_id, self.tenant_id, self.due = case_id, tenant_id, due
        self.rows: list[str] = []
        self.last = ""
        self._artifact: UUID | None = None

    def markdown(self) -> str:
        """The card as shown in the UI."""
        text = (f"# Migration case `{self.case_id}`\nTenant `{self.tenant_id}`; first response "
                f"due {self.due}. Resume this run to record time, bookings and automated "
                "steps; choose `close` to produce the statement.")
        if self.rows:
            text += "\n\n| time (UTC) | action | outcome |\n|---|---|---|\n" + "\n".join(self.rows)
        return text

    def record(self, action: str, outcome: str, *, refused: bool) -> None:
        """Add one outcome and publish the card."""
        line = md_text(outcome)
        shown = f"**refused**: {line}; nothing was written" if refused else line
        self.rows.append(f"| {datetime.now(UTC):%H:%M:%S} | {action} | {shown} |")
        self.last = (f"**Refused ({TITLES[action]}):** {line}; nothing was written." if refused
                     else f"Recorded ({TITLES[action]}): {line}.")
        self.publish()

    def publish(self) -> None:
        """Create the artifact, then update it in place (one card per run, not one per input)."""
        if self._artifact is None:
            self._artifact = cast(UUID, create_markdown_artifact(  # sync here: in a flow run
                key=artifact_key("migration", self.case_id), markdown=self.markdown(),
                description=f"Migration case {self.case_id} of tenant {self.tenant_id}"))
            return
        with get_client(sync_client=True) as client:
            client.update_artifact(self._artifact, ArtifactUpdate(data=self.markdown()))

    def prompt(self, action: str | None = None) -> str:
        """The description above the next form."""
        where = f"case `{self.case_id}` (tenant `{self.tenant_id}`)"
        if action is not None:
            return f"**{TITLES[action]}** on {where}."
        last = f"{self.last}\n\n" if self.last else ""
        return f"{last}Choose what to record on {where}; the next form asks for its fields."


def outcome_line(outcome: dict[str, Any]) -> str:
    """What was recorded, in one line (links and statement lines stay in the run's result)."""
    return ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in outcome.items()
                     if k not in ("case_id", "tenant_id", "links", "lines", "delivered")
                     and not isinstance(v, dict | list)) or "done"


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
    # The export machinery loads for these two steps only: every `migration` command imports
    # this module, and the writers and the packaging cost it half a second.
    from flows import packaging  # noqa: PLC0415
    from flows.export_flow import ExportRequest, export_links, offboarding_export  # noqa: PLC0415

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
def assisted_migration(
    request: Annotated[MigrationCaseRequest, form_field(
        "Open or resume a case", "The departing tenant and whether the case is critical; "
        "give a case id to continue that open case.")],
) -> dict[str, Any]:
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
    card = CaseCard(case_id, request.tenant_id, str(due))
    card.publish()
    logger.info("migration case %s for tenant %s; first response due %s", case_id,
                request.tenant_id, due)
    step = 0
    while not desk.case(case_id).closed:
        step += 1
        try:
            action, filled = _ask(settings, card, step)
        except FlowPauseTimeout:
            logger.warning("no input for %s s: this run ends, case %s stays open (continue "
                           "it from the CLI or a new run with case_id)",
                           settings.migration_wait_seconds, case_id)
            return {"case_id": case_id, "open": True}
        try:
            wanted = filled.case_input(action) if filled else CaseInput(action=action)
            outcome = apply_input(settings, desk, case_id, request.tenant_id, wanted)
        except (ExportError, ValidationError) as err:  # a refusal must not end the case
            logger.warning("%s refused: %s", action, err)
            card.record(action, str(err), refused=True)
            continue
        logger.info("%s recorded: %s", action, outcome_line(outcome))
        card.record(action, outcome_line(outcome), refused=False)
        if action == "close":
            return outcome
    return desk.statement(case_id).to_json()


def _ask(settings: Settings, card: CaseCard, step: int) -> tuple[Action, ActionForm | None]:
    """Two pauses: the action, then a form with only its fields (``close`` has none)."""
    key = f"{card.case_id.lower()}-{step}"  # Prefect: lowercase keys only
    chosen = pause_flow_run(
        wait_for_input=form(ChooseAction, "What to record next", card.prompt()),
        key=f"{key}-action",
        timeout=settings.migration_wait_seconds, poll_interval=settings.migration_poll_seconds)
    model = FORMS.get(chosen.action)
    if model is None:
        return chosen.action, None
    today = {"on": berlin_date(datetime.now(UTC))} if model is LogTimeForm else {}
    filled = pause_flow_run(
        wait_for_input=form(model, TITLES[chosen.action], card.prompt(chosen.action), **today),
        key=f"{key}-{chosen.action}", timeout=settings.migration_wait_seconds,
        poll_interval=settings.migration_poll_seconds)
    return chosen.action, filled


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
    if r.command == "close":
        return close_case(settings, desk, r.case_id, now)
    return carry_out(desk, r, now)  # the ledger commands, as the CLI does them without a run
