"""Assisted migration: every billing rule of a case driven through ``MigrationDesk`` directly
(fast: no Prefect flow per command), idempotent entries, refusals that write nothing, the
closing statement published to S3 by ``close_case``; and one smoke test of the CLI contract of
DESIGN §3.1 (each CLI command runs a Prefect flow)."""

from __future__ import annotations

import csv
import io
import json
import re
import sqlite3
from collections.abc import Callable, Iterator
from datetime import date, datetime
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from billing.pricelist import PriceList
from flows.migration import MigrationDesk
from kernel.errors import BadInput
from kernel.settings import Settings
from kernel.timeparse import parse_day, parse_instant
from storage.ledger import Ledger
from tenant_export.cli import app
from tests.conftest import Platform

runner = CliRunner()
LINE_FIELDS = ["date", "kind", "minutes", "billed_minutes", "rate_eur_per_hour", "amount_eur"]


def at(text: str) -> datetime:
    return datetime.fromisoformat(text)


def ledger_rows(url: str) -> int:
    """Events in the control database, counted behind the ledger's back."""
    with sqlite3.connect(url.removeprefix("sqlite:///")) as conn:
        return int(conn.execute("SELECT count(*) FROM migration_events").fetchone()[0])


@pytest.fixture
def control_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/control.sqlite"


@pytest.fixture
def desk(control_url: str) -> Iterator[MigrationDesk]:
    ledger = Ledger(control_url)
    try:
        # the default price list (150 EUR/h); "now" after the last date the cases use
        yield MigrationDesk(ledger, clock=lambda: at("2026-12-03T12:00:00+01:00"))
    finally:
        ledger.close()


# close_case also publishes a table artifact; outside a flow run Prefect warns that this is
# deprecated (the CLI and the UI flows always call it inside a run).
@pytest.mark.filterwarnings("ignore:Artifact creation outside of a flow:FutureWarning")
def test_a_whole_case(sqlite_platform: Platform, desk: MigrationDesk, control_url: str) -> None:
    from flows.migration_flow import close_case

    opened = desk.open("t-1", False, at("2026-11-26T10:00:00+01:00"))
    case = opened["case_id"]
    # Thursday 10:00 + 30 support hours: Thu 8 h, Fri 10 h, Mon 10 h, Tue 2 h -> Tue 10:00
    assert opened["first_response_due"] == "2026-12-01T10:00:00+01:00"

    assert desk.log(case, 31, "work", date(2026, 11, 26), entry_id="w-1")["recorded"] is True
    assert desk.log(case, 45, "live", date(2026, 11, 27))["recorded"] is True
    for _ in range(2):  # the same entry id twice counts once
        logged = desk.log(case, 10, "work", date(2026, 11, 27), entry_id="w-2")
    assert logged["recorded"] is False

    booked_at = at("2026-11-26T10:00:00+01:00")
    late = desk.book(case, at("2026-11-30T10:00:00+01:00"), 90, booked_at)
    free = desk.book(case, at("2026-12-01T14:00:00+01:00"), 60, booked_at)
    missed = desk.book(case, at("2026-12-02T09:00:00+01:00"), 30, booked_at)
    cancelled = desk.cancel(late["booking_id"], at("2026-11-30T07:30:00+01:00"))
    assert cancelled["charged"] is True and cancelled["amount_eur"] == "225.00"
    cancelled = desk.cancel(free["booking_id"], at("2026-11-30T23:59:00+01:00"))
    assert cancelled["charged"] is False  # on the eve: free
    assert desk.no_show(missed["booking_id"], at("2026-12-02T09:06:00+01:00"))["charged"] is True
    assert desk.correct(case, "w-1", "typo")["recorded"] is True

    statement = close_case(Settings(), desk, case, at("2026-12-03T12:00:00+01:00"))
    assert set(statement) >= {"case_id", "tenant_id", "lines", "total_eur"}
    assert statement["case_id"] == case and statement["tenant_id"] == "t-1"
    lines = [tuple(ln[f] for f in LINE_FIELDS) for ln in statement["lines"]]
    assert lines == [
        ("2026-11-26", "work", 31, 31, "150.00", "77.50"),
        ("2026-11-26", "correction", -31, -31, "150.00", "-77.50"),
        ("2026-11-27", "live", 45, 60, "150.00", "150.00"),
        ("2026-11-27", "work", 10, 10, "150.00", "25.00"),
        ("2026-11-30", "late-cancellation", 90, 90, "150.00", "225.00"),
        ("2026-12-02", "no-show", 30, 30, "150.00", "75.00"),
    ]
    assert statement["total_eur"] == "475.00"
    for line in statement["lines"]:
        assert list(line)[:6] == LINE_FIELDS
    key = f"migrations/t-1/{case}/statement.csv"
    assert statement["statement_csv"] == f"s3://{sqlite_platform.export_bucket}/{key}"
    rows = list(csv.reader(io.StringIO(sqlite_platform.get(key).decode())))
    assert rows[0][:6] == LINE_FIELDS
    assert rows[-1][5] == "475.00" and len(rows) == 2 + len(lines)

    # closed: nothing more is recorded, and the refusals write nothing
    before = ledger_rows(control_url)
    with pytest.raises(BadInput, match="closed"):
        desk.log(case, 5, "work", date(2026, 12, 3))
    with pytest.raises(BadInput, match="closed"):
        close_case(Settings(), desk, case, at("2026-12-03T12:00:00+01:00"))
    with pytest.raises(BadInput, match="closed"):
        desk.book(case, at("2026-12-10T10:00:00+01:00"), 30, at("2026-12-03T12:00:00+01:00"))
    assert ledger_rows(control_url) == before


