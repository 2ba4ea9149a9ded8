"""The versioned price list: hourly rates in EUR, each in force from an effective date.

Terms 14.2 bill assisted migration "at the current price list"; the rate that applies is the one
in force on the day the work was done, so older entries are kept, never edited. Operators change
prices by appending an entry to a TOML file::

    # One [[prices]] table per version, oldest first; each is in force from `effective`
    # (a Berlin calendar date) until the next one's `effective`.
    [[prices]]
    effective = 2020-01-01          # TOML date (or the string "2020-01-01")
    live_eur_per_hour = "150.00"    # live assistance (Annex 1), billed in 30-minute units
    work_eur_per_hour = "150.00"    # other tracked work and automated steps, billed per minute

Rules the loader enforces (a violation names the file and the entry):

- at least one entry; effective dates strictly increasing (no duplicates, no reordering);
- rates are strings (``"150.00"``) or integers (``150``), never TOML floats (``150.0`` is a
  binary float and has no place in money); positive; at most :data:`MAX_RATE` (10,000.00: more
  is a typo, and a bounded rate keeps every amount far inside the decimal precision); at most
  two decimal places (whole cents);
- no keys other than ``prices``, ``effective``, ``live_eur_per_hour``, ``work_eur_per_hour``
  (a misspelt key must not silently fall back to something else).

Without a file, :data:`DEFAULT_PRICE_LIST` applies: 150.00 EUR/h for both kinds since 2020-01-01.
"""

from __future__ import annotations

import bisect
import tomllib
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Literal, get_args

from billing.errors import PriceListError

Tariff = Literal["live", "work"]
"""The two prices of the list: live assistance, and every other kind of tracked work."""

TARIFFS: tuple[Tariff, ...] = get_args(Tariff)

_CENT = Decimal("0.01")
MAX_RATE = Decimal("10000.00")
"""The highest hourly rate a price list may hold (EUR); more is a typo."""
_ENTRY_KEYS = frozenset({"effective", "live_eur_per_hour", "work_eur_per_hour"})

DEFAULT_PRICES_TOML = """\
[[prices]]
effective = 2020-01-01
live_eur_per_hour = "150.00"
work_eur_per_hour = "150.00"
"""
"""The embedded default, also a template operators can copy."""


@dataclass(frozen=True)
class PriceEntry:
    """One version of the price list, in force from ``effective`` (inclusive)."""

    effective: date
    live_eur_per_hour: Decimal
    work_eur_per_hour: Decimal

    def rate(self, tariff: Tariff) -> Decimal:
        """The hourly rate of one tariff in this version."""
        return self.live_eur_per_hour if tariff == "live" else self.work_eur_per_hour


@dataclass(frozen=True)
class PriceList:
    """Price versions sorted by effective date; validated on construction."""

    entries: tuple[PriceEntry, ...]
    source: str = "<embedded default>"
    """Where the list came from (a file name), quoted in every error message."""

    def __post_init__(self) -> None:
        if not self.entries:
            raise PriceListError(f"{self.source}: the price list has no [[prices]] entry")
        for number, entry in enumerate(self.entries, start=1):
            where = f"{self.source}: entry {number} (effective {entry.effective})"
            for tariff in TARIFFS:
                _check_rate(entry.rate(tariff), f"{where}: {tariff}_eur_per_hour")
        for number, (before, after) in enumerate(
            zip(self.entries, self.entries[1:], strict=False), start=2
        ):
            if after.effective <= before.effective:
                raise PriceListError(
                    f"{self.source}: entry {number} (effective {after.effective}) must be later "
                    f"than entry {number - 1} (effective {before.effective}); effective dates "
                    "must be strictly increasing"
                )

    def rate_on(self, day: date, kind: str) -> Decimal:
        """The hourly rate in EUR of ``kind`` (``"live"`` or ``"work"``) in force on ``day``.

        Args:
            day: the Berlin calendar date the work was done (not a datetime).
            kind: a tariff name; callers map ``automation`` to ``work`` (see ``billing.rules``).

        Raises:
            PriceListError: unknown kind, or ``day`` precedes the first effective date.
        """
        if isinstance(day, datetime) or not isinstance(day, date):
            raise TypeError(f"rate_on needs a calendar date, not {type(day).__name__}")
        if kind not in TARIFFS:
            raise PriceListError(
                f"unknown price kind {kind!r}: the price list has {', '.join(TARIFFS)}"
            )
        index = bisect.bisect_right([entry.effective for entry in self.entries], day) - 1
        if index < 0:
            raise PriceListError(
                f"{self.source}: no price in force on {day}; the first entry is effective "
                f"{self.entries[0].effective}"
            )
        entry = self.entries[index]
        return entry.live_eur_per_hour if kind == "live" else entry.work_eur_per_hour

    @classmethod
    def from_toml(cls, text: str, source: str = "<string>") -> PriceList:
        """Parse the TOML shape shown in the module docstring.

        Raises:
            PriceListError: malformed TOML or any rule of the module docstring broken.
        """
        try:
            document = tomllib.loads(text)
        except tomllib.TOMLDecodeError as err:
            raise PriceListError(f"{source}: not valid TOML: {err}") from err
        unknown = sorted(set(document) - {"prices"})
        if unknown:
            raise PriceListError(
                f"{source}: unknown key(s) {', '.join(unknown)}; expected [[prices]]"
            )
        raw_entries = document.get("prices")
        if not isinstance(raw_entries, list):
            raise PriceListError(f"{source}: expected one or more [[prices]] tables")
        entries = tuple(
            _parse_entry(raw, f"{source}: entry {number}")
            for number, raw in enumerate(raw_entries, start=1)
        )
        return cls(entries=entries, source=source)

    @classmethod
    def from_file(cls, path: Path) -> PriceList:
        """Read and parse a price list file (UTF-8 TOML).

        Raises:
            PriceListError: the file cannot be read or is invalid.
        """
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as err:
            raise PriceListError(f"{path}: cannot read the price list: {err}") from err
        return cls.from_toml(text, source=str(path))


