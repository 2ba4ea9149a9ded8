"""billing.pricelist: versioned rates from operator-edited TOML, refused when ambiguous."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from billing.errors import PriceListError, RuleViolation
from billing.pricelist import (
    DEFAULT_PRICE_LIST,
    DEFAULT_PRICES_TOML,
    PriceEntry,
    PriceList,
)

TWO_VERSIONS = """\
[[prices]]
effective = 2020-01-01
live_eur_per_hour = "150.00"
work_eur_per_hour = "150.00"

[[prices]]
effective = 2026-07-01
live_eur_per_hour = "180.00"
work_eur_per_hour = 160
"""


def test_default_is_150_for_both_kinds_since_2020() -> None:
    assert DEFAULT_PRICE_LIST.rate_on(date(2020, 1, 1), "live") == Decimal("150.00")
    assert DEFAULT_PRICE_LIST.rate_on(date(2031, 5, 5), "work") == Decimal("150.00")
    assert PriceList.from_toml(DEFAULT_PRICES_TOML).entries == DEFAULT_PRICE_LIST.entries


def test_rate_in_force_is_the_latest_effective_on_or_before_the_day() -> None:
    prices = PriceList.from_toml(TWO_VERSIONS, source="prices.toml")
    assert prices.rate_on(date(2026, 6, 30), "live") == Decimal("150.00")
    assert prices.rate_on(date(2026, 6, 30), "work") == Decimal("150.00")
    assert prices.rate_on(date(2026, 7, 1), "live") == Decimal("180.00")
    assert prices.rate_on(date(2026, 7, 1), "work") == Decimal("160")
    assert prices.rate_on(date(2030, 1, 1), "work") == Decimal("160")


def test_effective_may_be_an_iso_string() -> None:
    prices = PriceList.from_toml(TWO_VERSIONS.replace("2026-07-01", '"2026-07-01"'))
    assert prices.entries[1].effective == date(2026, 7, 1)


def test_day_before_the_first_entry_is_refused() -> None:
    prices = PriceList.from_toml(TWO_VERSIONS, source="prices.toml")
    with pytest.raises(PriceListError, match=r"prices.toml: no price in force on 2019-12-31"):
        prices.rate_on(date(2019, 12, 31), "live")


def test_unknown_kind_is_refused() -> None:
    with pytest.raises(RuleViolation, match="unknown price kind 'automation'"):
        DEFAULT_PRICE_LIST.rate_on(date(2026, 1, 1), "automation")


def test_a_datetime_is_not_a_day() -> None:
    with pytest.raises(TypeError, match="calendar date"):
        DEFAULT_PRICE_LIST.rate_on(datetime(2026, 1, 1, 12), "work")


@pytest.mark.parametrize(
    ("second_effective", "message"),
    [
        ("2020-01-01", r"entry 2 \(effective 2020-01-01\) must be later than entry 1"),
        ("2019-06-01", r"entry 2 \(effective 2019-06-01\) must be later than entry 1"),
    ],
)
def test_duplicate_or_unsorted_effective_dates_are_refused(
    second_effective: str, message: str
) -> None:
    text = TWO_VERSIONS.replace("2026-07-01", second_effective)
    with pytest.raises(PriceListError, match=f"^prices.toml: {message}"):
        PriceList.from_toml(text, source="prices.toml")


@pytest.mark.parametrize(
    ("rate", "message"),
    [
        ("180.0", "is a TOML float; write the rate as a string"),
        ("1.8e2", "is a TOML float"),
        ('"0.00"', "rate must be positive"),
        ('"-10"', "rate must be positive"),
        ("0", "rate must be positive"),
        ('"abc"', "'abc' is not a decimal number"),
        ('""', "is not a decimal number"),
        ('"NaN"', "is not a finite decimal"),
        ('"Infinity"', "is not a finite decimal"),
        ('"150.005"', "more than two decimal places"),
        ('"1e40"', "too large"),
        ("true", "expected a string"),
        ("[150]", "expected a string"),
    ],
)
def test_bad_rates_are_refused_naming_file_and_entry(rate: str, message: str) -> None:
    text = TWO_VERSIONS.replace('live_eur_per_hour = "180.00"', f"live_eur_per_hour = {rate}")
    with pytest.raises(PriceListError) as caught:
        PriceList.from_toml(text, source="ops/prices.toml")
    assert str(caught.value).startswith(
        "ops/prices.toml: entry 2 (effective 2026-07-01): live_eur_per_hour"
    )
    assert message in str(caught.value)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "expected one or more [[prices]] tables"),
        ("prices = []", "the price list has no [[prices]] entry"),
        ("prices = 3", "expected one or more [[prices]] tables"),
        ("currency = 'EUR'\n" + DEFAULT_PRICES_TOML, "unknown key(s) currency"),
        ("[[prices]\n", "not valid TOML"),
        (
            DEFAULT_PRICES_TOML.replace("work_eur", "wrok_eur"),
            "entry 1: unknown key(s) wrok_eur_per_hour",
        ),
        (
            DEFAULT_PRICES_TOML.replace('work_eur_per_hour = "150.00"\n', ""),
            "entry 1: missing key(s) work_eur_per_hour",
        ),
        (
            DEFAULT_PRICES_TOML.replace("2020-01-01", "2020-01-01T00:00:00"),
            "effective must be a date such as 2026-07-01, not a time",
        ),
        (
            DEFAULT_PRICES_TOML.replace("2020-01-01", '"first of January"'),
            "effective must be a date such as 2026-07-01, got 'first of January'",
        ),
        ("prices = [1]", "entry 1: expected a [[prices]] table"),
    ],
)
def test_malformed_files_are_refused(text: str, message: str) -> None:
    with pytest.raises(PriceListError) as caught:
        PriceList.from_toml(text, source="prices.toml")
    assert str(caught.value).startswith("prices.toml: ")
    assert message in str(caught.value)


def test_direct_construction_is_validated_too() -> None:
    with pytest.raises(PriceListError, match="more than two decimal places"):
        PriceList((PriceEntry(date(2020, 1, 1), Decimal("150.001"), Decimal(150)),))
    with pytest.raises(PriceListError, match="no \\[\\[prices\\]\\] entry"):
        PriceList(())


def test_from_file_reads_and_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "prices.toml"
    path.write_text(TWO_VERSIONS, encoding="utf-8")
    assert PriceList.from_file(path).rate_on(date(2026, 7, 1), "live") == Decimal("180.00")
    path.write_text(TWO_VERSIONS.replace('"180.00"', "180.5"), encoding="utf-8")
    with pytest.raises(PriceListError, match=f"^{path}: entry 2"):
        PriceList.from_file(path)


def test_missing_file_is_a_price_list_error(tmp_path: Path) -> None:
    with pytest.raises(PriceListError, match="cannot read the price list"):
        PriceList.from_file(tmp_path / "absent.toml")


@pytest.mark.parametrize("rate", ['"10000.01"', '"99999999"', "100000", '"1e40"', "10000000000000000000000000000000"])
def test_rates_above_ten_thousand_are_refused(rate: str) -> None:
    text = TWO_VERSIONS.replace('live_eur_per_hour = "180.00"', f"live_eur_per_hour = {rate}")
    with pytest.raises(PriceListError, match=r"too large: at most 10000\.00 EUR per hour"):
        PriceList.from_toml(text, source="ops/prices.toml")


def test_a_rate_of_exactly_ten_thousand_is_accepted() -> None:
    text = TWO_VERSIONS.replace('live_eur_per_hour = "180.00"', 'live_eur_per_hour = "10000.00"')
    assert PriceList.from_toml(text).rate_on(date(2026, 7, 1), "live") == Decimal("10000.00")
