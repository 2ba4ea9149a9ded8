"""billing.statement: ledger facts to the statement of DESIGN §3.1, checked to the cent."""

from __future__ import annotations

import json
import re
from datetime import date, datetime
from decimal import Decimal

import pytest

from billing.errors import RuleViolation
from billing.pricelist import PriceList
from billing.statement import (
    CSV_HEADER,
    Booking,
    Cancellation,
    Correction,
    Fact,
    NoShow,
    Statement,
    StatementLine,
    TimeEntry,
    build_statement,
    validate_note,
)
from tests.billing_data import NEW_PRICES

AWKWARD_PRICES = PriceList.from_toml(
    '[[prices]]\neffective = 2020-01-01\nlive_eur_per_hour = "155.55"\n'
    'work_eur_per_hour = "155.55"\n'
)
REQUIRED_LINE_KEYS = ["date", "kind", "minutes", "billed_minutes", "rate_eur_per_hour", "amount_eur"]


def at(text: str) -> datetime:
    return datetime.fromisoformat(text)


def build(facts: list[Fact], prices: PriceList | None = None) -> Statement:
    if prices is None:
        return build_statement("case-1", "t-42", facts)
    return build_statement("case-1", "t-42", facts, prices)


def figures(statement: Statement) -> list[tuple[str, str, int, int, str, str]]:
    """(date, kind, minutes, billed, rate, amount) per line, as the JSON shows them."""
    return [
        (
            line["date"],
            line["kind"],
            line["minutes"],
            line["billed_minutes"],
            line["rate_eur_per_hour"],
            line["amount_eur"],
        )
        for line in statement.to_json()["lines"]
    ]


def test_statement_json_follows_the_contract() -> None:
    facts: list[Fact] = [
        TimeEntry("e-1", date(2026, 3, 2), "work", 495, "export and transfer"),
        TimeEntry("e-2", date(2026, 3, 3), "live", 31, "call with successor"),
    ]
    doc = build(facts).to_json()
    assert doc == {
        "case_id": "case-1",
        "tenant_id": "t-42",
        "lines": [
            {
                "date": "2026-03-02",
                "kind": "work",
                "minutes": 495,
                "billed_minutes": 495,
                "rate_eur_per_hour": "150.00",
                "amount_eur": "1237.50",  # 495 x 2.50
                "ref": "e-1",
                "note": "export and transfer",
            },
            {
                "date": "2026-03-03",
                "kind": "live",
                "minutes": 31,
                "billed_minutes": 60,  # two 30-minute units
                "rate_eur_per_hour": "150.00",
                "amount_eur": "150.00",
                "ref": "e-2",
                "note": "call with successor",
            },
        ],
        "total_eur": "1387.50",  # 1237.50 + 150.00
    }
    assert list(doc) == ["case_id", "tenant_id", "lines", "total_eur"]
    assert list(doc["lines"][0])[:6] == REQUIRED_LINE_KEYS
    json.dumps(doc)  # plain JSON types only


@pytest.mark.parametrize(
    ("kind", "minutes", "billed", "amount"),
    [
        ("live", 1, 30, "75.00"),
        ("live", 29, 30, "75.00"),
        ("live", 30, 30, "75.00"),
        ("live", 31, 60, "150.00"),
        ("live", 60, 60, "150.00"),
        ("work", 1, 1, "2.50"),
        ("work", 29, 29, "72.50"),
        ("work", 30, 30, "75.00"),
        ("work", 31, 31, "77.50"),
        ("work", 60, 60, "150.00"),
        ("automation", 1, 1, "2.50"),
        ("automation", 31, 31, "77.50"),
    ],
)
def test_single_lines_at_the_default_rate(kind: str, minutes: int, billed: int, amount: str) -> None:
    statement = build([TimeEntry("e", date(2026, 3, 2), kind, minutes)])  # type: ignore[arg-type]  # kind from the table
    assert figures(statement) == [("2026-03-02", kind, minutes, billed, "150.00", amount)]
    assert statement.to_json()["total_eur"] == amount


def test_sessions_and_work_spanning_a_price_change() -> None:
    facts: list[Fact] = [
        TimeEntry("w-before", date(2026, 6, 30), "work", 60),
        TimeEntry("w-after", date(2026, 7, 1), "work", 60),
        # session 23:30 on the eve to 00:30: recorded on its start date, old rate in full
        TimeEntry("l-eve", date(2026, 6, 30), "live", 60, "23:30-00:30"),
        TimeEntry("l-after", date(2026, 7, 1), "live", 30),
    ]
    statement = build(facts, NEW_PRICES)
    assert figures(statement) == [
        ("2026-06-30", "work", 60, 60, "150.00", "150.00"),
        ("2026-06-30", "live", 60, 60, "150.00", "150.00"),
        ("2026-07-01", "work", 60, 60, "160.00", "160.00"),
        ("2026-07-01", "live", 30, 30, "180.00", "90.00"),  # one unit: 180/2
    ]
    assert statement.total_eur == Decimal("550.00")  # 150 + 150 + 160 + 90


