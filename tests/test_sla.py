"""billing.sla: due times in support hours (Annex 1), against hand-computed values.

Calendar used below (2026): 01-01 Thu; 01-05 Mon; 03-02 Mon; 03-27 Fri; 03-29 Sun (CET -> CEST,
+01:00 -> +02:00); 06-04 Thu Corpus Christi (RP holiday); 10-25 Sun (CEST -> CET); 12-24 Thu;
12-25 Fri Christmas; 2027-01-01 Fri New Year. A support day has 10 hours, 08:00-18:00 Berlin.
"""

from __future__ import annotations

import random
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest

from billing.errors import RuleViolation
from billing.sla import (
    CRITICAL_RESPONSE_HOURS,
    FIRST_RESPONSE_HOURS,
    due_time,
    first_response_due,
    is_support_day,
    parse_hours,
)
from billing.tz import BERLIN


def due(received: str, hours: int | Decimal) -> str:
    return due_time(datetime.fromisoformat(received), hours).isoformat()


@pytest.mark.parametrize(
    ("received", "hours", "expected"),
    [
        # inside hours: Tue 10:00 + 3 h = Tue 13:00
        ("2026-03-03T10:00:00+01:00", 3, "2026-03-03T13:00:00+01:00"),
        # inside, across closing: Tue 16:00-18:00 = 2 h, 3 h left -> Wed 08:00 + 3 h = 11:00
        ("2026-03-03T16:00:00+01:00", 5, "2026-03-04T11:00:00+01:00"),
        # exact instant counts, seconds included: Tue 10:15:30 + 1 h = 11:15:30
        ("2026-03-03T10:15:30+01:00", 1, "2026-03-03T11:15:30+01:00"),
        # before opening: Tue 06:30 waits for 08:00, + 2 h = 10:00
        ("2026-03-03T06:30:00+01:00", 2, "2026-03-03T10:00:00+01:00"),
        # at opening exactly: Tue 08:00 + 2 h = 10:00
        ("2026-03-03T08:00:00+01:00", 2, "2026-03-03T10:00:00+01:00"),
        # after closing: Tue 19:15 waits for Wed 08:00, + 2 h = Wed 10:00
        ("2026-03-03T19:15:00+01:00", 2, "2026-03-04T10:00:00+01:00"),
        # 17:59 + 1 h: 1 min Tue (17:59-18:00), 59 min left -> Wed 08:59
        ("2026-03-03T17:59:00+01:00", 1, "2026-03-04T08:59:00+01:00"),
        # 18:00 exactly is closed: counting starts Wed 08:00, + 1 h = 09:00
        ("2026-03-03T18:00:00+01:00", 1, "2026-03-04T09:00:00+01:00"),
        # ends exactly at closing: Tue 10:00 + 8 h = Tue 18:00, not Wed 08:00
        ("2026-03-03T10:00:00+01:00", 8, "2026-03-03T18:00:00+01:00"),
        # a full day: Tue 08:00 + 10 h = Tue 18:00
        ("2026-03-03T08:00:00+01:00", 10, "2026-03-03T18:00:00+01:00"),
        # received after closing, ends at a closing: Mon 20:00 -> Tue 08:00 + 10 h = Tue 18:00
        ("2026-03-02T20:00:00+01:00", 10, "2026-03-03T18:00:00+01:00"),
        # Saturday: nothing counts until Mon 03-09 08:00, + 2 h = 10:00
        ("2026-03-07T11:00:00+01:00", 2, "2026-03-09T10:00:00+01:00"),
        # Sunday 23:59: Mon 08:00 + 1 h = 09:00
        ("2026-03-08T23:59:00+01:00", 1, "2026-03-09T09:00:00+01:00"),
        # Friday 17:00: 1 h Fri, 1 h left -> Mon 03-09 08:00 + 1 h = 09:00
        ("2026-03-06T17:00:00+01:00", 2, "2026-03-09T09:00:00+01:00"),
        # decimal hours: Tue 17:00 + 1.5 h: 1 h Tue, 0.5 h Wed -> Wed 08:30
        ("2026-03-03T17:00:00+01:00", Decimal("1.5"), "2026-03-04T08:30:00+01:00"),
        # decimal minutes: Tue 08:00 + 0.25 h = 08:15
        ("2026-03-03T08:00:00+01:00", Decimal("0.25"), "2026-03-03T08:15:00+01:00"),
    ],
)
def test_due_time_on_ordinary_days(received: str, hours: int | Decimal, expected: str) -> None:
    assert due(received, hours) == expected


