"""The statement of an assisted-migration case, built from the facts its ledger recorded.

The ledger is append-only; these frozen dataclasses are the facts it stores, and
:func:`build_statement` turns any sequence of them into the lines a client can check one by one
(DESIGN §3.1). The rules themselves live in :mod:`billing.rules`.

Identity: time entries, corrections and bookings share one id space (``entry_id`` /
``booking_id``); a cancellation or no-show is identified by the booking it concerns (a booking has
at most one outcome). The same fact repeated counts once (a retried command); the same id with
different content is refused, since one of the two figures would be silently lost.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any, Literal, get_args

from billing.errors import RuleViolation
from billing.pricelist import DEFAULT_PRICE_LIST, PriceList
from billing.rules import cancellation_is_free, charge, session_day, validate_minutes
from billing.tz import BERLIN, require_aware

EntryKind = Literal["work", "live", "automation"]
LineKind = Literal["work", "live", "automation", "late-cancellation", "no-show", "correction"]
ENTRY_KINDS: tuple[EntryKind, ...] = get_args(EntryKind)

CSV_HEADER = (
    "date",
    "kind",
    "minutes",
    "billed_minutes",
    "rate_eur_per_hour",
    "amount_eur",
    "ref",
    "note",
)


def _check_id(value: str, what: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise RuleViolation(f"{what} must be a non-empty string, got {value!r}")
    return value


@dataclass(frozen=True)
class TimeEntry:
    """Time spent on the case. For ``live``, ``day`` is the Berlin date the session started."""

    entry_id: str
    day: date
    kind: EntryKind
    minutes: int
    note: str = ""

    def __post_init__(self) -> None:
        _check_id(self.entry_id, "entry id")
        if isinstance(self.day, datetime) or not isinstance(self.day, date):
            raise RuleViolation(f"entry {self.entry_id}: day must be a date, got {self.day!r}")
        if self.kind not in ENTRY_KINDS:
            raise RuleViolation(
                f"entry {self.entry_id}: unknown kind {self.kind!r}; "
                f"expected one of {', '.join(ENTRY_KINDS)}"
            )
        validate_minutes(self.minutes, f"entry {self.entry_id}: minutes")


@dataclass(frozen=True)
class Booking:
    """A live-assistance appointment; the booking rule was checked when it was recorded."""

    booking_id: str
    start: datetime
    minutes: int
    booked_at: datetime

    def __post_init__(self) -> None:
        _check_id(self.booking_id, "booking id")
        require_aware(self.start, f"booking {self.booking_id}: start")
        require_aware(self.booked_at, f"booking {self.booking_id}: booked_at")
        validate_minutes(self.minutes, f"booking {self.booking_id}: minutes")


@dataclass(frozen=True)
class Cancellation:
    """The client cancelled a booking at ``at``; free or charged by the eve rule."""

    booking_id: str
    at: datetime

    def __post_init__(self) -> None:
        _check_id(self.booking_id, "booking id")
        require_aware(self.at, f"cancellation of {self.booking_id}: at")


@dataclass(frozen=True)
class NoShow:
    """The client was not online within 5 minutes of the start: the booked time is charged."""

    booking_id: str

    def __post_init__(self) -> None:
        _check_id(self.booking_id, "booking id")


@dataclass(frozen=True)
class Correction:
    """Reverses the charge of an earlier time entry (or a booking's charge); never an edit."""

    entry_id: str
    reverses: str
    note: str = ""

    def __post_init__(self) -> None:
        _check_id(self.entry_id, "correction id")
        _check_id(self.reverses, f"correction {self.entry_id}: reverses")


Fact = TimeEntry | Booking | Cancellation | NoShow | Correction


@dataclass(frozen=True)
class StatementLine:
    """One checkable line; ``ref`` is the entry, booking or correction id behind it."""

    day: date
    kind: LineKind
    minutes: int
    billed_minutes: int
    rate_eur_per_hour: Decimal
    amount_eur: Decimal
    ref: str
    note: str = ""

    def to_json(self) -> dict[str, Any]:
        """The §3.1 line: required keys first, then ``ref`` and ``note``."""
        return {
            "date": self.day.isoformat(),
            "kind": self.kind,
            "minutes": self.minutes,
            "billed_minutes": self.billed_minutes,
            "rate_eur_per_hour": _money(self.rate_eur_per_hour),
            "amount_eur": _money(self.amount_eur),
            "ref": self.ref,
            "note": self.note,
        }


@dataclass(frozen=True)
class Statement:
    """The lines of a case in date order; the total is their exact sum."""

    case_id: str
    tenant_id: str
    lines: tuple[StatementLine, ...]

    @property
    def total_eur(self) -> Decimal:
        """Exact sum of the line amounts (each already in cents), so it never drifts."""
        return sum((line.amount_eur for line in self.lines), Decimal("0.00"))

    def to_json(self) -> dict[str, Any]:
        """The statement document of DESIGN §3.1; money as strings with two decimals."""
        return {
            "case_id": self.case_id,
            "tenant_id": self.tenant_id,
            "lines": [line.to_json() for line in self.lines],
            "total_eur": _money(self.total_eur),
        }

    def to_csv_rows(self) -> list[list[str]]:
        """Header and one row per line, as strings (the total is not a row: it is not a line)."""
        rows = [list(CSV_HEADER)]
        for line in self.lines:
            doc = line.to_json()
            rows.append([str(doc[column]) for column in CSV_HEADER])
        return rows


def _money(amount: Decimal) -> str:
    """``Decimal("1237.5")`` -> ``"1237.50"``; values here are already whole cents."""
    return f"{amount:.2f}"


def _dedupe(facts: Iterable[Fact]) -> list[Fact]:
    """Drop exact repeats; refuse one id (or one booking outcome) with two different contents."""
    by_id: dict[str, Fact] = {}
    outcomes: dict[str, Fact] = {}
    unique: list[Fact] = []
    for fact in facts:
        if isinstance(fact, TimeEntry | Correction):
            key, seen_in = fact.entry_id, by_id
        elif isinstance(fact, Booking):
            key, seen_in = fact.booking_id, by_id
        elif isinstance(fact, Cancellation | NoShow):
            key, seen_in = fact.booking_id, outcomes
        else:
            raise TypeError(f"not a ledger fact: {fact!r}")
        seen = seen_in.get(key)
        if seen is None:
            seen_in[key] = fact
            unique.append(fact)
        elif seen != fact:
            what = "booking outcome for" if seen_in is outcomes else "id"
            raise RuleViolation(
                f"{what} {key!r} recorded twice with different content: {seen!r} and {fact!r}"
            )
    return unique


def _booking_charge(
    booking: Booking, kind: Literal["late-cancellation", "no-show"], note: str, prices: PriceList
) -> StatementLine:
    """The booked time charged as a live session at the rate of the appointment's date."""
    day = session_day(booking.start)
    billed, rate, amount = charge(kind, booking.minutes, day, prices)
    return StatementLine(day, kind, booking.minutes, billed, rate, amount, booking.booking_id, note)


def build_statement(
    case_id: str, tenant_id: str, facts: Iterable[Fact], prices: PriceList = DEFAULT_PRICE_LIST
) -> Statement:
    """Price every fact of a case and list the lines in date order (ties keep ledger order).

    Args:
        case_id: the migration case.
        tenant_id: the client the statement is for.
        facts: the ledger of the case, in the order it was recorded.
        prices: the price list; the default is Annex 1's 150.00 EUR/h.

    Returns:
        The statement; a free cancellation and an uneventful booking give no line.

    Raises:
        RuleViolation: a conflicting repeat, a fact about an unknown booking, a cancellation
            before its booking, a correction of nothing (or twice), or no price for a date.
    """
    _check_id(case_id, "case id")
    _check_id(tenant_id, "tenant id")
    unique = _dedupe(facts)
    bookings = {fact.booking_id: fact for fact in unique if isinstance(fact, Booking)}
    charged: dict[str, StatementLine] = {}
    numbered: list[tuple[int, StatementLine]] = []
    for number, fact in enumerate(unique):
        line: StatementLine | None = None
        if isinstance(fact, TimeEntry):
            billed, rate, amount = charge(fact.kind, fact.minutes, fact.day, prices)
            line = StatementLine(
                fact.day, fact.kind, fact.minutes, billed, rate, amount, fact.entry_id, fact.note
            )
        elif isinstance(fact, Cancellation | NoShow):
            booking = bookings.get(fact.booking_id)
            if booking is None:
                raise RuleViolation(f"unknown booking {fact.booking_id!r}")
            if isinstance(fact, NoShow):
                line = _booking_charge(booking, "no-show", "client not online", prices)
            elif fact.at < booking.booked_at:
                raise RuleViolation(f"booking {booking.booking_id!r} cancelled before it was made")
            elif not cancellation_is_free(fact.at, booking.start):
                note = f"cancelled {fact.at.astimezone(BERLIN).isoformat()}"
                line = _booking_charge(booking, "late-cancellation", note, prices)
        if line is not None:
            charged[line.ref] = line
            numbered.append((number, line))
    reversed_by: dict[str, str] = {}
    for number, fact in enumerate(unique):
        if isinstance(fact, Correction):
            numbered.append((number, _reversal(fact, charged, reversed_by)))
    numbered.sort(key=lambda item: (item[1].day, item[0]))
    return Statement(case_id, tenant_id, tuple(line for _, line in numbered))


def _reversal(
    fact: Correction, charged: dict[str, StatementLine], reversed_by: dict[str, str]
) -> StatementLine:
    """The negative twin of the line ``fact`` reverses, on the same date and at the same rate."""
    target = charged.get(fact.reverses)
    if target is None:
        raise RuleViolation(
            f"correction {fact.entry_id!r} reverses {fact.reverses!r}, which has no charged line"
        )
    earlier = reversed_by.setdefault(fact.reverses, fact.entry_id)
    if earlier != fact.entry_id:
        raise RuleViolation(
            f"correction {fact.entry_id!r}: {fact.reverses!r} was already reversed by {earlier!r}"
        )
    note = f"reverses {fact.reverses}" + (f": {fact.note}" if fact.note else "")
    return StatementLine(
        target.day,
        "correction",
        -target.minutes,
        -target.billed_minutes,
        target.rate_eur_per_hour,
        -target.amount_eur,
        fact.entry_id,
        note,
    )