BOOKING = Booking("b-1", at("2026-03-05T10:00:00+01:00"), 60, at("2026-03-02T09:00:00+01:00"))


def test_late_cancellation_on_the_appointment_day_is_charged() -> None:
    statement = build([BOOKING, Cancellation("b-1", at("2026-03-05T07:00:00+00:00"))])
    assert figures(statement) == [("2026-03-05", "late-cancellation", 60, 60, "150.00", "150.00")]
    assert statement.lines[0].ref == "b-1"
    assert statement.lines[0].note == "cancelled 2026-03-05T08:00:00+01:00"  # shown in Berlin
    assert statement.to_json()["total_eur"] == "150.00"


def test_cancellation_on_the_eve_is_free_and_gives_no_line() -> None:
    statement = build([BOOKING, Cancellation("b-1", at("2026-03-04T23:59:00+01:00"))])
    assert statement.lines == ()
    assert statement.to_json() == {
        "case_id": "case-1",
        "tenant_id": "t-42",
        "lines": [],
        "total_eur": "0.00",
    }


def test_a_booking_alone_gives_no_line() -> None:
    assert build([BOOKING]).lines == ()


def test_no_show_is_charged_the_booked_time_in_half_hour_units() -> None:
    booking = Booking("b-2", at("2026-03-05T10:00:00+01:00"), 45, at("2026-03-01T12:00:00+01:00"))
    statement = build([booking, NoShow("b-2")])
    # 45 min booked -> two units = 60 min x 150 / 60
    assert figures(statement) == [("2026-03-05", "no-show", 45, 60, "150.00", "150.00")]


def test_booking_charges_use_the_rate_of_the_appointment_date() -> None:
    # booked before the price change, appointment after: the appointment's date decides
    late = Booking("b-3", at("2026-07-01T09:00:00+02:00"), 30, at("2026-06-20T09:00:00+02:00"))
    missed = Booking("b-4", at("2026-07-02T09:00:00+02:00"), 90, at("2026-06-20T09:00:00+02:00"))
    statement = build(
        [late, missed, Cancellation("b-3", at("2026-07-01T07:00:00+02:00")), NoShow("b-4")],
        NEW_PRICES,
    )
    assert figures(statement) == [
        ("2026-07-01", "late-cancellation", 30, 30, "180.00", "90.00"),
        ("2026-07-02", "no-show", 90, 90, "180.00", "270.00"),  # 3 units x 90
    ]
    assert statement.total_eur == Decimal("360.00")


def test_correction_reverses_an_entry_and_the_total_drops() -> None:
    facts: list[Fact] = [
        TimeEntry("e-1", date(2026, 3, 2), "work", 90, "typo: was 60"),
        TimeEntry("e-2", date(2026, 3, 3), "live", 30),
        Correction("c-1", reverses="e-1", note="wrong duration"),
        TimeEntry("e-1b", date(2026, 3, 2), "work", 60, "re-entered"),
    ]
    statement = build(facts)
    assert figures(statement) == [
        ("2026-03-02", "work", 90, 90, "150.00", "225.00"),
        ("2026-03-02", "correction", -90, -90, "150.00", "-225.00"),
        ("2026-03-02", "work", 60, 60, "150.00", "150.00"),
        ("2026-03-03", "live", 30, 30, "150.00", "75.00"),
    ]
    assert statement.lines[1].ref == "c-1"
    assert statement.lines[1].note == "reverses e-1: wrong duration"
    # 225.00 - 225.00 + 150.00 + 75.00; without the correction it was 450.00
    assert statement.to_json()["total_eur"] == "225.00"
    assert build(facts[:2]).to_json()["total_eur"] == "300.00"


def test_correction_of_a_live_line_reverses_billed_minutes_at_its_rate() -> None:
    facts: list[Fact] = [
        TimeEntry("l-1", date(2026, 6, 30), "live", 31),
        Correction("c-1", reverses="l-1"),
    ]
    statement = build(facts, NEW_PRICES)
    assert figures(statement) == [
        ("2026-06-30", "live", 31, 60, "150.00", "150.00"),
        ("2026-06-30", "correction", -31, -60, "150.00", "-150.00"),
    ]
    assert statement.to_json()["total_eur"] == "0.00"