@pytest.mark.parametrize(
    ("received", "hours", "expected"),
    [
        # before Corpus Christi, unaffected: Mon 06-01 09:00-18:00 = 9 h, 1 h left -> Tue 09:00
        ("2026-06-01T09:00:00+02:00", 10, "2026-06-02T09:00:00+02:00"),
        # day before the holiday ends exactly at closing: Wed 06-03 08:00 + 10 h = Wed 18:00
        ("2026-06-03T08:00:00+02:00", 10, "2026-06-03T18:00:00+02:00"),
        # across it: Wed 06-03 15:00-18:00 = 3 h, Thu 06-04 holiday, 2 h left -> Fri 10:00
        ("2026-06-03T15:00:00+02:00", 5, "2026-06-05T10:00:00+02:00"),
        # received on the holiday: Thu 06-04 10:00 waits for Fri 08:00, + 1 h = 09:00
        ("2026-06-04T10:00:00+02:00", 1, "2026-06-05T09:00:00+02:00"),
        # 30 h across it: Wed 15:00-18:00 = 3 h; Fri 10 h (13); Mon 06-08 10 h (23);
        # Tue 06-09 7 h left -> 15:00
        ("2026-06-03T15:00:00+02:00", 30, "2026-06-09T15:00:00+02:00"),
        # Epiphany (Tue 01-06) is a holiday in Bavaria, not in RP, so it counts:
        # Mon 01-05 17:00-18:00 = 1 h, 1 h left -> Tue 01-06 09:00
        ("2026-01-05T17:00:00+01:00", 2, "2026-01-06T09:00:00+01:00"),
    ],
)
def test_due_time_around_holidays(received: str, hours: int, expected: str) -> None:
    assert due(received, hours) == expected


def test_rp_holidays_only() -> None:
    assert not is_support_day(date(2026, 6, 4))  # Corpus Christi, RP holiday
    assert is_support_day(date(2026, 1, 6))  # Epiphany: BW/BY/ST only
    assert is_support_day(date(2026, 11, 18))  # Repentance Day (Wed): Saxony only
    assert not is_support_day(date(2026, 3, 7))  # a Saturday
    assert not is_support_day(date(2026, 11, 1))  # All Saints' Day (a Sunday anyway)
    assert not is_support_day(date(2027, 11, 1))  # All Saints' Day, Monday, RP holiday


def test_the_german_calendar_alone_gives_the_public_calendar() -> None:
    import holidays

    from billing import sla

    assert sla._germany() is not None  # the fast path (issue 13), not the fallback
    for year in range(1990, 2061):
        assert sla._rp_holidays(year) == frozenset(
            holidays.country_holidays("DE", subdiv="RP", years=year).keys()), year


@pytest.mark.parametrize(
    ("received", "hours", "expected"),
    [
        # spring switch Sun 03-29: Fri 03-27 17:00+01:00, 1 h Fri, 1 h left
        # -> Mon 03-30 08:00 + 1 h = 09:00, now +02:00
        ("2026-03-27T17:00:00+01:00", 2, "2026-03-30T09:00:00+02:00"),
        # same instant given in UTC: 16:00Z = 17:00+01:00
        ("2026-03-27T16:00:00+00:00", 2, "2026-03-30T09:00:00+02:00"),
        # received in the skipped night, Sun 03-29 01:30Z = 03:30+02:00: Mon 08:00 + 3 h = 11:00
        ("2026-03-29T01:30:00+00:00", 3, "2026-03-30T11:00:00+02:00"),
        # 30 h over the switch: Thu 03-26 08:00+01:00: Thu 10 h, Fri 10 h (20), Mon 10 h (30)
        # -> Mon 03-30 18:00+02:00 (the weekend's lost hour is not a support hour)
        ("2026-03-26T08:00:00+01:00", 30, "2026-03-30T18:00:00+02:00"),
        # autumn switch Sun 10-25: Fri 10-23 17:00+02:00, 1 h Fri, 1 h left
        # -> Mon 10-26 08:00 + 1 h = 09:00, now +01:00
        ("2026-10-23T17:00:00+02:00", 2, "2026-10-26T09:00:00+01:00"),
        # the repeated hour, both times: Sun 10-25 02:30+02:00 and 02:30+01:00 -> Mon 09:00+01:00
        ("2026-10-25T02:30:00+02:00", 1, "2026-10-26T09:00:00+01:00"),
        ("2026-10-25T02:30:00+01:00", 1, "2026-10-26T09:00:00+01:00"),
        # Fri 10-23 12:00+02:00 + 10 h: 6 h Fri, 4 h left -> Mon 10-26 12:00+01:00
        ("2026-10-23T12:00:00+02:00", 10, "2026-10-26T12:00:00+01:00"),
    ],
)
def test_due_time_across_dst_switches(received: str, hours: int, expected: str) -> None:
    assert due(received, hours) == expected