Refusal = Callable[[MigrationDesk, str], object]
NOW = at("2026-11-26T10:00:00+01:00")
DAY = date(2026, 11, 26)
REFUSED: dict[str, Refusal] = {
    # what the CLI's `log`, `book`, `cancel`, `no-show`, `correct`, `open`, `close` refused
    "log --minutes 0": lambda d, case: d.log(case, 0, "work", DAY),
    "log --minutes -5": lambda d, case: d.log(case, -5, "work", DAY),
    "log unknown case": lambda d, case: d.log("M-unknown", 5, "work", DAY),
    "log --on 26.11.2026": lambda d, case: parse_day("26.11.2026", "--on"),
    "book 2 days ahead": lambda d, case: d.book(case, at("2026-11-28T10:00:00+01:00"), 60, NOW),
    "book --start without offset (parsed)": lambda d, case: parse_instant("2026-12-01T10:00:00",
                                                                         "--start"),
    "book a naive start": lambda d, case: d.book(case, at("2026-12-01T10:00:00"), 60,
                                                          NOW),
    "book --start next tuesday": lambda d, case: parse_instant("next tuesday", "--start"),
    "cancel unknown booking": lambda d, case: d.cancel("B-unknown", NOW),
    "no-show unknown booking": lambda d, case: d.no_show("B-unknown", NOW),
    "correct nothing": lambda d, case: d.correct(case, "nothing"),
    "open ../etc": lambda d, case: d.open("../etc", False, NOW),
    "close unknown case": lambda d, case: d.close("M-unknown", NOW),
}


@pytest.mark.parametrize("refusal", list(REFUSED.values()), ids=list(REFUSED))
def test_bad_input_writes_nothing(desk: MigrationDesk, control_url: str,
                                  refusal: Refusal) -> None:
    case = desk.open("t-1", False, NOW)["case_id"]
    before = ledger_rows(control_url)
    with pytest.raises(BadInput):
        refusal(desk, case)
    assert ledger_rows(control_url) == before