def test_correction_may_reverse_a_booking_charge() -> None:
    statement = build([BOOKING, NoShow("b-1"), Correction("c-1", reverses="b-1", note="was online")])
    assert figures(statement) == [
        ("2026-03-05", "no-show", 60, 60, "150.00", "150.00"),
        ("2026-03-05", "correction", -60, -60, "150.00", "-150.00"),
    ]
    assert statement.total_eur == Decimal("0.00")


def test_statement_sums_exactly_to_the_cent() -> None:
    facts: list[Fact] = [
        TimeEntry("a", date(2026, 3, 2), "work", 7),  # 1088.85 / 60 = 18.1475 -> 18.15
        TimeEntry("b", date(2026, 3, 2), "work", 13),  # 2022.15 / 60 = 33.7025 -> 33.70
        TimeEntry("c", date(2026, 3, 3), "automation", 1),  # 155.55 / 60 = 2.5925 -> 2.59
        TimeEntry("d", date(2026, 3, 3), "work", 59),  # 9177.45 / 60 = 152.9575 -> 152.96
        TimeEntry("e", date(2026, 3, 4), "work", 2),  # 311.10 / 60 = 5.185 -> 5.19 (tie, up)
        TimeEntry("f", date(2026, 3, 4), "automation", 11),  # 1711.05 / 60 = 28.5175 -> 28.52
        TimeEntry("g", date(2026, 3, 5), "live", 31),  # 2 units = 60 min -> 155.55
    ]
    statement = build(facts, AWKWARD_PRICES)
    amounts = [line.amount_eur for line in statement.lines]
    assert [str(amount) for amount in amounts] == [
        "18.15", "33.70", "2.59", "152.96", "5.19", "28.52", "155.55",
    ]
    # 18.15 + 33.70 + 2.59 + 152.96 + 5.19 + 28.52 + 155.55 = 396.66
    # (93 work minutes priced at once would be 241.1025 -> 241.10; lines are rounded one by one)
    assert statement.total_eur == sum(amounts) == Decimal("396.66")
    assert statement.to_json()["total_eur"] == "396.66"


def test_many_awkward_lines_add_up_to_the_sum_of_the_printed_amounts() -> None:
    prices = PriceList.from_toml(
        '[[prices]]\neffective = 2020-01-01\nlive_eur_per_hour = "100.00"\n'
        'work_eur_per_hour = "100.00"\n'
    )
    facts: list[Fact] = [TimeEntry(f"m-{n}", date(2026, 3, 2), "work", 1) for n in range(100)]
    statement = build(facts, prices)
    # each minute: 100 / 60 = 1.666... -> 1.67; 100 lines x 1.67 = 167.00 (not 166.67)
    assert {line.amount_eur for line in statement.lines} == {Decimal("1.67")}
    assert statement.to_json()["total_eur"] == "167.00"
    printed = sum(Decimal(line["amount_eur"]) for line in statement.to_json()["lines"])
    assert printed == Decimal("167.00")


def test_lines_are_in_date_order_and_stable_within_a_day() -> None:
    facts: list[Fact] = [
        TimeEntry("late", date(2026, 3, 9), "work", 10),
        TimeEntry("first", date(2026, 3, 2), "work", 20),
        TimeEntry("second", date(2026, 3, 2), "live", 30),
        TimeEntry("third", date(2026, 3, 2), "automation", 40),
    ]
    assert [line.ref for line in build(facts).lines] == ["first", "second", "third", "late"]


def test_an_identical_repeat_counts_once() -> None:
    entry = TimeEntry("e-1", date(2026, 3, 2), "work", 30, "same command twice")
    cancel = Cancellation("b-1", at("2026-03-05T08:00:00+01:00"))
    correction = Correction("c-1", reverses="e-1")
    statement = build([entry, entry, BOOKING, BOOKING, cancel, cancel, correction, correction])
    assert [line.kind for line in statement.lines] == ["work", "correction", "late-cancellation"]
    assert statement.total_eur == Decimal("150.00")  # 75.00 - 75.00 + 150.00
    # the same instant written with another offset is the same fact
    same_cancel = Cancellation("b-1", at("2026-03-05T07:00:00+00:00"))
    assert build([BOOKING, cancel, same_cancel]).total_eur == Decimal("150.00")


