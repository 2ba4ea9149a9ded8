"""billing.rules: units, rounding, rate day, booking lead time, cancellation and no-show rules."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from billing.errors import RuleViolation
from billing.pricelist import DEFAULT_PRICE_LIST, MAX_RATE
from billing.rules import (
    BOOKING_HORIZON_DAYS,
    MAX_AUTOMATION_MINUTES,
    MAX_ENTRY_MINUTES,
    Charge,
    cancellation_is_free,
    charge,
    check_booking,
    check_no_show,
    earliest_bookable_date,
    live_amount,
    live_billed_minutes,
    max_minutes,
    session_day,
    validate_minutes,
    work_amount,
)
from tests.billing_data import NEW_PRICES

RATE = Decimal("150.00")


def at(text: str) -> datetime:
    return datetime.fromisoformat(text)


@pytest.mark.parametrize(
    ("minutes", "billed", "amount"),
    [
        (1, 30, "75.00"),  # one unit: 150/2
        (29, 30, "75.00"),
        (30, 30, "75.00"),
        (31, 60, "150.00"),  # two units
        (60, 60, "150.00"),  # exact multiple
        (61, 90, "225.00"),  # three units: 3 x 75
        (90, 90, "225.00"),
        (495, 510, "1275.00"),  # 495/30 = 16.5 -> 17 units x 75
    ],
)
def test_live_sessions_are_billed_in_whole_half_hours(
    minutes: int, billed: int, amount: str
) -> None:
    assert live_billed_minutes(minutes) == billed
    assert live_amount(minutes, RATE) == Decimal(amount)


@pytest.mark.parametrize(
    ("minutes", "amount"),
    [
        (1, "2.50"),  # 150/60 = 2.50 per minute
        (29, "72.50"),  # 29 x 2.50
        (30, "75.00"),
        (31, "77.50"),  # 31 x 2.50
        (60, "150.00"),  # exact multiple
        (495, "1237.50"),  # 495 x 2.50
    ],
)
def test_work_is_billed_per_minute(minutes: int, amount: str) -> None:
    assert work_amount(minutes, RATE) == Decimal(amount)


@pytest.mark.parametrize(
    ("minutes", "rate", "amount"),
    [
        (7, "155.55", "18.15"),  # 7 x 155.55 / 60 = 1088.85 / 60 = 18.1475 -> 18.15
        (1, "155.55", "2.59"),  # 155.55 / 60 = 2.5925 -> 2.59
        (1, "150.30", "2.51"),  # 150.30 / 60 = 2.505, a tie: half-up -> 2.51 (half-even: 2.50)
        (2, "155.55", "5.19"),  # 311.10 / 60 = 5.185, a tie -> 5.19 (half-even: 5.18)
        (1, "100.00", "1.67"),  # 1.6666... -> 1.67
        (2, "100.00", "3.33"),  # 3.3333... -> 3.33
    ],
)
def test_work_rounding_is_half_up_to_the_cent(minutes: int, rate: str, amount: str) -> None:
    result = work_amount(minutes, Decimal(rate))
    assert result == Decimal(amount)
    assert result.as_tuple().exponent == -2


def test_live_amount_at_an_odd_rate_is_rounded_once_per_line() -> None:
    # 30 min at 155.55: 155.55 / 2 = 77.775 -> 77.78; 90 min: 3 x 77.775 = 233.325 -> 233.33
    # (rounding per unit would give 3 x 77.78 = 233.34)
    assert live_amount(30, Decimal("155.55")) == Decimal("77.78")
    assert live_amount(90, Decimal("155.55")) == Decimal("233.33")


@pytest.mark.parametrize("minutes", [0, -1, -30, 1.5, 30.0, Decimal(30), "30", True, None])
def test_bad_minutes_are_refused(minutes: object) -> None:
    with pytest.raises(RuleViolation, match="minutes must be"):
        validate_minutes(minutes)  # type: ignore[arg-type]  # wrong on purpose
    with pytest.raises(RuleViolation, match="minutes must be"):
        work_amount(minutes, RATE)  # type: ignore[arg-type]  # wrong on purpose
    with pytest.raises(RuleViolation, match="minutes must be"):
        live_billed_minutes(minutes)  # type: ignore[arg-type]  # wrong on purpose


@pytest.mark.parametrize("rate", [Decimal(0), Decimal(-150), Decimal("NaN"), 150.0])
def test_bad_rates_are_refused(rate: object) -> None:
    with pytest.raises(RuleViolation, match="rate must be"):
        work_amount(30, rate)  # type: ignore[arg-type]  # wrong on purpose
    with pytest.raises(RuleViolation, match="rate must be"):
        live_amount(30, rate)  # type: ignore[arg-type]  # wrong on purpose


@pytest.mark.parametrize(
    ("kind", "minutes", "day", "expected"),
    [
        ("work", 60, date(2026, 6, 30), Charge(60, Decimal("150.00"), Decimal("150.00"))),
        ("work", 60, date(2026, 7, 1), Charge(60, Decimal("160.00"), Decimal("160.00"))),
        # automation is billed like work: 7 x 160 / 60 = 18.666... -> 18.67
        ("automation", 7, date(2026, 7, 1), Charge(7, Decimal("160.00"), Decimal("18.67"))),
        ("live", 31, date(2026, 6, 30), Charge(60, Decimal("150.00"), Decimal("150.00"))),
        # 2 units x 180/2
        ("live", 31, date(2026, 7, 1), Charge(60, Decimal("180.00"), Decimal("180.00"))),
        ("no-show", 45, date(2026, 7, 1), Charge(60, Decimal("180.00"), Decimal("180.00"))),
        ("late-cancellation", 30, date(2026, 7, 2), Charge(30, Decimal("180.00"), Decimal("90.00"))),
    ],
)
def test_charge_uses_the_rate_in_force_on_the_day(
    kind: str, minutes: int, day: date, expected: Charge
) -> None:
    assert charge(kind, minutes, day, NEW_PRICES) == expected


def test_charge_refuses_unknown_kinds_and_days_before_the_list() -> None:
    with pytest.raises(RuleViolation, match="unknown kind 'travel'"):
        charge("travel", 30, date(2026, 1, 1), DEFAULT_PRICE_LIST)
    with pytest.raises(RuleViolation, match="no price in force on 2019-12-31"):
        charge("work", 30, date(2019, 12, 31), DEFAULT_PRICE_LIST)


def test_session_day_is_the_berlin_date_of_the_start() -> None:
    # 23:30 on the eve of the 2026-07-01 price change: the whole session is priced on 06-30
    assert session_day(at("2026-06-30T23:30:00+02:00")) == date(2026, 6, 30)
    # 22:30Z = 00:30+02:00 the next day in Berlin
    assert session_day(at("2026-06-30T22:30:00+00:00")) == date(2026, 7, 1)
    with pytest.raises(RuleViolation, match="no UTC offset"):
        session_day(datetime(2026, 6, 30, 23, 30))


# --- booking: at least 3 calendar days ahead (Berlin) ---------------------------------------


@pytest.mark.parametrize(
    ("booked", "start"),
    [
        # Mon 03-02 any time -> Thu 03-05 00:00 is the earliest start
        ("2026-03-02T23:59:59+01:00", "2026-03-05T00:00:00+01:00"),  # barely 48 h, 3 days
        ("2026-03-02T00:00:00+01:00", "2026-03-05T10:00:00+01:00"),
        ("2026-03-02T09:00:00+01:00", "2026-03-20T10:00:00+01:00"),  # well ahead
        # given in UTC: Mon 22:00Z = Mon 23:00 Berlin -> Thu allowed
        ("2026-03-02T22:00:00+00:00", "2026-03-05T08:00:00+01:00"),
        # Wed 23:00Z = Thu 00:00 Berlin
        ("2026-03-02T12:00:00+01:00", "2026-03-04T23:00:00+00:00"),
        # over the spring switch: Fri 03-27 -> Mon 03-30 is 3 days
        ("2026-03-27T18:00:00+01:00", "2026-03-30T09:00:00+02:00"),
    ],
)
def test_booking_three_days_ahead_is_accepted(booked: str, start: str) -> None:
    check_booking(at(booked), at(start))


@pytest.mark.parametrize(
    ("booked", "start", "earliest"),
    [
        # Mon -> Wed 23:59 is almost 3 x 24 h from Mon 00:00 but only 2 calendar days
        ("2026-03-02T00:00:00+01:00", "2026-03-04T23:59:00+01:00", "2026-03-05"),
        ("2026-03-02T12:00:00+01:00", "2026-03-03T12:00:00+01:00", "2026-03-05"),
        # Mon 23:30Z = Tue 00:30 Berlin: booked on Tuesday, so Thursday is too early
        ("2026-03-02T23:30:00+00:00", "2026-03-05T10:00:00+01:00", "2026-03-06"),
        # Thu 07:00+09:00 is Wed 22:00Z = Wed 23:00 Berlin: the Berlin date counts
        ("2026-03-02T12:00:00+01:00", "2026-03-05T07:00:00+09:00", "2026-03-05"),
    ],
)
def test_booking_less_than_three_days_ahead_is_refused(
    booked: str, start: str, earliest: str
) -> None:
    with pytest.raises(RuleViolation, match="at least 3 days ahead") as caught:
        check_booking(at(booked), at(start))
    assert f"earliest bookable date is {earliest}" in str(caught.value)


def test_booking_in_the_past_is_refused() -> None:
    with pytest.raises(RuleViolation, match=r"not in the future.*earliest bookable date is 2026-03-05"):
        check_booking(at("2026-03-02T12:00:00+01:00"), at("2026-03-01T12:00:00+01:00"))
    with pytest.raises(RuleViolation, match="not in the future"):
        check_booking(at("2026-03-02T12:00:00+01:00"), at("2026-03-02T12:00:00+01:00"))


def test_booking_with_naive_times_is_refused() -> None:
    with pytest.raises(RuleViolation, match=r"booking time .* no UTC offset"):
        check_booking(datetime(2026, 3, 2, 12), at("2026-03-09T12:00:00+01:00"))
    with pytest.raises(RuleViolation, match=r"appointment start .* no UTC offset"):
        check_booking(at("2026-03-02T12:00:00+01:00"), datetime(2026, 3, 9, 12))


def test_earliest_bookable_date() -> None:
    assert earliest_bookable_date(at("2026-03-02T08:00:00+01:00")) == date(2026, 3, 5)
    # Wed 12-30 -> Sat 01-02: calendar days, holidays and weekends included
    assert earliest_bookable_date(at("2026-12-30T17:00:00+01:00")) == date(2027, 1, 2)


# --- cancellation: free until the end of the eve ----------------------------------------------

START = "2026-03-05T10:00:00+01:00"  # Thursday


@pytest.mark.parametrize(
    ("cancelled", "free"),
    [
        ("2026-03-02T10:00:00+01:00", True),  # days before
        ("2026-03-04T09:00:00+01:00", True),  # eve, morning (25 h before)
        ("2026-03-04T23:59:59.999999+01:00", True),  # last instant of the eve
        ("2026-03-04T22:59:59+00:00", True),  # = 23:59:59 Berlin, still the eve
        ("2026-03-05T00:00:00+01:00", False),  # the appointment day begins: charged
        ("2026-03-04T23:30:00+00:00", False),  # = Thu 00:30 Berlin
        ("2026-03-05T09:55:00+01:00", False),  # 5 minutes before
        ("2026-03-05T10:10:00+01:00", False),  # after the start
    ],
)
def test_cancellation_is_free_until_the_end_of_the_eve(cancelled: str, free: bool) -> None:
    assert cancellation_is_free(at(cancelled), at(START)) is free


def test_cancellation_eve_across_the_autumn_switch() -> None:
    # appointment Mon 10-26 09:00+01:00; Sun 10-25 23:59+01:00 is the eve; 23:00Z is Mon 00:00
    assert cancellation_is_free(at("2026-10-25T23:59:00+01:00"), at("2026-10-26T09:00:00+01:00"))
    assert not cancellation_is_free(
        at("2026-10-25T23:00:00+00:00"), at("2026-10-26T09:00:00+01:00")
    )


def test_cancellation_with_naive_times_is_refused() -> None:
    with pytest.raises(RuleViolation, match="no UTC offset"):
        cancellation_is_free(datetime(2026, 3, 4, 12), at(START))


# --- no-show: only after the 5-minute grace ----------------------------------------------------


def test_no_show_may_be_recorded_from_five_minutes_after_the_start() -> None:
    check_no_show(at("2026-03-05T10:05:00+01:00"), at(START))
    check_no_show(at("2026-03-05T12:00:00+00:00"), at(START))
    with pytest.raises(RuleViolation, match=r"record it from 2026-03-05T10:05:00\+01:00"):
        check_no_show(at("2026-03-05T10:04:59+01:00"), at(START))
    with pytest.raises(RuleViolation, match="no UTC offset"):
        check_no_show(datetime(2026, 3, 5, 11), at(START))


# --- bounds: every figure an operator types is bounded (issue 8) ------------------------------


@given(minutes=st.integers(min_value=MAX_ENTRY_MINUTES + 1))
def test_minutes_above_a_support_day_are_refused(minutes: int) -> None:
    # 601, 99999999999 (a 249-billion-euro line), 10**26 (InvalidOperation) and beyond
    with pytest.raises(RuleViolation, match="minutes must be at most 600") as caught:
        validate_minutes(minutes)
    assert len(str(caught.value)) < 120  # a 5,000-digit number is described, not printed


@given(minutes=st.integers(min_value=1, max_value=MAX_ENTRY_MINUTES))
def test_minutes_up_to_a_support_day_are_accepted(minutes: int) -> None:
    assert validate_minutes(minutes) == minutes


def test_automated_steps_and_pricing_allow_up_to_a_week() -> None:
    assert max_minutes("automation") == MAX_AUTOMATION_MINUTES == 7 * 24 * 60
    assert max_minutes("work") == max_minutes("live") == max_minutes("no-show") == 600
    assert work_amount(MAX_AUTOMATION_MINUTES, RATE) == Decimal("25200.00")
    with pytest.raises(RuleViolation, match="at most 10080"):
        work_amount(MAX_AUTOMATION_MINUTES + 1, RATE)
    with pytest.raises(RuleViolation, match="at most 10080"):
        live_amount(10**26, RATE)


@given(minutes=st.integers(min_value=1, max_value=MAX_AUTOMATION_MINUTES),
       cents=st.integers(min_value=1, max_value=int(MAX_RATE * 100)))
def test_every_bounded_figure_prices_to_whole_cents(minutes: int, cents: int) -> None:
    rate = Decimal(cents) / 100
    for amount in (work_amount(minutes, rate), live_amount(minutes, rate)):
        assert amount.as_tuple().exponent == -2 and amount >= 0  # never InvalidOperation


@pytest.mark.parametrize("rate", [MAX_RATE + Decimal("0.01"), Decimal("1e40")])
def test_rates_above_the_price_list_bound_are_refused(rate: Decimal) -> None:
    with pytest.raises(RuleViolation, match="rate must be at most"):
        work_amount(30, rate)


@pytest.mark.parametrize("start", ["2027-03-03T10:00:00+01:00", "2062-03-02T10:00:00+01:00",
                                   "2199-12-31T10:00:00+01:00"])
def test_booking_more_than_a_year_ahead_is_refused(start: str) -> None:
    with pytest.raises(RuleViolation, match=f"more than {BOOKING_HORIZON_DAYS} days ahead"):
        check_booking(at("2026-03-02T12:00:00+01:00"), at(start))
    check_booking(at("2026-03-02T12:00:00+01:00"), at("2027-03-02T12:00:00+01:00"))  # 365 d
