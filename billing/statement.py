"""The statement of an assisted-migration case, built from the facts its ledger recorded.

The ledger is append-only; these frozen dataclasses are the facts it stores, and
:func:`build_statement` turns any sequence of them into the lines a client can check one by one
(DESIGN §3.1). The rules themselves live in :mod:`billing.rules`.

Identity: time entries, corrections and bookings share one id space (``entry_id`` /
``booking_id``); a cancellation or no-show is identified by the booking it concerns (a booking has
at most one outcome). The same fact repeated counts once (a retried command); the same id with
different content is refused, since one of the two figures would be silently lost.

The facts take what a ledger holds, including what an older version let through (minutes above
the bound of rule 2, long notes): bounds are checked when a fact is *recorded*
(:func:`~billing.rules.validate_minutes`, :func:`validate_note`), and a statement built from an
old ledger lists an out-of-bounds line unbilled and flagged (rule 11) instead of failing.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any, Literal, get_args

from billing.errors import RuleViolation
from billing.pricelist import DEFAULT_PRICE_LIST, PriceList
from billing.rules import (
    TARIFF_OF,
    cancellation_is_free,
    charge,
    describe_number,
    max_minutes,
    session_day,
    validate_minutes,
)
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


MAX_NOTE_CHARS = 500
"""A note is one line of a client's statement, not a document."""

_BIDI_CONTROLS = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e"
                           "\u2066\u2067\u2068\u2069")


def validate_note(note: str, what: str = "note") -> str:
    """Return ``note`` if it can stand on one line of a statement the client checks.

    Refused: more than :data:`MAX_NOTE_CHARS` characters, control characters (NUL, line
    breaks, tabs), lone surrogates (bytes that were not UTF-8) and bidirectional overrides
    (which can make a line read differently from what it holds).

    Raises:
        RuleViolation: the note breaks one of those rules.
    """
    if not isinstance(note, str):
        raise RuleViolation(f"{what} must be text, got {type(note).__name__}")
    if len(note) > MAX_NOTE_CHARS:
        raise RuleViolation(f"{what} has {len(note)} characters; at most {MAX_NOTE_CHARS}")
    for char in note:
        if unicodedata.category(char) in ("Cc", "Cs") or char in _BIDI_CONTROLS:
            raise RuleViolation(f"{what} contains the control character U+{ord(char):04X}; "
                                "write it on one line, in plain text")
    return note


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
        validate_minutes(self.minutes, f"entry {self.entry_id}: minutes", maximum=None)


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
        validate_minutes(self.minutes, f"booking {self.booking_id}: minutes", maximum=None)


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
    unbillable: bool = False
    """Rule 11: minutes above the bound, listed but billed nothing until reversed."""

    def to_json(self) -> dict[str, Any]:
        """The §3.1 line: required keys first, then ``ref``, ``note`` (and ``unbillable``)."""
        doc: dict[str, Any] = {
            "date": self.day.isoformat(),
            "kind": self.kind,
            "minutes": self.minutes,
            "billed_minutes": self.billed_minutes,
            "rate_eur_per_hour": _money(self.rate_eur_per_hour),
            "amount_eur": _money(self.amount_eur),
            "ref": self.ref,
            "note": self.note,
        }
        if self.unbillable:
            doc["unbillable"] = True
        return doc


@dataclass(frozen=True)
class Statement:
    """The lines of a case in date order; the total is their exact sum."""

    case_id: str
    tenant_id: str
    lines: tuple[StatementLine, ...]
    unresolved: tuple[str, ...] = ()
    """Refs of unbillable lines (rule 11) not yet reversed: the case cannot be closed."""

    @property
    def total_eur(self) -> Decimal:
        """Exact sum of the line amounts (each already in cents), so it never drifts."""
        return sum((line.amount_eur for line in self.lines), Decimal("0.00"))

    def to_json(self) -> dict[str, Any]:
        """The statement document of DESIGN §3.1; money as strings with two decimals.

        ``unresolved`` is added only when an unbillable line waits for its reversal.
        """
        doc: dict[str, Any] = {
            "case_id": self.case_id,
            "tenant_id": self.tenant_id,
            "lines": [line.to_json() for line in self.lines],
            "total_eur": _money(self.total_eur),
        }
        if self.unresolved:
            doc["unresolved"] = list(self.unresolved)
        return doc

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


def _priced(day: date, kind: LineKind, minutes: int, ref: str, note: str, prices: PriceList
            ) -> StatementLine:
    """One charged line, or (rule 11) an unbillable one when ``minutes`` exceed the bound."""
    bound = max_minutes(kind)
    if minutes > bound:
        rate = prices.rate_on(day, TARIFF_OF[kind])
        flag = (f"NOT BILLED: the recorded minutes ({describe_number(minutes)}) exceed the "
                f"{bound} one entry may hold; reverse it and record the right figure")
        return StatementLine(day, kind, minutes, 0, rate, Decimal("0.00"), ref,
                             f"{flag}; {note}" if note else flag, unbillable=True)
    billed, rate, amount = charge(kind, minutes, day, prices)
    return StatementLine(day, kind, minutes, billed, rate, amount, ref, note)


def _booking_charge(
    booking: Booking, kind: Literal["late-cancellation", "no-show"], note: str, prices: PriceList
) -> StatementLine:
    """The booked time charged as a live session at the rate of the appointment's date."""
    return _priced(session_day(booking.start), kind, booking.minutes, booking.booking_id, note,
                   prices)


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
            line = _priced(fact.day, fact.kind, fact.minutes, fact.entry_id, fact.note, prices)
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
    unresolved = tuple(ref for ref, line in charged.items()
                       if line.unbillable and ref not in reversed_by)
    return Statement(case_id, tenant_id, tuple(line for _, line in numbered), unresolved)


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
        Decimal("0.00") - target.amount_eur,  # never "-0.00" for an unbillable line
        fact.entry_id,
        note,
    )
