"""Billing rules of assisted migration (terms 14.2 and Annex 1), as pure functions.

What the terms say: help moving content to a follow-on provider is billed by the time spent at the
current price list (14.2). Live assistance is consulting at 150 EUR per hour, minimum unit 30
minutes, booked at least 3 days ahead, cancelled at least 1 day ahead (cancelling on the eve of
the appointment suffices); a client not online within 5 minutes counts as used (Annex 1).

The rules as implemented, with every choice the terms left open marked **choice**:

1. **Kinds of time.** ``live``: a live-assistance session held. ``work``: other tracked work.
   ``automation``: an automated step of the case recorded with its duration. **Choice:** the terms
   only price live assistance; other work and automated steps are billed "by time spent" at the
   ``work`` rate of the price list (150.00 EUR/h by default), and automated steps exactly like
   ``work``.
2. **Minutes** are whole, positive numbers; 0, negatives and fractions are refused.
   **Choice:** one time entry or booking holds at most :data:`MAX_ENTRY_MINUTES` (600, a support
   day of 08:00-18:00): a longer figure is a typo, and longer work is logged as several entries
   (one per day or per person). An automated step, measured by the system, holds at most
   :data:`MAX_AUTOMATION_MINUTES` (a week). A larger figure is refused when it is recorded; one
   already in a ledger (written before the bound existed) is priced at nothing and flagged, see
   rule 11.
3. **Live sessions** are billed in whole 30-minute units, rounded up (1 -> 30, 30 -> 30,
   31 -> 60). Amount = billed minutes x rate / 60, i.e. rate/2 per unit. **Choice:** with a rate
   whose half is not whole cents (155.55 -> 77.775) the line amount is rounded half-up to the
   cent once per line, never per unit.
4. **Other work** (``work``, ``automation``) is billed per minute: minutes x rate / 60, rounded
   half-up to the cent (``ROUND_HALF_UP``) once per entry. **Choice:** rounding per entry, not on
   the total, so every statement line can be checked alone and the total is the exact sum of
   the lines.
5. **Which rate.** The rate in force on the Berlin calendar date the work was done. **Choice:**
   a live session is priced on the date of its start; a session from 23:30 on the eve of a price
   change to 00:30 is billed at the old rate in full (one session, one rate). A ``work`` entry
   carries its own date. Late cancellations and no-shows use the appointment's date.
6. **Booking lead time.** "At least 3 days ahead" **choice:** counted in Berlin calendar days,
   not hours: the appointment's date must be at least 3 days after the date of booking (booked
   on a Monday at any time -> Thursday 00:00 or later). Starts in the past are refused, and so
   are starts more than :data:`BOOKING_HORIZON_DAYS` (365) days ahead (**choice**: a typo such
   as 2062 for 2026, not a plan).
7. **Free cancellation** up to the end of the eve of the appointment (23:59:59.999999 Berlin time
   of the day before its date). **Choice:** "at least 1 day ahead" is read through the terms' own
   example: the calendar day before suffices, whatever the hour. From 00:00 of the appointment
   day on (including after the start) the booked time is charged.
8. **Late cancellation and no-show** are charged the booked minutes as a live session (30-minute
   units) at the live rate in force on the appointment's date. **Choice:** a no-show may be
   recorded only from 5 minutes after the start (the terms' grace period), see
   :func:`check_no_show`; whether the client came online is the operator's statement, not ours.
9. **Free cancellations** produce no statement line (there is nothing to check; the ledger keeps
   the cancellation). A booking neither cancelled nor missed produces no line either: the session
   held is recorded as a ``live`` time entry with its real duration.
10. **Corrections** never edit: they add a reversing line (negative minutes, billed minutes and
    amount, same date and rate as the line reversed); the right figure is then entered anew.
11. **Unbillable lines.** **Choice:** a fact whose minutes exceed the bound of rule 2 (only an
    older version could record one) is listed with its recorded minutes but billed nothing
    (0 billed minutes, 0.00 EUR) and flagged; the case cannot be closed until it is reversed
    (rule 10), so a wrong figure never reaches a client nor blocks the case.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Literal, NamedTuple

from billing.errors import RuleViolation
from billing.pricelist import MAX_RATE, PriceList, Tariff
from billing.tz import BERLIN, berlin_date, require_aware

LIVE_UNIT_MINUTES = 30
"""Annex 1: the minimum and billing unit of live assistance."""

BOOKING_LEAD_DAYS = 3
"""Annex 1: live assistance is booked at least this many (calendar) days ahead."""

BOOKING_HORIZON_DAYS = 365
"""Rule 6: an appointment further ahead than this is a typo, not a plan."""

NO_SHOW_GRACE = timedelta(minutes=5)
"""Annex 1: a client not online this long after the start has missed the appointment."""

MAX_ENTRY_MINUTES = 600
"""Rule 2: one time entry or booking holds at most a support day (08:00-18:00, Annex 1)."""

MAX_AUTOMATION_MINUTES = 7 * 24 * 60
"""Rule 2: an automated step, measured by the system, holds at most a week; also the most any
line is priced for, so the decimal arithmetic never leaves its 28 digits."""

ChargeKind = Literal["work", "live", "automation", "late-cancellation", "no-show"]
"""Kinds of statement line that carry a charge (a correction reverses one of them)."""

TARIFF_OF: Mapping[str, Tariff] = {
    "work": "work",
    "automation": "work",
    "live": "live",
    "late-cancellation": "live",
    "no-show": "live",
}
"""Which price of the list, and which rounding, each kind of charge uses (rules 1, 3, 4, 8)."""

_CENT = Decimal("0.01")
_MINUTES_PER_HOUR = 60


class Charge(NamedTuple):
    """What one entry costs: the figures of a statement line."""

    billed_minutes: int
    rate_eur_per_hour: Decimal
    amount_eur: Decimal


def max_minutes(kind: str) -> int:
    """The most minutes one fact of ``kind`` may hold (rule 2)."""
    return MAX_AUTOMATION_MINUTES if kind == "automation" else MAX_ENTRY_MINUTES


def validate_minutes(minutes: int, what: str = "minutes",
                     maximum: int | None = MAX_ENTRY_MINUTES) -> int:
    """Return ``minutes`` if it is a whole number in ``1..maximum`` (rule 2).

    ``maximum=None`` checks only the kind of number: facts read back from a ledger accept any
    size an older version may have recorded (rule 11 prices them).

    Raises:
        RuleViolation: zero, negative, fractional, above ``maximum`` or not a number at all.
    """
    if isinstance(minutes, bool) or not isinstance(minutes, int):
        raise RuleViolation(f"{what} must be a whole number of minutes, got {minutes!r}")
    if minutes <= 0:
        raise RuleViolation(f"{what} must be positive, got {describe_number(minutes)}")
    if maximum is not None and minutes > maximum:
        raise RuleViolation(f"{what} must be at most {maximum}, got {describe_number(minutes)}")
    return minutes


def describe_number(value: int) -> str:
    """A number for a message: as is up to 40 digits, else its size (a 5,000-digit int cannot
    even be turned into a string, and would not be a readable message)."""
    if -10**40 < value < 10**40:
        return str(value)
    digits = int(abs(value).bit_length() * 0.30103) + 1
    return f"{'-' if value < 0 else ''}a number of about {digits} digits"


def _to_cents(amount: Decimal) -> Decimal:
    return amount.quantize(_CENT, rounding=ROUND_HALF_UP)


def _check_rate(rate_eur_per_hour: Decimal) -> Decimal:
    if not isinstance(rate_eur_per_hour, Decimal) or not rate_eur_per_hour.is_finite():
        raise RuleViolation(f"rate must be a finite Decimal, got {rate_eur_per_hour!r}")
    if rate_eur_per_hour <= 0:
        raise RuleViolation(f"rate must be positive, got {rate_eur_per_hour}")
    if rate_eur_per_hour > MAX_RATE:
        raise RuleViolation(f"rate must be at most {MAX_RATE}, got {rate_eur_per_hour:.2E}")
    return rate_eur_per_hour


def live_billed_minutes(minutes: int) -> int:
    """Minutes of a live session rounded up to whole 30-minute units (rule 3)."""
    units = -(-validate_minutes(minutes, maximum=MAX_AUTOMATION_MINUTES) // LIVE_UNIT_MINUTES)
    return units * LIVE_UNIT_MINUTES


def live_amount(minutes: int, rate_eur_per_hour: Decimal) -> Decimal:
    """Amount in EUR of a live session of ``minutes`` (rule 3): units x rate/2, to the cent."""
    billed = live_billed_minutes(minutes)
    return _to_cents(billed * _check_rate(rate_eur_per_hour) / _MINUTES_PER_HOUR)


def work_amount(minutes: int, rate_eur_per_hour: Decimal) -> Decimal:
    """Amount in EUR of ``minutes`` of other work (rule 4): per minute, half-up to the cent."""
    priced = validate_minutes(minutes, maximum=MAX_AUTOMATION_MINUTES)
    return _to_cents(priced * _check_rate(rate_eur_per_hour) / _MINUTES_PER_HOUR)


def charge(kind: str, minutes: int, day: date, prices: PriceList) -> Charge:
    """Price ``minutes`` of ``kind`` done on Berlin date ``day`` (rules 1-5, 8).

    Raises:
        RuleViolation: unknown kind, bad minutes, or no price in force on ``day``.
    """
    tariff = TARIFF_OF.get(kind)
    if tariff is None:
        raise RuleViolation(f"unknown kind {kind!r}: expected one of {', '.join(TARIFF_OF)}")
    rate = prices.rate_on(day, tariff)
    if tariff == "live":
        return Charge(live_billed_minutes(minutes), rate, live_amount(minutes, rate))
    return Charge(minutes, rate, work_amount(minutes, rate))


def session_day(start: datetime) -> date:
    """The date whose rate applies to a live session or appointment: its start, in Berlin (rule 5).

    Raises:
        RuleViolation: ``start`` is naive.
    """
    return berlin_date(start, "session start")


def earliest_bookable_date(at: datetime) -> date:
    """First appointment date a booking made at ``at`` may have (rule 6)."""
    return berlin_date(at, "booking time") + timedelta(days=BOOKING_LEAD_DAYS)


def check_booking(at: datetime, start: datetime) -> None:
    """Refuse a live-assistance booking made at ``at`` for ``start`` unless 3 days ahead (rule 6).

    Raises:
        RuleViolation: naive times, a start not after ``at``, too short notice (the message
            names the earliest bookable date), or a start more than a year ahead.
    """
    require_aware(at, "booking time")
    require_aware(start, "appointment start")
    earliest = earliest_bookable_date(at)
    if start <= at:
        raise RuleViolation(
            f"booking refused: the start {start.isoformat()} is not in the future; "
            f"the earliest bookable date is {earliest}"
        )
    if start - at > timedelta(days=BOOKING_HORIZON_DAYS):
        raise RuleViolation(
            f"booking refused: the start {start.isoformat()} is more than "
            f"{BOOKING_HORIZON_DAYS} days ahead; check the year"
        )
    wanted = session_day(start)
    if wanted < earliest:
        raise RuleViolation(
            f"booking refused: live assistance must be booked at least {BOOKING_LEAD_DAYS} days "
            f"ahead; booked on {berlin_date(at)} for {wanted}, the earliest bookable date is "
            f"{earliest} (Europe/Berlin)"
        )


def cancellation_is_free(at: datetime, start: datetime) -> bool:
    """True when a cancellation at ``at`` is free: by the end of the eve of ``start`` (rule 7).

    Raises:
        RuleViolation: naive times.
    """
    return berlin_date(at, "cancellation time") < session_day(start)


def check_no_show(at: datetime, start: datetime) -> None:
    """Refuse recording a no-show at ``at`` before the 5-minute grace after ``start`` (rule 8).

    Raises:
        RuleViolation: naive times, or ``at`` earlier than ``start`` + 5 minutes.
    """
    require_aware(at, "no-show time")
    grace_ends = require_aware(start, "appointment start").astimezone(UTC) + NO_SHOW_GRACE
    if at < grace_ends:
        not_before = grace_ends.astimezone(BERLIN).isoformat()
        raise RuleViolation(
            f"no-show refused: the client has until 5 minutes after the start; "
            f"record it from {not_before}"
        )
