"""Times and durations as operators type them, parsed once and refused clearly (``BadInput``)."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime

from kernel.errors import BadInput

MAX_LINK_TTL_SECONDS = 7 * 24 * 3600  # S3 SigV4 presigned URLs cannot live longer
DEFAULT_LINK_TTL_SECONDS = MAX_LINK_TTL_SECONDS

_DURATION_RE = re.compile(r"\s*([0-9]+)\s*([smhd]?)\s*")  # ASCII digits only
_MAX_DURATION_DIGITS = 15  # int() of thousands of digits is slow, then refused
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
# Beyond these a date is a typo, and Python's datetime arithmetic overflows near year 9999.
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(2200, 1, 1, tzinfo=UTC)


def shown(text: object, limit: int = 60) -> str:
    """``repr`` of a value for an error message, cut to ``limit`` characters (a pasted megabyte
    must not become the message)."""
    if isinstance(text, int) and not -10**15 < text < 10**15:
        return "a number of more than 15 digits"  # str() of a huge int is slow, or refused
    text = repr(text)
    return text if len(text) <= limit else f"{text[:limit]}...({len(text)} characters)"


def parse_duration(text: str | int) -> int:
    """Seconds from ``300``, ``90s``, ``15m``, ``12h`` or ``7d``."""
    if isinstance(text, bool):
        raise BadInput(f"invalid duration {text!r}")
    if isinstance(text, int):
        seconds = text
    else:
        match = _DURATION_RE.fullmatch(text) if isinstance(text, str) else None
        if not match:
            raise BadInput(f"invalid duration {shown(text)}: use seconds (300) or 90s, 15m, "
                           "12h, 7d")
        digits = match.group(1).lstrip("0") or "0"
        if len(digits) > _MAX_DURATION_DIGITS:
            raise BadInput(f"invalid duration {shown(text)}: far too long; signed S3 links live "
                           f"1 s to 7 days ({MAX_LINK_TTL_SECONDS} s)")
        seconds = int(digits) * _UNITS[match.group(2)]
    if seconds <= 0:
        raise BadInput(f"invalid duration {shown(text)}: must be positive")
    return seconds


def check_link_ttl(seconds: int, text: str | int | None = None) -> int:
    """The TTL unchanged, or ``BadInput`` outside 1 s .. 7 days (the SigV4 limit)."""
    if not 0 < seconds <= MAX_LINK_TTL_SECONDS:
        given = shown(seconds if text is None else text)
        raise BadInput(f"link TTL {given} is {shown(seconds)} s; signed S3 links live 1 s to "
                       f"7 days ({MAX_LINK_TTL_SECONDS} s)")
    return seconds


def parse_link_ttl(text: str | int) -> int:
    """A link lifetime in seconds, refused above the 7-day SigV4 limit."""
    return check_link_ttl(parse_duration(text), text)


def parse_instant(text: str, what: str) -> datetime:
    """An ISO 8601 instant with an offset (a naive time is ambiguous across DST), from 1970 up
    to 2199: beyond is a typo, and Python's datetime arithmetic overflows near year 9999.

    Raises:
        BadInput: not a date-time, no offset, or out of range.
    """
    try:
        value = datetime.fromisoformat(text)
    except (ValueError, TypeError) as err:
        raise BadInput(f"{what}: {shown(text)} is not an ISO 8601 date-time") from err
    if value.tzinfo is None or value.utcoffset() is None:
        raise BadInput(f"{what}: {shown(text)} needs an offset, e.g. 2026-12-01T10:00:00+01:00")
    try:
        in_range = EARLIEST <= value <= LATEST
    except OverflowError:  # 9999-12-31T23:00-05:00 is in the year 10000 in UTC
        in_range = False
    if not in_range:
        raise BadInput(f"{what}: {shown(text)} is outside {EARLIEST.year}..{LATEST.year - 1}")
    return value


def parse_day(text: str, what: str) -> date:
    """An ISO 8601 calendar date (``YYYY-MM-DD``) from 1970 up to 2199.

    Raises:
        BadInput: not a date, or out of range.
    """
    try:
        value = date.fromisoformat(text)
    except (ValueError, TypeError) as err:
        raise BadInput(f"{what}: {shown(text)} is not an ISO 8601 date (YYYY-MM-DD)") from err
    if not EARLIEST.date() <= value < LATEST.date():
        raise BadInput(f"{what}: {shown(text)} is outside {EARLIEST.year}..{LATEST.year - 1}")
    return value