@pytest.mark.parametrize(
    ("received", "expected"),
    [
        # Tue 07:30Z = 08:30+01:00, + 2 h = 10:30+01:00
        ("2026-03-03T07:30:00Z", "2026-03-03T10:30:00+01:00"),
        # 12:00-05:00 = 17:00Z = 18:00+01:00: closed, Wed 08:00 + 2 h = 10:00
        ("2026-03-03T12:00:00-05:00", "2026-03-04T10:00:00+01:00"),
        # 06:59+09:00 = Mon 21:59Z = Mon 22:59+01:00 (Tokyo's Tuesday morning): Tue 10:00
        ("2026-03-03T06:59:00+09:00", "2026-03-03T10:00:00+01:00"),
        # summer, UTC: Tue 06-02 06:00Z = 08:00+02:00, + 2 h = 10:00+02:00
        ("2026-06-02T06:00:00Z", "2026-06-02T10:00:00+02:00"),
    ],
)
def test_received_in_other_offsets_is_converted(received: str, expected: str) -> None:
    assert due(received, 2) == expected


def test_result_is_in_berlin() -> None:
    result = due_time(datetime(2026, 3, 3, 9, 0, tzinfo=UTC), 1)
    assert result.tzinfo is BERLIN
    # 09:00Z = 10:00+01:00, + 1 h = 11:00
    assert result == datetime(2026, 3, 3, 11, 0, tzinfo=BERLIN)


@pytest.mark.parametrize(
    ("received", "hours", "expected"),
    [
        # Christmas, 30 h: Wed 12-23 12:00-18:00 = 6 h; Thu 12-24 (not a holiday) 10 h (16);
        # Fri 12-25 holiday, Sat, Sun; Mon 12-28 10 h (26); Tue 12-29 4 h left -> 12:00
        ("2026-12-23T12:00:00+01:00", 30, "2026-12-29T12:00:00+01:00"),
        # New Year, 30 h: Wed 12-30 09:00-18:00 = 9 h; Thu 12-31 10 h (19);
        # Fri 2027-01-01 holiday, Sat, Sun; Mon 01-04 10 h (29); Tue 01-05 1 h -> 09:00
        ("2026-12-30T09:00:00+01:00", 30, "2027-01-05T09:00:00+01:00"),
        # received on Christmas Day: Mon 12-28 08:00 + 10 h = 18:00
        ("2026-12-25T10:00:00+01:00", 10, "2026-12-28T18:00:00+01:00"),
    ],
)
def test_due_time_over_christmas_and_new_year(received: str, hours: int, expected: str) -> None:
    assert due(received, hours) == expected


def test_first_response_due_ordinary_and_critical() -> None:
    opened = datetime.fromisoformat("2026-03-02T14:00:00+01:00")
    # 30 h: Mon 14:00-18:00 = 4 h; Tue 10 h (14); Wed 10 h (24); Thu 6 h -> Thu 03-05 14:00
    assert first_response_due(opened, critical=False).isoformat() == "2026-03-05T14:00:00+01:00"
    # 10 h: Mon 4 h; Tue 6 h -> Tue 03-03 14:00
    assert first_response_due(opened, critical=True).isoformat() == "2026-03-03T14:00:00+01:00"
    assert (FIRST_RESPONSE_HOURS, CRITICAL_RESPONSE_HOURS) == (30, 10)


