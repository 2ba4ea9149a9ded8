"""Assisted migration (terms 14.2): cases, time, bookings and the statement, in plain code.

The ledger (storage) keeps facts; the billing package prices them; this module turns commands
into facts after checking them, so a refused command writes nothing. Every refusal is a
``BadInput`` (exit 2) naming the case or booking.

Nothing is recorded before it happens: every ``at`` is checked against the desk's clock (an
operator may record an action after the fact, never before), a time entry's day is at most
today in Berlin. :func:`parse_request` applies every check that needs no ledger to a command's
arguments as typed, so the CLI refuses bad input before any flow runs.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from billing.errors import RuleViolation
from billing.pricelist import DEFAULT_PRICE_LIST, PriceList
from billing.rules import (
    check_booking,
    check_no_show,
    max_minutes,
    session_day,
    validate_minutes,
)
from billing.sla import first_response_due
from billing.statement import (
    Booking,
    Cancellation,
    Correction,
    Fact,
    NoShow,
    Statement,
    TimeEntry,
    build_statement,
    validate_note,
)
from billing.tz import BERLIN, berlin_date, require_aware
from kernel.errors import BadInput
from kernel.ids import new_case_id, validate_tenant_id
from kernel.timeparse import parse_day, parse_instant, shown
from storage.ledger import Ledger, LedgerEvent

Clock = Callable[[], datetime]
"""Now, timezone-aware; injected so tests can fix it."""

OPENED, TIME, BOOKING, CANCELLATION, NO_SHOW, CORRECTION, CLOSED = (
    "case-opened", "time", "booking", "cancellation", "no-show", "correction", "case-closed")


@contextmanager
def rules() -> Iterator[None]:
    """Billing rule violations are bad input for the caller."""
    try:
        yield
    except RuleViolation as err:
        raise BadInput(str(err)) from err


_CALLER_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,99}")


def _caller_id(value: str | None, what: str = "id") -> str | None:
    """An id chosen by the caller: letters, digits, '_' and '-' (ids with '.' are ours).

    Case, booking and entry ids an operator types have the same shape (generated ones such as
    ``M-20261126-3f2a9c1b`` too), so anything else is refused before it reaches a query.
    """
    if value is not None and not (isinstance(value, str) and _CALLER_ID.fullmatch(value)):
        raise BadInput(f"invalid id {shown(value)}: a {what} is 1-100 letters, digits, '_' or "
                       "'-'")
    return value


def utc_now() -> datetime:
    """The desk's default clock."""
    return datetime.now(UTC)


def _check_note(note: str) -> str:
    with rules():
        return validate_note(note)


def not_in_future(at: datetime, now: datetime, what: str) -> datetime:
    """``at`` unchanged, or ``BadInput``: an action is recorded once it has happened.

    Raises:
        BadInput: ``at`` is naive or later than ``now``.
    """
    with rules():
        require_aware(at, what)
    if at > now:
        raise BadInput(f"{what} {at.isoformat()} is in the future (now is "
                       f"{now.astimezone(BERLIN).isoformat(timespec='seconds')}); record an "
                       "action once it has happened; nothing was written")
    return at


def not_after_today(day: date, now: datetime, what: str = "day") -> date:
    """``day`` unchanged, or ``BadInput`` when it is after today in Berlin (time not yet spent).

    Raises:
        BadInput: ``day`` is after today's Berlin date.
    """
    today = berlin_date(now)
    if day > today:
        raise BadInput(f"{what} {day} is after today ({today}, Europe/Berlin): record time "
                       "once it has been spent; nothing was written")
    return day


@dataclass(frozen=True)
class Case:
    """What the ledger says about one case."""

    case_id: str
    tenant_id: str
    critical: bool
    opened_at: str
    first_response_due: str
    closed: bool
    events: tuple[LedgerEvent, ...]


def _fact(event: LedgerEvent) -> Fact | None:
    p = event.payload
    if event.kind == TIME:
        return TimeEntry(event.event_id, date.fromisoformat(p["day"]), p["kind"], p["minutes"],
                         p.get("note", ""))
    if event.kind == BOOKING:
        return Booking(event.event_id, datetime.fromisoformat(p["start"]), p["minutes"],
                       datetime.fromisoformat(p["booked_at"]))
    if event.kind == CANCELLATION:
        return Cancellation(p["booking_id"], datetime.fromisoformat(p["at"]))
    if event.kind == NO_SHOW:
        return NoShow(p["booking_id"])
    if event.kind == CORRECTION:
        return Correction(event.event_id, p["reverses"], p.get("note", ""))
    return None