def _parse_entry(raw: object, where: str) -> PriceEntry:
    """One ``[[prices]]`` table to a :class:`PriceEntry`; ``where`` prefixes every message."""
    if not isinstance(raw, dict):
        raise PriceListError(f"{where}: expected a [[prices]] table")
    unknown = sorted(set(raw) - _ENTRY_KEYS)
    missing = sorted(_ENTRY_KEYS - set(raw))
    if unknown:
        raise PriceListError(f"{where}: unknown key(s) {', '.join(unknown)}")
    if missing:
        raise PriceListError(f"{where}: missing key(s) {', '.join(missing)}")
    effective = _parse_date(raw["effective"], where)
    where = f"{where} (effective {effective})"
    return PriceEntry(
        effective=effective,
        live_eur_per_hour=_parse_rate(raw["live_eur_per_hour"], f"{where}: live_eur_per_hour"),
        work_eur_per_hour=_parse_rate(raw["work_eur_per_hour"], f"{where}: work_eur_per_hour"),
    )


def _parse_date(value: object, where: str) -> date:
    """A TOML local date, or an ISO date string; a date-time is refused (prices change by day)."""
    if isinstance(value, datetime):
        raise PriceListError(f"{where}: effective must be a date such as 2026-07-01, not a time")
    if isinstance(value, date):
        return value
    if isinstance(value, str):
        try:
            return date.fromisoformat(value)
        except ValueError:
            pass
    raise PriceListError(f"{where}: effective must be a date such as 2026-07-01, got {value!r}")


def _parse_rate(value: object, where: str) -> Decimal:
    """A rate from a string or an integer; floats are refused (binary fractions are not money)."""
    if isinstance(value, float):
        raise PriceListError(
            f'{where}: {value!r} is a TOML float; write the rate as a string, e.g. "150.00"'
        )
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise PriceListError(f'{where}: expected a string such as "150.00", got {value!r}')
    try:
        rate = Decimal(value.strip() if isinstance(value, str) else value)
    except InvalidOperation:
        raise PriceListError(f"{where}: {value!r} is not a decimal number") from None
    return _check_rate(rate, where)


def _check_rate(rate: Decimal, where: str) -> Decimal:
    """Positive, finite, whole cents: anything else cannot be printed as "150.00" without loss."""
    if not isinstance(rate, Decimal) or not rate.is_finite():
        raise PriceListError(f"{where}: {rate!r} is not a finite decimal")
    if rate <= 0:
        raise PriceListError(f"{where}: rate must be positive, got {rate}")
    if rate > MAX_RATE:
        raise PriceListError(f"{where}: rate {rate:.2E} is too large: at most {MAX_RATE} EUR "
                             "per hour")
    if rate != rate.quantize(_CENT):
        raise PriceListError(f"{where}: rate {rate} has more than two decimal places")
    return rate


DEFAULT_PRICE_LIST = PriceList(
    entries=(PriceEntry(date(2020, 1, 1), Decimal("150.00"), Decimal("150.00")),),
)
"""Annex 1: 150 EUR per hour for live assistance; the same rate for other tracked work."""