def test_thirty_hours_from_an_opening_ends_at_a_closing() -> None:
    # Mon 03-02 08:00: Mon 10 h, Tue 10 h (20), Wed 10 h (30) -> Wed 18:00, not Thu 08:00
    assert due("2026-03-02T08:00:00+01:00", 30) == "2026-03-04T18:00:00+01:00"


def test_long_reaction_walks_many_days() -> None:
    # 200 h = 20 full support days from Mon 2026-03-02 08:00. March 2026 has no RP holiday;
    # Good Friday is 04-03. Weekdays from 03-02: 03-02..06 (5), 09..13 (10), 16..20 (15),
    # 23..27 (20) -> the 20th support day is Fri 03-27, ending 18:00+01:00
    assert due("2026-03-02T08:00:00+01:00", 200) == "2026-03-27T18:00:00+01:00"


def test_naive_received_is_refused() -> None:
    with pytest.raises(RuleViolation, match="no UTC offset"):
        due_time(datetime(2026, 3, 3, 10, 0), 1)
    with pytest.raises(RuleViolation, match="no UTC offset"):
        first_response_due(datetime(2026, 3, 3, 10, 0), critical=True)


@pytest.mark.parametrize("hours", [0, -1, Decimal(0), Decimal("-0.5"), Decimal("NaN")])
def test_non_positive_hours_are_refused(hours: int | Decimal) -> None:
    with pytest.raises(RuleViolation, match="hours must be positive"):
        due_time(datetime(2026, 3, 3, 10, 0, tzinfo=BERLIN), hours)


@pytest.mark.parametrize("hours", [1.5, True, "2", None])
def test_non_numeric_hours_are_refused(hours: object) -> None:
    with pytest.raises(RuleViolation, match="integer or a decimal"):
        due_time(datetime(2026, 3, 3, 10, 0, tzinfo=BERLIN), hours)  # type: ignore[arg-type]  # wrong on purpose


def test_absurd_hours_are_refused() -> None:
    with pytest.raises(RuleViolation, match="at most"):
        due_time(datetime(2026, 3, 3, 10, 0, tzinfo=BERLIN), Decimal("1e9"))


def _minute_by_minute(received: datetime, hours: int) -> datetime:
    """Reference: count support minutes one by one in UTC (slow, obviously right)."""
    needed, moment = hours * 60, received.astimezone(UTC)
    while True:
        local = moment.astimezone(BERLIN)
        moment += timedelta(minutes=1)
        if is_support_day(local.date()) and 8 <= local.hour < 18:
            needed -= 1
            if needed == 0:
                return moment.astimezone(BERLIN)


@pytest.mark.parametrize("seed", range(40))
def test_due_time_agrees_with_minute_counting(seed: int) -> None:
    # receipts on whole minutes over the weeks of both DST switches, Corpus Christi and Christmas
    rng = random.Random(seed)
    week = rng.choice(["2026-03-23", "2026-10-19", "2026-06-01", "2026-12-21"])
    received = datetime.fromisoformat(f"{week}T00:00:00+00:00") + timedelta(
        minutes=rng.randrange(10 * 24 * 60)
    )
    hours = rng.randint(1, 25)
    expected = _minute_by_minute(received, hours)
    assert due_time(received, hours).isoformat() == expected.isoformat()


@pytest.mark.parametrize(("text", "message"), [
    ("two", "must be a number"), ("", "must be a number"), ("1,5", "must be a number"),
    ("inf", "must be positive"), ("NaN", "must be positive"), ("sNaN", "must be positive"),
    ("0", "must be positive"), ("-1", "must be positive"), ("10000.0001", "at most 10000"),
    ("1e400", "at most 10000"), ("9" * 4000, "at most 10000"),
    ("1e999999999", "at most 10000"),  # int() of it would run for minutes: never converted
])
def test_parse_hours_refuses_every_unusable_figure_in_one_short_line(text: str,
                                                                     message: str) -> None:
    with pytest.raises(RuleViolation, match=message) as caught:
        parse_hours(text)
    assert len(str(caught.value)) < 120 and "\n" not in str(caught.value)


@pytest.mark.parametrize(("text", "hours"), [("30", Decimal(30)), ("1.5", Decimal("1.5")),
                                             (" 2 ", Decimal(2)), ("10000", Decimal(10000))])
def test_parse_hours_accepts_whole_and_decimal_hours(text: str, hours: Decimal) -> None:
    assert parse_hours(text) == hours