def test_booking_exactly_three_days_ahead_is_accepted(desk: MigrationDesk) -> None:
    opened = desk.open("t-1", False, at("2026-11-26T23:59:00+01:00"))
    booked = desk.book(opened["case_id"], at("2026-11-29T00:00:00+01:00"), 30,
                       at("2026-11-26T23:59:00+01:00"))
    cancelled = desk.cancel(booked["booking_id"], at("2026-11-28T23:00:00+01:00"))
    assert cancelled["charged"] is False  # on the eve: free
    with pytest.raises(BadInput, match="already"):  # one outcome per booking
        desk.cancel(booked["booking_id"], at("2026-11-28T23:30:00+01:00"))


def test_sla_due_command() -> None:
    result = runner.invoke(app, ["sla", "due", "--received", "2026-06-03T17:30:00+02:00",
                                 "--hours", "2"])
    assert result.exit_code == 0
    # Wed 17:30-18:00 (0.5 h), Thu 4 June is Corpus Christi (RP), Fri 08:00 + 1.5 h
    assert result.stdout.strip() == "2026-06-05T09:30:00+02:00"
    result = runner.invoke(app, ["sla", "due", "--received", "2026-10-23T17:00:00+02:00",
                                 "--hours", "3", "--json"])
    # Fri 17-18 (1 h), weekend with the autumn DST switch, Mon 08:00 + 2 h in CET
    assert json.loads(result.stdout)["due"] == "2026-10-26T10:00:00+01:00"
    for bad in (["--received", "2026-06-03T17:30:00", "--hours", "2"],
                ["--received", "2026-06-03T17:30:00+02:00", "--hours", "0"],
                ["--received", "yesterday", "--hours", "2"],
                ["--received", "2026-06-03T17:30:00+02:00", "--hours", "two"],
                ["--received", "2026-06-03T17:30:00+02:00", "--hours", "inf"],
                ["--received", "2026-06-03T17:30:00+02:00", "--hours", "sNaN"]):
        assert runner.invoke(app, ["sla", "due", *bad]).exit_code == 2, bad


def test_ids_and_reversals_cannot_break_a_case(desk: MigrationDesk) -> None:
    case = desk.open("t-1", False, at("2026-11-26T10:00:00+01:00"))["case_id"]
    other = desk.open("t-2", False, at("2026-11-26T10:00:00+01:00"))["case_id"]
    desk.log(case, 30, "work", date(2026, 11, 26), entry_id="w-9")
    # ids with '.' are the ledger's own (".closed", ".outcome", ".reversal"): refused
    with pytest.raises(BadInput, match="invalid id"):
        desk.log(case, 5, "work", date(2026, 11, 26), entry_id=f"{case}.closed")
    # an id used in another tenant's case is refused without naming that case
    with pytest.raises(BadInput, match="another case") as refused:
        desk.log(other, 5, "work", date(2026, 11, 26), entry_id="w-9")
    assert case not in str(refused.value)
    # one reversal per line: a repeat is idempotent, a second, different one is refused
    assert desk.correct(case, "w-9", "typo")["recorded"] is True
    assert desk.correct(case, "w-9", "typo")["recorded"] is False
    with pytest.raises(BadInput):
        desk.correct(case, "w-9", "other reason")
    assert desk.close(case, at("2026-11-27T10:00:00+01:00")).to_json()["total_eur"] == "0.00"


def test_a_closed_statement_is_never_repriced(desk: MigrationDesk, control_url: str,
                                              tmp_path: Path) -> None:
    case = desk.open("t-1", False, at("2026-11-26T10:00:00+01:00"))["case_id"]
    desk.log(case, 60, "work", date(2026, 11, 26))
    closed = desk.close(case, at("2026-11-27T10:00:00+01:00")).to_json()
    assert closed["total_eur"] == "150.00"
    prices = tmp_path / "prices.toml"
    prices.write_text('[[prices]]\neffective = 2020-01-01\nlive_eur_per_hour = "300.00"\n'
                      'work_eur_per_hour = "300.00"\n')
    ledger = Ledger(control_url)
    try:
        repriced = MigrationDesk(ledger, PriceList.from_file(prices))
        assert repriced.statement(case).to_json()["total_eur"] == "300.00"  # the new list...
        again = repriced.closed_statement(case)  # ... is moot for the issued statement
    finally:
        ledger.close()
    assert again is not None
    assert again["total_eur"] == "150.00" and again["lines"] == closed["lines"]


