"""Assisted migration through the CLI contract of DESIGN §3.1: every billing rule end to end,
idempotent entries, and bad input refused with exit 2 and nothing written."""

from __future__ import annotations

import csv
import io
import json
from typing import Any

import pytest
from typer.testing import CliRunner

from kernel.settings import Settings
from storage.ledger import Ledger
from tenant_export.cli import app
from tests.conftest import Platform

runner = CliRunner()


def cli(*args: str) -> tuple[int, Any, str]:
    result = runner.invoke(app, ["migration", *args, "--json"])
    out = json.loads(result.stdout) if result.exit_code == 0 else None
    return result.exit_code, out, result.stderr


def ledger_size() -> int:
    ledger = Ledger(Settings().resolved_control_url())
    try:
        with ledger._engine.connect() as conn:
            return int(conn.exec_driver_sql("SELECT count(*) FROM migration_events").scalar_one())
    finally:
        ledger.close()


def test_a_whole_case(sqlite_platform: Platform) -> None:
    code, opened, err = cli("open", "t-1", "--at", "2026-11-26T10:00:00+01:00")
    assert code == 0, err
    case = opened["case_id"]
    # Thursday 10:00 + 30 support hours: Thu 8 h, Fri 10 h, Mon 10 h, Tue 2 h -> Tue 10:00
    assert opened["first_response_due"] == "2026-12-01T10:00:00+01:00"

    assert cli("log", case, "--minutes", "31", "--on", "2026-11-26", "--entry-id", "w-1")[0] == 0
    assert cli("log", case, "--minutes", "45", "--kind", "live", "--on", "2026-11-27")[0] == 0
    for _ in range(2):  # the same entry id twice counts once
        code, logged, _ = cli("log", case, "--minutes", "10", "--on", "2026-11-27",
                              "--entry-id", "w-2")
        assert code == 0
    assert logged["recorded"] is False

    code, late, _ = cli("book", case, "--start", "2026-11-30T10:00:00+01:00", "--minutes", "90",
                        "--at", "2026-11-26T10:00:00+01:00")
    assert code == 0
    code, free, _ = cli("book", case, "--start", "2026-12-01T14:00:00+01:00", "--minutes", "60",
                        "--at", "2026-11-26T10:00:00+01:00")
    code, missed, _ = cli("book", case, "--start", "2026-12-02T09:00:00+01:00", "--minutes",
                          "30", "--at", "2026-11-26T10:00:00+01:00")
    code, cancelled, _ = cli("cancel", late["booking_id"], "--at", "2026-11-30T07:30:00+01:00")
    assert cancelled["charged"] is True and cancelled["amount_eur"] == "225.00"
    code, cancelled, _ = cli("cancel", free["booking_id"], "--at", "2026-11-30T23:59:00+01:00")
    assert cancelled["charged"] is False  # on the eve: free
    assert cli("no-show", missed["booking_id"], "--at", "2026-12-02T09:06:00+01:00")[0] == 0
    assert cli("correct", case, "--reverses", "w-1", "--note", "typo")[0] == 0

    code, statement, err = cli("close", case)
    assert code == 0, err
    assert set(statement) >= {"case_id", "tenant_id", "lines", "total_eur"}
    assert statement["case_id"] == case and statement["tenant_id"] == "t-1"
    lines = [(ln["date"], ln["kind"], ln["minutes"], ln["billed_minutes"],
              ln["rate_eur_per_hour"], ln["amount_eur"]) for ln in statement["lines"]]
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
        assert list(line)[:6] == ["date", "kind", "minutes", "billed_minutes",
                                  "rate_eur_per_hour", "amount_eur"]
    key = f"migrations/t-1/{case}/statement.csv"
    rows = list(csv.reader(io.StringIO(sqlite_platform.get(key).decode())))
    assert rows[0][:6] == ["date", "kind", "minutes", "billed_minutes", "rate_eur_per_hour",
                           "amount_eur"]
    assert rows[-1][5] == "475.00" and len(rows) == 2 + len(lines)

    before = ledger_size()
    code, _, err = cli("log", case, "--minutes", "5")
    assert code == 2 and "closed" in err
    assert cli("close", case)[0] == 2
    assert ledger_size() == before


