"""The business time zone and the two checks every rule needs on a moment in time."""

from __future__ import annotations

from datetime import date, datetime
from zoneinfo import ZoneInfo

from billing.errors import RuleViolation

BERLIN = ZoneInfo("Europe/Berlin")
"""Support hours, booking days and price days are all Berlin calendar notions (Annex 1)."""


def require_aware(value: datetime, what: str) -> datetime:
    """Return ``value`` unchanged, refusing a naive datetime: its instant would be a guess.

    Raises:
        RuleViolation: ``value`` has no UTC offset.
    """
    if not isinstance(value, datetime):
        raise TypeError(f"{what} must be a datetime, not {type(value).__name__}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise RuleViolation(
            f"{what} {value.isoformat()} has no UTC offset; give it as ISO 8601 with an offset"
        )
    return value


def berlin_date(value: datetime, what: str = "time") -> date:
    """The Europe/Berlin calendar date of an aware instant (the terms count days there)."""
    return require_aware(value, what).astimezone(BERLIN).date()