# -- the CLI contract (one smoke test: every command runs a Prefect flow) ----------------------


def cli(*args: str) -> tuple[int, Any, str]:
    result = runner.invoke(app, ["migration", *args, "--json"])
    out = json.loads(result.stdout) if result.exit_code == 0 else None
    return result.exit_code, out, result.stderr


def test_cli_open_log_close(sqlite_platform: Platform, monkeypatch: pytest.MonkeyPatch,
                            tmp_path: Path) -> None:
    control = Settings().resolved_control_url()
    code, opened, err = cli("open", "t-1", "--at", "2026-11-26T10:00:00+01:00")
    assert code == 0, err
    assert set(opened) >= {"case_id", "first_response_due"}
    assert opened["first_response_due"] == "2026-12-01T10:00:00+01:00"
    case = opened["case_id"]
    code, logged, err = cli("log", case, "--minutes", "31", "--on", "2026-11-26",
                            "--entry-id", "w-1")
    assert code == 0 and logged["recorded"] is True, err

    code, statement, err = cli("close", case)
    assert code == 0, err
    assert set(statement) >= {"case_id", "tenant_id", "lines", "total_eur"}
    assert (statement["case_id"], statement["tenant_id"]) == (case, "t-1")
    assert [list(line)[:6] for line in statement["lines"]] == [LINE_FIELDS]
    assert [tuple(ln[f] for f in LINE_FIELDS) for ln in statement["lines"]] == [
        ("2026-11-26", "work", 31, 31, "150.00", "77.50")]
    assert statement["total_eur"] == "77.50"
    for text in (statement["total_eur"], statement["lines"][0]["amount_eur"],
                 statement["lines"][0]["rate_eur_per_hour"]):
        assert isinstance(text, str) and re.fullmatch(r"-?\d+\.\d{2}", text)  # decimal strings

    # `statement` after a price change shows the statement as issued, not re-priced
    prices = tmp_path / "prices.toml"
    prices.write_text('[[prices]]\neffective = 2020-01-01\nlive_eur_per_hour = "300.00"\n'
                      'work_eur_per_hour = "300.00"\n')
    monkeypatch.setenv("TENANT_EXPORT_PRICE_LIST", str(prices))
    code, again, err = cli("statement", case)
    assert code == 0, err
    assert again["total_eur"] == "77.50" and again["lines"] == statement["lines"]

    # refused with exit 2, one clear line, nothing written
    before = ledger_rows(control)
    for args, reason in ((("log", case, "--minutes", "5"), "closed"),
                         (("open", "nobody"), "nobody")):  # no such tenant in the platform
        code, _, err = cli(*args)
        assert code == 2, (args, code, err)
        assert err.startswith("tenant-export: error:") and "Traceback" not in err, err
        assert reason in err
    assert runner.invoke(app, ["migration", "log", case, "--minutes", "x"]).exit_code == 2
    assert ledger_rows(control) == before

    # every entry is in the audit trail (once, with the case and the operator), chained
    trail = json.loads(runner.invoke(app, ["audit", "t-1", "--json"]).stdout)["events"]
    entries = [e for e in trail if e["kind"] == "migration.entry"]
    assert [(e["details"]["case_id"], e["details"]["entry"]) for e in entries] == [
        (case, "case-opened"), (case, "time"), (case, "case-closed")], entries
    assert all(e["actor"].startswith("cli") for e in entries)
    assert runner.invoke(app, ["audit", "verify"]).exit_code == 0