def test_bad_input_writes_nothing(sqlite_platform: Platform) -> None:
    code, opened, _ = cli("open", "t-1", "--at", "2026-11-26T10:00:00+01:00")
    case = opened["case_id"]
    before = ledger_size()
    refused = [
        ("log", case, "--minutes", "0"),
        ("log", case, "--minutes", "-5"),
        ("log", "M-unknown", "--minutes", "5"),
        ("log", case, "--minutes", "5", "--on", "26.11.2026"),
        ("book", case, "--start", "2026-11-28T10:00:00+01:00", "--minutes", "60",
         "--at", "2026-11-26T10:00:00+01:00"),  # 2 days ahead: too late
        ("book", case, "--start", "2026-12-01T10:00:00", "--minutes", "60"),  # no offset
        ("book", case, "--start", "next tuesday", "--minutes", "60"),
        ("cancel", "B-unknown"),
        ("no-show", "B-unknown"),
        ("correct", case, "--reverses", "nothing"),
        ("open", "nobody"),
        ("open", "../etc"),
        ("close", "M-unknown"),
    ]
    for args in refused:
        code, _, err = cli(*args)
        assert code == 2, (args, code, err)
        assert err.startswith("tenant-export: error:") and "Traceback" not in err, err
    code, _, err = runner.invoke(app, ["migration", "log", case, "--minutes", "x"]).exit_code, 0, ""
    assert code == 2
    assert ledger_size() == before


def test_booking_exactly_three_days_ahead_is_accepted(sqlite_platform: Platform) -> None:
    _, opened, _ = cli("open", "t-1", "--at", "2026-11-26T23:59:00+01:00")
    code, booked, err = cli("book", opened["case_id"], "--start", "2026-11-29T00:00:00+01:00",
                            "--minutes", "30", "--at", "2026-11-26T23:59:00+01:00")
    assert code == 0, err
    code, _, err = cli("cancel", booked["booking_id"], "--at", "2026-11-28T23:00:00+01:00")
    assert code == 0
    code, _, err = cli("cancel", booked["booking_id"], "--at", "2026-11-28T23:30:00+01:00")
    assert code == 2 and "already" in err  # one outcome per booking


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


def test_ids_and_reversals_cannot_break_a_case(sqlite_platform: Platform) -> None:
    _, first, _ = cli("open", "t-1", "--at", "2026-11-26T10:00:00+01:00")
    _, other, _ = cli("open", "t-2", "--at", "2026-11-26T10:00:00+01:00")
    case = first["case_id"]
    assert cli("log", case, "--minutes", "30", "--on", "2026-11-26", "--entry-id", "w-9")[0] == 0
    # ids with '.' are the ledger's own (".closed", ".outcome", ".reversal"): refused
    code, _, err = cli("log", case, "--minutes", "5", "--entry-id", f"{case}.closed")
    assert code == 2 and "invalid id" in err
    # an id used in another tenant's case is refused without naming that case
    code, _, err = cli("log", other["case_id"], "--minutes", "5", "--on", "2026-11-26",
                       "--entry-id", "w-9")
    assert code == 2 and case not in err and "another case" in err
    # one reversal per line: a repeat is idempotent, a second, different one is refused
    assert cli("correct", case, "--reverses", "w-9", "--note", "typo")[0] == 0
    code, again, _ = cli("correct", case, "--reverses", "w-9", "--note", "typo")
    assert code == 0 and again["recorded"] is False
    code, _, err = cli("correct", case, "--reverses", "w-9", "--note", "other reason")
    assert code == 2
    code, statement, err = cli("close", case)
    assert code == 0, err
    assert statement["total_eur"] == "0.00"


def test_a_closed_statement_is_never_repriced(sqlite_platform: Platform,
                                              monkeypatch: pytest.MonkeyPatch,
                                              tmp_path: Any) -> None:
    _, opened, _ = cli("open", "t-1", "--at", "2026-11-26T10:00:00+01:00")
    case = opened["case_id"]
    cli("log", case, "--minutes", "60", "--on", "2026-11-26")
    code, closed, _ = cli("close", case)
    assert closed["total_eur"] == "150.00"
    prices = tmp_path / "prices.toml"
    prices.write_text('[[prices]]\neffective = 2020-01-01\nlive_eur_per_hour = "300.00"\n'
                      'work_eur_per_hour = "300.00"\n')
    monkeypatch.setenv("TENANT_EXPORT_PRICE_LIST", str(prices))
    code, again, err = cli("statement", case)
    assert code == 0, err
    assert again["total_eur"] == "150.00" and again["lines"] == closed["lines"]