@pytest.mark.parametrize(
    ("facts", "message"),
    [
        (
            [
                TimeEntry("e-1", date(2026, 3, 2), "work", 30),
                TimeEntry("e-1", date(2026, 3, 2), "work", 31),
            ],
            "id 'e-1' recorded twice with different content",
        ),
        (
            [TimeEntry("x", date(2026, 3, 2), "work", 30), Correction("x", reverses="x")],
            "id 'x' recorded twice",
        ),
        (
            [BOOKING, Cancellation("b-1", at("2026-03-04T08:00:00+01:00")), NoShow("b-1")],
            "booking outcome for 'b-1' recorded twice",
        ),
        (
            [
                BOOKING,
                Cancellation("b-1", at("2026-03-04T08:00:00+01:00")),
                Cancellation("b-1", at("2026-03-05T08:00:00+01:00")),
            ],
            "booking outcome for 'b-1' recorded twice",
        ),
        ([NoShow("b-9")], "unknown booking 'b-9'"),
        ([Cancellation("b-9", at("2026-03-04T08:00:00+01:00"))], "unknown booking 'b-9'"),
        (
            [BOOKING, Cancellation("b-1", at("2026-03-01T08:00:00+01:00"))],
            "cancelled before it was made",
        ),
        ([Correction("c-1", reverses="e-404")], "'e-404', which has no charged line"),
        (
            [BOOKING, Correction("c-1", reverses="b-1")],
            "'b-1', which has no charged line",
        ),
        (
            [
                TimeEntry("e-1", date(2026, 3, 2), "work", 30),
                Correction("c-1", reverses="e-1"),
                Correction("c-2", reverses="c-1"),
            ],
            "'c-1', which has no charged line",
        ),
        (
            [
                TimeEntry("e-1", date(2026, 3, 2), "work", 30),
                Correction("c-1", reverses="e-1"),
                Correction("c-2", reverses="e-1"),
            ],
            "'e-1' was already reversed by 'c-1'",
        ),
        ([TimeEntry("e-1", date(2019, 12, 31), "work", 30)], "no price in force on 2019-12-31"),
    ],
)
def test_inconsistent_ledgers_are_refused(facts: list[Fact], message: str) -> None:
    with pytest.raises(RuleViolation) as caught:
        build(facts)
    assert message in str(caught.value)


@pytest.mark.parametrize("minutes", [0, -5, 1.5])
def test_non_positive_or_fractional_minutes_are_refused_when_recorded(minutes: object) -> None:
    with pytest.raises(RuleViolation, match="entry e-1: minutes must be"):
        TimeEntry("e-1", date(2026, 3, 2), "work", minutes)  # type: ignore[arg-type]  # on purpose
    with pytest.raises(RuleViolation, match="booking b-1: minutes must be"):
        Booking("b-1", BOOKING.start, minutes, BOOKING.booked_at)  # type: ignore[arg-type]  # on purpose


def test_malformed_facts_are_refused() -> None:
    with pytest.raises(RuleViolation, match="unknown kind 'no-show'"):
        TimeEntry("e-1", date(2026, 3, 2), "no-show", 30)  # type: ignore[arg-type]  # on purpose
    with pytest.raises(RuleViolation, match="day must be a date"):
        TimeEntry("e-1", datetime(2026, 3, 2, 9), "work", 30)
    with pytest.raises(RuleViolation, match="entry id must be a non-empty string"):
        TimeEntry(" ", date(2026, 3, 2), "work", 30)
    with pytest.raises(RuleViolation, match=r"booking b-1: start .* no UTC offset"):
        Booking("b-1", datetime(2026, 3, 5, 10), 60, BOOKING.booked_at)
    with pytest.raises(RuleViolation, match="no UTC offset"):
        Cancellation("b-1", datetime(2026, 3, 4, 10))
    with pytest.raises(RuleViolation, match="reverses must be a non-empty string"):
        Correction("c-1", reverses="")
    with pytest.raises(RuleViolation, match="case id"):
        build_statement("", "t-42", [])
    with pytest.raises(TypeError, match="not a ledger fact"):
        build_statement("case-1", "t-42", ["e-1"])  # type: ignore[list-item]  # on purpose


def test_csv_rows_mirror_the_json_lines() -> None:
    facts: list[Fact] = [
        TimeEntry("e-1", date(2026, 3, 2), "work", 7, 'note, with "quotes"'),
        Correction("c-1", reverses="e-1"),
    ]
    rows = build(facts, AWKWARD_PRICES).to_csv_rows()
    assert rows == [
        list(CSV_HEADER),
        ["2026-03-02", "work", "7", "7", "155.55", "18.15", "e-1", 'note, with "quotes"'],
        ["2026-03-02", "correction", "-7", "-7", "155.55", "-18.15", "c-1", "reverses e-1"],
    ]
    assert rows[0][:6] == REQUIRED_LINE_KEYS
    assert all(isinstance(cell, str) for row in rows for cell in row)