class MigrationDesk:
    """Commands of the assisted-migration case, checked then recorded in the ledger."""

    def __init__(self, ledger: Ledger, prices: PriceList = DEFAULT_PRICE_LIST, *,
                 clock: Clock = utc_now) -> None:
        self.ledger = ledger
        self.prices = prices
        self.clock = clock

    # -- reading -------------------------------------------------------------------------------

    def case(self, case_id: str) -> Case:
        """The case, or ``BadInput`` when there is none."""
        _caller_id(case_id, "case id")
        events = self.ledger.events(case_id)
        opened = next((e for e in events if e.kind == OPENED), None)
        if opened is None:
            raise BadInput(f"unknown migration case {case_id!r}")
        p = opened.payload
        return Case(case_id, p["tenant_id"], p["critical"], p["opened_at"],
                    p["first_response_due"], any(e.kind == CLOSED for e in events), tuple(events))

    def open_case_of(self, case_id: str) -> Case:
        """The case, refused when it is closed (nothing may be added to a closed case)."""
        case = self.case(case_id)
        if case.closed:
            raise BadInput(f"migration case {case_id!r} is closed; nothing was written")
        return case

    def closed_statement(self, case_id: str) -> dict[str, Any] | None:
        """The statement as issued when the case was closed (never re-priced afterwards)."""
        closed = next((e for e in self.case(case_id).events if e.kind == CLOSED), None)
        stored = closed.payload.get("statement") if closed else None
        return dict(stored) if isinstance(stored, dict) else None

    def statement(self, case_id: str) -> Statement:
        """The statement as it stands (priced from the ledger with the current price list)."""
        case = self.case(case_id)
        facts = [f for f in (_fact(e) for e in case.events) if f is not None]
        with rules():
            return build_statement(case.case_id, case.tenant_id, facts, self.prices)

    def closable_statement(self, case_id: str) -> Statement:
        """The statement of an open case that may be closed: no unbillable line left standing.

        Raises:
            BadInput: the case is unknown or closed, or holds an unbillable line (rule 11 of
                ``billing.rules``: minutes above the bound, recorded by an older version).
        """
        self.open_case_of(case_id)
        statement = self.statement(case_id)
        if statement.unresolved:
            refs = ", ".join(repr(ref) for ref in statement.unresolved)
            raise BadInput(
                f"migration case {case_id!r} cannot be closed: unbillable line {refs} (more "
                "minutes than one entry may hold, not billed); reverse it with `tenant-export "
                f"migration correct {case_id} --reverses {statement.unresolved[0]}` and record "
                "the right figure; nothing was written")
        return statement

    def _booking(self, booking_id: str) -> tuple[Case, Booking]:
        _caller_id(booking_id, "booking id")
        event = self.ledger.get(booking_id)
        if event is None or event.kind != BOOKING:
            raise BadInput(f"unknown booking {booking_id!r}")
        fact = _fact(event)
        if not isinstance(fact, Booking):  # pragma: no cover - kind checked above
            raise BadInput(f"{booking_id!r} is not a booking")
        return self.open_case_of(event.case_id), fact

    # -- commands ------------------------------------------------------------------------------

    def open(self, tenant_id: str, critical: bool, at: datetime, case_id: str | None = None
             ) -> dict[str, Any]:
        """Open a case; returns ``{"case_id", "first_response_due"}``."""
        validate_tenant_id(tenant_id)
        _caller_id(case_id, "case id")
        not_in_future(at, self.clock(), "request time")
        with rules():
            due = first_response_due(at, critical)
        case_id = case_id or new_case_id("M")
        payload = {"tenant_id": tenant_id, "critical": critical, "opened_at": at.isoformat(),
                   "first_response_due": due.isoformat()}
        stored, _ = self.ledger.append(LedgerEvent(case_id, case_id, OPENED, payload))
        return {"case_id": case_id, "tenant_id": tenant_id,
                "first_response_due": stored.payload["first_response_due"]}

    def log(self, case_id: str, minutes: int, kind: str, on: date, note: str = "",
            entry_id: str | None = None) -> dict[str, Any]:
        """Record time spent; the same ``entry_id`` twice counts once."""
        self.open_case_of(case_id)
        entry_id = _caller_id(entry_id, "entry id") or new_case_id("T")
        with rules():
            fact = TimeEntry(entry_id, on, kind, minutes, note)  # type: ignore[arg-type]
            validate_minutes(minutes, maximum=max_minutes(kind))
            validate_note(note)
            self._check_prices(on, kind)
        not_after_today(on, self.clock())
        payload = {"day": fact.day.isoformat(), "kind": fact.kind, "minutes": fact.minutes,
                   "note": fact.note}
        _, created = self.ledger.append(LedgerEvent(entry_id, case_id, TIME, payload))
        return {"case_id": case_id, "entry_id": entry_id, "recorded": created}

    def book(self, case_id: str, start: datetime, minutes: int, at: datetime,
             booking_id: str | None = None) -> dict[str, Any]:
        """Book live assistance; refused unless at least 3 days ahead."""
        self.open_case_of(case_id)
        booking_id = _caller_id(booking_id, "booking id") or new_case_id("B")
        not_in_future(at, self.clock(), "booking time")
        with rules():
            validate_minutes(minutes)
            check_booking(at, start)
            Booking(booking_id, start, minutes, at)
            self._check_prices(session_day(start), "live")
        payload = {"start": start.isoformat(), "minutes": minutes, "booked_at": at.isoformat()}
        self.ledger.append(LedgerEvent(booking_id, case_id, BOOKING, payload))
        return {"case_id": case_id, "booking_id": booking_id, "start": start.isoformat(),
                "minutes": minutes}

    def cancel(self, booking_id: str, at: datetime) -> dict[str, Any]:
        """Cancel a booking: free up to the eve of the appointment, else charged."""
        case, booking = self._booking(booking_id)
        self._no_outcome_yet(case, booking_id)
        not_in_future(at, self.clock(), "cancellation time")
        if at < booking.booked_at:
            raise BadInput(f"booking {booking_id!r} cannot be cancelled before it was made")
        payload = {"booking_id": booking_id, "at": at.isoformat()}
        self.ledger.append(LedgerEvent(f"{booking_id}.outcome", case.case_id, CANCELLATION,
                                       payload))
        line = next((ln for ln in self.statement(case.case_id).lines
                     if ln.ref == booking_id and ln.kind == "late-cancellation"), None)
        return {"booking_id": booking_id, "case_id": case.case_id, "charged": line is not None,
                "amount_eur": f"{line.amount_eur if line else Decimal('0'):.2f}"}

    def no_show(self, booking_id: str, at: datetime) -> dict[str, Any]:
        """The client was not online within 5 minutes of the start: the booked time is charged."""
        case, booking = self._booking(booking_id)
        self._no_outcome_yet(case, booking_id)
        not_in_future(at, self.clock(), "no-show time")
        with rules():
            check_no_show(at, booking.start)
        payload = {"booking_id": booking_id, "at": at.isoformat()}
        self.ledger.append(LedgerEvent(f"{booking_id}.outcome", case.case_id, NO_SHOW, payload))
        return {"booking_id": booking_id, "case_id": case.case_id, "charged": True}

    def correct(self, case_id: str, reverses: str, note: str = "",
                entry_id: str | None = None) -> dict[str, Any]:
        """Reverse an earlier charge with a new, negative line (never an edit)."""
        case = self.open_case_of(case_id)
        _caller_id(entry_id, "entry id")
        _caller_id(reverses, "entry or booking id")
        _check_note(note)
        # One reversal per line, whatever id the caller chose: the ledger id is derived from
        # what is reversed, so two concurrent corrections cannot both be recorded.
        reversal_id = f"{reverses}.reversal"
        existing = self.ledger.get(reversal_id)
        payload = {"reverses": reverses, "note": note}
        if existing is not None and existing.payload == payload and existing.case_id == case_id:
            return {"case_id": case_id, "entry_id": reversal_id, "recorded": False}
        facts = [f for f in (_fact(e) for e in case.events) if f is not None]
        with rules():
            correction = Correction(reversal_id, reverses, note)
            build_statement(case_id, case.tenant_id, [*facts, correction], self.prices)
        _, created = self.ledger.append(LedgerEvent(reversal_id, case_id, CORRECTION, payload))
        return {"case_id": case_id, "entry_id": reversal_id, "recorded": created}

    def close(self, case_id: str, at: datetime) -> Statement:
        """Close the case (nothing can be added afterwards) and return its statement."""
        not_in_future(at, self.clock(), "closing time")
        statement = self.closable_statement(case_id)
        payload = {"closed_at": at.isoformat(), "total_eur": f"{statement.total_eur:.2f}",
                   "statement": statement.to_json()}  # frozen: a later price change is moot
        self.ledger.append(LedgerEvent(f"{case_id}.closed", case_id, CLOSED, payload))
        return statement

    # -- helpers -------------------------------------------------------------------------------

    def _check_prices(self, day: date, kind: str) -> None:
        self.prices.rate_on(day, "live" if kind == "live" else "work")

    def _no_outcome_yet(self, case: Case, booking_id: str) -> None:
        done = next((e for e in case.events if e.event_id == f"{booking_id}.outcome"), None)
        if done is not None:
            raise BadInput(f"booking {booking_id!r} already has an outcome ({done.kind}, "
                           f"recorded {done.recorded_at}); nothing was written")


