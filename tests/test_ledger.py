"""The control-database ledger: append-only (enforced by the database), idempotent by id."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa

from kernel.errors import BadInput, ControlDbError
from storage.ledger import Ledger, LedgerEvent
from tests.services import fresh_database


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def ledger_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/control/control.sqlite"  # the folder is created
    return fresh_database(request.getfixturevalue("postgres_url"), "c")


def test_append_is_idempotent_by_id(ledger_url: str) -> None:
    ledger = Ledger(ledger_url)
    first = LedgerEvent("e-1", "case-1", "time", {"minutes": 30, "kind": "work"})
    stored, created = ledger.append(first)
    assert created and stored.seq is not None
    again, created_again = ledger.append(first)
    assert not created_again and again.seq == stored.seq
    assert [e.event_id for e in ledger.events("case-1")] == ["e-1"]
    ledger.close()
    # a new process sees the same history
    assert Ledger(ledger_url).events("case-1")[0].payload == {"minutes": 30, "kind": "work"}


def test_reused_id_with_other_content_is_refused(ledger_url: str) -> None:
    ledger = Ledger(ledger_url)
    ledger.append(LedgerEvent("e-1", "case-1", "time", {"minutes": 30}))
    with pytest.raises(BadInput, match="already used"):
        ledger.append(LedgerEvent("e-1", "case-1", "time", {"minutes": 31}))
    assert [e.payload for e in ledger.events("case-1")] == [{"minutes": 30}]


def test_rows_cannot_be_updated_or_deleted(ledger_url: str) -> None:
    ledger = Ledger(ledger_url)
    ledger.append(LedgerEvent("e-1", "case-1", "time", {"minutes": 30}))
    engine = sa.create_engine(ledger_url.replace("postgresql://", "postgresql+psycopg://"))
    statements = ["UPDATE migration_events SET payload = '{}'", "DELETE FROM migration_events"]
    if ledger_url.startswith("postgresql"):  # TRUNCATE bypasses row triggers
        statements.append("TRUNCATE migration_events")
    for statement in statements:
        with pytest.raises(sa.exc.DBAPIError, match="append-only"), engine.begin() as conn:
            conn.execute(sa.text(statement))
    assert [e.payload for e in ledger.events("case-1")] == [{"minutes": 30}]


def test_events_keep_their_order_and_case(ledger_url: str) -> None:
    ledger = Ledger(ledger_url)
    for i in range(5):
        ledger.append(LedgerEvent(f"a-{i}", "case-a", "time", {"i": i}))
        ledger.append(LedgerEvent(f"b-{i}", "case-b", "time", {"i": i}))
    assert [e.payload["i"] for e in ledger.events("case-a")] == list(range(5))
    assert all(e.case_id == "case-b" for e in ledger.events("case-b"))
    assert ledger.get("nope") is None


def test_unreachable_control_database() -> None:
    with pytest.raises(ControlDbError, match="control database"):
        Ledger("postgresql://nobody@127.0.0.1:1/none?connect_timeout=2")


def test_a_new_sqlite_control_database_is_owner_only(tmp_path: Path) -> None:
    """Portal token hashes, cases and legal holds live there: nobody else on the host reads it."""
    import stat

    from storage.control import open_control

    path = tmp_path / "state" / "control.sqlite"
    open_control(f"sqlite:///{path}", sa.MetaData()).dispose()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