def test_statement_line_money_is_printed_with_two_places() -> None:
    line = StatementLine(date(2026, 3, 2), "work", 1, 1, Decimal(150), Decimal("2.5"), "e")
    assert line.to_json()["rate_eur_per_hour"] == "150.00"
    assert line.to_json()["amount_eur"] == "2.50"


# --- rule 11: a figure an older version let through never breaks a statement (issue 8) -------

OLD_FIGURES = [601, 99_999_999_999, 99_999_999_999_999_999_999_999_999, 10**40]
"""Above the 600-minute bound: a typo, a 249-billion-euro line, and InvalidOperation before."""


@pytest.mark.parametrize("minutes", OLD_FIGURES)
@pytest.mark.parametrize("kind", ["work", "live"])
def test_an_out_of_bounds_entry_is_listed_unbilled_until_reversed(kind: str,
                                                                  minutes: int) -> None:
    good = TimeEntry("e-1", date(2026, 3, 2), "work", 30, "inventory")
    huge = TimeEntry("e-2", date(2026, 3, 2), kind, minutes, "typo")  # type: ignore[arg-type]  # kind from the table
    statement = build([good, huge])
    assert figures(statement) == [("2026-03-02", "work", 30, 30, "150.00", "75.00"),
                                  ("2026-03-02", kind, minutes, 0, "150.00", "0.00")]
    flagged = statement.lines[1]
    assert flagged.unbillable and flagged.note.startswith("NOT BILLED")
    assert flagged.note.endswith("; typo")
    assert statement.unresolved == ("e-2",)
    doc = statement.to_json()
    assert doc["total_eur"] == "75.00" and doc["unresolved"] == ["e-2"]
    assert doc["lines"][1]["unbillable"] is True
    json.dumps(doc)

    reversed_ = build([good, huge, Correction("c-1", reverses="e-2", note="typo")])
    assert figures(reversed_)[-1] == ("2026-03-02", "correction", -minutes, 0, "150.00", "0.00")
    assert reversed_.unresolved == () and "unresolved" not in reversed_.to_json()
    assert reversed_.to_json()["total_eur"] == "75.00"


@pytest.mark.parametrize("minutes", OLD_FIGURES)
def test_an_out_of_bounds_booking_charge_is_listed_unbilled(minutes: int) -> None:
    booking = Booking("b-9", BOOKING.start, minutes, BOOKING.booked_at)
    statement = build([booking, NoShow("b-9")])
    assert figures(statement) == [("2026-03-05", "no-show", minutes, 0, "150.00", "0.00")]
    assert statement.unresolved == ("b-9",)
    late = build([booking, Cancellation("b-9", at("2026-03-05T08:00:00+01:00"))])
    assert late.unresolved == ("b-9",) and late.total_eur == Decimal("0.00")


def test_an_automated_step_may_hold_a_week() -> None:
    week = TimeEntry("a-1", date(2026, 3, 2), "automation", 7 * 24 * 60)
    assert figures(build([week])) == [("2026-03-02", "automation", 10080, 10080, "150.00",
                                       "25200.00")]
    longer = TimeEntry("a-2", date(2026, 3, 2), "automation", 7 * 24 * 60 + 1)
    assert build([longer]).unresolved == ("a-2",)


@pytest.mark.parametrize(
    ("note", "message"),
    [
        ("x" * 501, "at most 500"),
        ("a\x00b", "U+0000"),
        ("first line\nsecond line", "U+000A"),
        ("tab\there", "U+0009"),
        ("carriage\rreturn", "U+000D"),
        ("bell\x07", "U+0007"),
        ("delete\x7f", "U+007F"),
        ("c1\x85control", "U+0085"),
        ("not utf-8 \udcff", "U+DCFF"),
        ("invoice \u202eflipped", "U+202E"),
        ("isolate \u2066x\u2069", "U+2066"),
    ],
)
def test_notes_that_cannot_stand_on_one_statement_line_are_refused(note: str,
                                                                   message: str) -> None:
    with pytest.raises(RuleViolation, match=re.escape(message)):
        validate_note(note)


@pytest.mark.parametrize("note", ["", "x" * 500, "Café, 李 小龍, 'quotes' \"and\" commas",
                                  "../../etc/passwd", "emoji 👩\u200d💻"])
def test_ordinary_notes_are_accepted(note: str) -> None:
    assert validate_note(note) == note
