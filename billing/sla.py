"""The support calendar of Annex 1 and the due times of reactions counted in support hours.

Support hours are Monday to Friday, 08:00-18:00 Europe/Berlin, except public holidays of
Rhineland-Palatinate (``holidays.country_holidays("DE", subdiv="RP")``). Only time inside those
windows counts towards a reaction time:

- a request received inside a window counts from its exact instant;
- a request received outside (before 08:00, from 18:00 on, on a weekend or an RP holiday)
  starts counting at the next opening, 08:00 of the next support day;
- a due time that falls exactly on a closing is that day's 18:00, not the next 08:00.

Windows are built from wall-clock times with :data:`~billing.tz.BERLIN` and durations are
measured in UTC, so the DST switches (always on a Sunday, outside support hours) only change the
offset of the result, never the length of a support day. Days that are not RP public holidays
count in full even where customs differ (24 and 31 December; Epiphany, a holiday elsewhere in
Germany but not in RP).
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from decimal import ROUND_CEILING, Decimal, InvalidOperation
from functools import cache
from importlib import util
from pathlib import Path
from typing import Any

import holidays

from billing.errors import RuleViolation
from billing.tz import BERLIN, require_aware

OPENS = time(8, 0)
CLOSES = time(18, 0)

FIRST_RESPONSE_HOURS = 30
"""Annex 1: reaction time for an ordinary request (and a live-assistance booking request)."""

CRITICAL_RESPONSE_HOURS = 10
"""Annex 1: reaction time for a request marked critical."""

MAX_HOURS = 10_000
"""Guard against a typo such as ``--hours 1e9`` walking the calendar for years."""

_MICROSECONDS_PER_HOUR = Decimal(3_600_000_000)


@cache
def _germany() -> Any:
    """The ``holidays`` calendar of Germany alone (issue 13: ``sla due`` answers in a second).

    ``holidays.country_holidays("DE")`` imports ``holidays.countries``, which loads the calendars
    of all 250 countries (about 0.3 s); the German module is self-contained, so it is loaded by
    itself. Should a release of ``holidays`` lay its files out otherwise, the public call is used.
    """
    package = util.find_spec("holidays")
    if package is None or package.origin is None:
        return None
    spec = util.spec_from_file_location(
        "billing._holidays_de", Path(package.origin).parent / "countries" / "germany.py")
    if spec is None or spec.loader is None:
        return None
    try:
        module = util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module.Germany
    except Exception:  # noqa: BLE001 - any surprise: the public call gives the same calendar
        return None


@cache
def _rp_holidays(year: int) -> frozenset[date]:
    """The RP public holidays of one year, computed once (the ``holidays`` object grows lazily)."""
    germany = _germany()
    if germany is not None:
        return frozenset(germany(subdiv="RP", years=year).keys())
    return frozenset(holidays.country_holidays("DE", subdiv="RP", years=year).keys())


def is_support_day(day: date) -> bool:
    """True for a Monday-Friday that is not a public holiday in Rhineland-Palatinate."""
    return day.weekday() < 5 and day not in _rp_holidays(day.year)


def parse_hours(text: str) -> Decimal:
    """Support hours as an operator types them (``30``, ``1.5``), checked like :func:`due_time`.

    Raises:
        RuleViolation: not a decimal number, not finite, not positive or above ``MAX_HOURS``.
    """
    try:
        value = Decimal(text.strip())
    except InvalidOperation:
        shown = text if len(text) <= 40 else f"{text[:40]}..."
        raise RuleViolation(f"hours must be a number such as 30 or 1.5, got {shown!r}") from None
    _support_hours(value)
    return value


def _support_hours(hours: Decimal | int) -> timedelta:
    """Validate ``hours`` and turn it into an exact duration (rounded up to the microsecond)."""
    if isinstance(hours, bool) or not isinstance(hours, int | Decimal):
        raise RuleViolation(
            f"hours must be an integer or a decimal, not {type(hours).__name__} {hours!r}"
        )
    value = Decimal(hours)
    # Shown in short scientific form: "1e+400" rather than four hundred digits.
    shown = f"{value:.6g}" if value.is_finite() else str(value)
    if not value.is_finite() or value <= 0:
        raise RuleViolation(f"hours must be positive, got {shown}")
    if value > MAX_HOURS:
        raise RuleViolation(f"hours must be at most {MAX_HOURS}, got {shown}")
    micro = (value * _MICROSECONDS_PER_HOUR).to_integral_value(rounding=ROUND_CEILING)
    return timedelta(microseconds=int(micro))


def due_time(received: datetime, hours: Decimal | int) -> datetime:
    """The instant at which ``hours`` support hours have elapsed since ``received``.

    Walks the support windows day by day; that is a few hundred iterations at most.

    Args:
        received: when the request arrived, with any UTC offset (it is converted).
        hours: support hours allowed for the reaction, > 0 (a decimal such as ``1.5`` is fine).

    Returns:
        The due time, timezone-aware, in Europe/Berlin.

    Raises:
        RuleViolation: ``received`` is naive, or ``hours`` is not a positive number.
    """
    remaining = _support_hours(hours)
    start = require_aware(received, "received time").astimezone(UTC)
    day = start.astimezone(BERLIN).date()
    while True:
        if is_support_day(day):
            opens = datetime.combine(day, OPENS, BERLIN).astimezone(UTC)
            closes = datetime.combine(day, CLOSES, BERLIN).astimezone(UTC)
            counting_from = max(opens, start)
            if counting_from < closes:
                available = closes - counting_from
                if remaining <= available:
                    return (counting_from + remaining).astimezone(BERLIN)
                remaining -= available
        day += timedelta(days=1)


def first_response_due(opened: datetime, critical: bool) -> datetime:
    """Due time of the first response to a migration case (10 support hours if critical, else 30).

    Raises:
        RuleViolation: ``opened`` is naive.
    """
    hours = CRITICAL_RESPONSE_HOURS if critical else FIRST_RESPONSE_HOURS
    return due_time(opened, hours)