# -- a command's arguments as typed ------------------------------------------------------------

REQUIRED: Mapping[str, tuple[str, ...]] = {
    "open": ("tenant_id",), "log": ("case_id", "minutes"),
    "book": ("case_id", "start", "minutes"), "cancel": ("booking_id",),
    "no-show": ("booking_id",), "correct": ("case_id", "reverses"),
    "statement": ("case_id",), "close": ("case_id",)}
"""The arguments each ``tenant-export migration`` command needs."""


@dataclass(frozen=True)
class Request:
    """One migration command with its arguments parsed; ``at`` None means now."""

    command: str
    case_id: str = ""
    tenant_id: str = ""
    booking_id: str = ""
    critical: bool = False
    at: datetime | None = None
    start: datetime | None = None
    minutes: int = 0
    kind: str = "work"
    on: date | None = None
    note: str = ""
    entry_id: str | None = None
    reverses: str = ""


def parse_request(command: str, arguments: Mapping[str, Any], now: datetime) -> Request:
    """Parse and check a command's arguments (strings as typed) without reading the ledger.

    Ids, minutes, note, dates and times are checked here, times against ``now``; what needs
    the ledger (the case exists and is open, the booking's start) is the desk's to check.

    Raises:
        BadInput: an unknown command, a missing argument or any value refused.
    """
    needed = REQUIRED.get(command)
    if needed is None:
        raise BadInput(f"unknown migration command {shown(command)}")
    a = dict(arguments)
    missing = [name for name in needed if a.get(name) is None]
    if missing:
        raise BadInput(f"migration {command} needs {', '.join(missing)}")
    at = parse_instant(a["at"], "--at") if a.get("at") is not None else None
    if at is not None:
        not_in_future(at, now, "--at")
    start = parse_instant(a["start"], "--start") if a.get("start") is not None else None
    on = parse_day(a["on"], "--on") if a.get("on") is not None else None
    if on is not None:
        not_after_today(on, now, "--on")
    kind = a.get("kind", "work")
    if command == "log" and kind not in ("work", "live"):
        raise BadInput(f"--kind must be work or live, got {shown(kind)}")
    minutes = a.get("minutes", 0)
    with rules():
        if "minutes" in needed:
            validate_minutes(minutes, "--minutes", max_minutes(kind))
        if start is not None:
            check_booking(at or now, start)
    if a.get("tenant_id") is not None:
        validate_tenant_id(a["tenant_id"])
    for name, what in (("case_id", "case id"), ("booking_id", "booking id"),
                       ("entry_id", "entry id"), ("reverses", "entry or booking id")):
        _caller_id(a.get(name), what)
    return Request(command, a.get("case_id", ""), a.get("tenant_id", ""),
                   a.get("booking_id", ""), bool(a.get("critical")), at, start, minutes, kind,
                   on, _check_note(a.get("note", "")), a.get("entry_id"), a.get("reverses", ""))


def statement_csv(statement: Statement) -> bytes:
    """The statement as CSV (RFC 4180, UTF-8), with the total as a last line."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerows(statement.to_csv_rows())
    writer.writerow(["", "total", "", "", "", f"{statement.total_eur:.2f}", "", ""])
    return out.getvalue().encode()
