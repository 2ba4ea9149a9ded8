"""Assisted migration driven the way an operator drives it from the Prefect UI, through the API.

Issue 4 acceptance: "From the Prefect UI (exercised through the Prefect API in tests): start a
case, enter time through the input form, close it, read the statement artifact". The UI does
exactly what this test does: it finds the paused ``assisted_migration`` run, reads the input
schema and description the pause advertises (that is what the form is rendered from), and
resumes the run with the form's values as ``run_input``; the server checks them against the
schema first, as the form does.

Issue 13: one form per action with only its fields (a first form chooses the action), no
optional-type toggles, no default for ``kind``, and a refused entry shown to the operator in
the next form and on the case card, not only in the logs.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import pytest

from billing.tz import berlin_date
from flows.migration_flow import MigrationCaseRequest, assisted_migration
from kernel.ids import artifact_key
from tests.conftest import Platform

DEADLINE_SECONDS = 60.0
"""Upper bound for every wait below (the flow polls for input every second)."""


class FlowThread(threading.Thread):
    """Runs the case flow (it blocks while paused) and keeps its return value or exception."""

    def __init__(self, request: MigrationCaseRequest) -> None:
        super().__init__(name="assisted-migration", daemon=True)
        self.request = request
        self.result: dict[str, Any] | None = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.result = assisted_migration(self.request)
        except BaseException as err:  # noqa: BLE001 - reported by the test thread
            self.error = err


def _wait_for(what: str, probe: Callable[[], Any], flow: FlowThread | None,
              timeout: float = DEADLINE_SECONDS) -> Any:
    """Call ``probe`` until it returns something truthy; fail clearly on timeout, or when
    ``flow`` (if given) ends first."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if flow is not None and not flow.is_alive():
            value = probe()  # one last look: the flow may have finished in between
            if value:
                return value
            pytest.fail(f"the assisted_migration flow ended while waiting for {what}: "
                        f"result={flow.result!r} error={flow.error!r}")
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.2)


def _assisted_migration_runs(client: Any, *, paused_only: bool) -> list[Any]:
    from prefect.client.schemas.filters import (
        FlowFilter,
        FlowFilterName,
        FlowRunFilter,
        FlowRunFilterState,
        FlowRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType
    from prefect.client.schemas.sorting import FlowRunSort

    run_filter = (FlowRunFilter(state=FlowRunFilterState(
        type=FlowRunFilterStateType(any_=[StateType.PAUSED]))) if paused_only else None)
    return list(client.read_flow_runs(
        flow_filter=FlowFilter(name=FlowFilterName(any_=["assisted_migration"])),
        flow_run_filter=run_filter,
        sort=FlowRunSort.START_TIME_DESC,
        limit=50,
    ))


def _paused_with_form(client: Any, run_id: UUID, previous_pause: str | None
                      ) -> tuple[Any, dict[str, Any], str] | None:
    """The run's state, input schema and description once it waits for a new form, else
    ``None``.

    The flow sets the Paused state first and saves the form schema just after; the server
    refuses a resume until the schema exists, so both must be there.
    """
    from prefect.exceptions import ObjectNotFound, PrefectHTTPStatusError

    state = client.read_flow_run(run_id).state
    if state is None or not state.is_paused() or state.state_details.pause_key == previous_pause:
        return None
    keyset = state.state_details.run_input_keyset
    assert keyset, f"the paused state does not advertise an input form: {state!r}"
    try:
        schema = json.loads(client.read_flow_run_input(run_id, keyset["schema"]))
        description = json.loads(client.read_flow_run_input(run_id, keyset["description"]))
    except (ObjectNotFound, PrefectHTTPStatusError):
        return None
    return state, schema, description


class Operator:
    """Fills the case run's forms through the API, exactly as the UI's Resume button does."""

    def __init__(self, client: Any, flow: FlowThread, run_id: UUID) -> None:
        self.client, self.flow, self.run_id = client, flow, run_id
        self.pause: str | None = None
        self.schema: dict[str, Any] = {}
        self.description = ""

    def wait_for_form(self) -> dict[str, Any]:
        state, self.schema, self.description = _wait_for(
            f"a new form after pause {self.pause}",
            lambda: _paused_with_form(self.client, self.run_id, self.pause), self.flow)
        self.pause = str(state.state_details.pause_key)
        return self.schema

    def submit(self, values: dict[str, Any]) -> None:
        """Resume the current pause with ``values``; raises when the form refuses them."""
        from prefect.flow_runs import resume_flow_run

        resume_flow_run(self.run_id, run_input=values)

    def record(self, action: str, fields: dict[str, Any] | None = None) -> dict[str, Any]:
        """Choose ``action`` in the first form, fill the second (if any); the next form's
        schema (none after ``close``)."""
        assert set(self.schema["properties"]) == {"action"}, self.schema
        self.submit({"action": action})
        if fields is None:
            return {} if action == "close" else self.wait_for_form()
        self.wait_for_form()
        self.submit(fields)
        return self.wait_for_form()


def _logs(client: Any, run_id: UUID) -> list[str]:
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    return [log.message for log in client.read_logs(
        log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run_id])), limit=200)]


def _no_optional_types(schema: dict[str, Any]) -> None:
    """Nothing the UI would render as a "Property is type None" toggle."""
    text = json.dumps(schema)
    assert "anyOf" not in text and "oneOf" not in text and '"null"' not in text, schema


def _card(client: Any, run_id: UUID) -> Any:
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    cards = [a for a in client.read_artifacts(
        flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run_id])))
        if (a.key or "").startswith("migration-")]
    assert len(cards) <= 1, "the case card is updated in place, not repeated"
    return cards[0] if cards else None


def test_operator_runs_a_case_from_the_ui(sqlite_platform: Platform,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
    from prefect.states import Cancelled

    monkeypatch.setenv("TENANT_EXPORT_MIGRATION_POLL_SECONDS", "1")
    # A safety net: a run nobody resumes gives up on its own instead of outliving the test.
    monkeypatch.setenv("TENANT_EXPORT_MIGRATION_WAIT_SECONDS", "180")

    with get_client(sync_client=True) as client:
        earlier = {run.id for run in _assisted_migration_runs(client, paused_only=False)}
        flow = FlowThread(MigrationCaseRequest(tenant_id="t-1"))
        flow.start()
        run_id: UUID | None = None
        try:
            # -- start a case: the run appears in the UI, paused on the input form ------------
            def new_paused_run() -> Any:
                runs = [run for run in _assisted_migration_runs(client, paused_only=True)
                        if run.id not in earlier]
                return runs[0] if runs else None

            run = _wait_for("a new paused assisted_migration run", new_paused_run, flow)
            run_id = run.id
            assert run.name == "migration-t-1"
            ui = Operator(client, flow, run.id)
            first = ui.wait_for_form()
            # The first form asks for the action only, in words; nothing optional to toggle.
            assert set(first["properties"]) == {"action"} and first["required"] == ["action"]
            assert first["title"] == "What to record next"
            assert first["properties"]["action"]["title"] == "What to record"
            assert first["properties"]["action"]["enum"] == [
                "log-time", "book", "cancel", "no-show", "correct", "deliver-export",
                "fresh-links", "close"]
            _no_optional_types(first)
            assert "Choose what to record" in ui.description

            # The case id, from the markdown artifact the run publishes for the operator.
            card = _wait_for("the case's markdown artifact", lambda: _card(client, run.id), flow)
            found = re.search(r"Migration case `([^`]+)`", str(card.data))
            assert found, card.data
            case_id = found.group(1)
            assert card.key == artifact_key("migration", case_id)
            assert "first response due" in str(card.data)
            assert case_id in ui.description

            # -- the log-time form: only its fields, kind without a default -------------------
            ui.submit({"action": "log-time"})
            log_form = ui.wait_for_form()
            assert set(log_form["properties"]) == {"minutes", "kind", "on", "note", "entry_id"}
            assert set(log_form["required"]) == {"minutes", "kind"}
            assert "default" not in log_form["properties"]["kind"]
            assert log_form["properties"]["kind"]["enum"] == ["work", "live"]
            assert log_form["properties"]["on"]["default"] == str(berlin_date(datetime.now(UTC)))
            assert log_form["title"] == "Log time"
            for name, prop in log_form["properties"].items():
                assert prop["title"] != name and prop["description"], (name, prop)
            _no_optional_types(log_form)

            # The form itself refuses a value out of range, and a missing kind (what the UI
            # shows next to the field); the run keeps waiting on the same form.
            for bad in ({"minutes": 0, "kind": "work"}, {"minutes": 5},
                        {"minutes": 5, "kind": "work", "entry_id": "has space"}):
                with pytest.raises(RuntimeError, match="Cannot resume this run"):
                    ui.submit(bad)
            assert client.read_flow_run(run.id).state.state_details.pause_key == ui.pause

            work = {"minutes": 31, "kind": "work", "on": "2026-11-26",
                    "note": "mapping the successor's folders", "entry_id": "ui-1"}
            ui.submit(work)
            ui.wait_for_form()
            assert "Recorded (Log time): entry id ui-1, recorded True." in ui.description
            ui.record("log-time", work)  # submitted twice: counts once
            assert "recorded False" in ui.description

            # -- a refusal by the rules: shown in the next form and on the card ---------------
            too_soon = (datetime.now(UTC) + timedelta(days=1)).replace(microsecond=0)
            ui.record("book", {"start": too_soon.isoformat(), "minutes": 60})
            assert ui.description.startswith("**Refused (Book live assistance):**"), ui.description
            assert "at least 3 days ahead" in ui.description
            card = _card(client, run.id)
            assert "| book | **refused**" in str(card.data) and "3 days ahead" in str(card.data)
            assert "| log-time | entry id ui-1, recorded True |" in str(card.data)

            ui.record("log-time", {"minutes": 45, "kind": "live", "on": "2026-11-27",
                                   "entry_id": "ui-2"})
            assert "Recorded (Log time): entry id ui-2" in ui.description

            # -- close it ---------------------------------------------------------------------
            ui.record("close")
            flow.join(timeout=DEADLINE_SECONDS)
            assert not flow.is_alive(), "the case flow did not finish after close"
        finally:
            if flow.is_alive() and run_id is not None:
                current = client.read_flow_run(run_id).state
                if current is not None and current.is_paused():
                    client.set_flow_run_state(run_id, Cancelled(), force=True)

        assert flow.error is None, f"the case flow failed: {flow.error!r}"
        final = client.read_flow_run(run.id).state
        assert final is not None and final.is_completed(), final

        # -- the statement the run returned -----------------------------------------------
        statement = flow.result
        assert statement is not None
        assert statement["case_id"] == case_id and statement["tenant_id"] == "t-1"
        lines = [(ln["date"], ln["kind"], ln["minutes"], ln["billed_minutes"],
                  ln["rate_eur_per_hour"], ln["amount_eur"], ln["ref"])
                 for ln in statement["lines"]]
        # 31 min of work x 150.00/60 = 77.50; a 45-min live session is two 30-min units = 150.00
        assert lines == [
            ("2026-11-26", "work", 31, 31, "150.00", "77.50", "ui-1"),
            ("2026-11-27", "live", 45, 60, "150.00", "150.00", "ui-2"),
        ]
        assert statement["total_eur"] == "227.50"
        csv_key = f"migrations/t-1/{case_id}/statement.csv"
        assert statement["statement_csv"] == f"s3://{sqlite_platform.export_bucket}/{csv_key}"
        assert "| close | total eur 227.50" in str(_card(client, run.id).data)

        # -- read the statement artifact ---------------------------------------------------
        key = artifact_key("statement", case_id)
        assert key.startswith("statement-" + re.sub(r"[^a-z0-9]", "-", case_id.lower()) + "-")
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])))
        assert len(artifacts) == 1, artifacts
        artifact = artifacts[0]
        assert artifact.type == "table" and artifact.flow_run_id == run.id
        table = json.loads(artifact.data) if isinstance(artifact.data, str) else artifact.data
        assert table[:-1] == statement["lines"]
        assert table[-1]["kind"] == "total" and table[-1]["amount_eur"] == "227.50"
        assert "227.50" in (artifact.description or "")
        assert csv_key in (artifact.description or "")

        # The refusal is in the run's logs too (shipped to the API in batches).
        _wait_for("the refusal in the run's logs",
                  lambda: [m for m in _logs(client, run.id)
                           if "book refused" in m and "3 days ahead" in m], None)

    # -- and the CSV in the export bucket ------------------------------------------------------
    rows = list(csv.reader(io.StringIO(sqlite_platform.get(csv_key).decode())))
    assert rows[0][:6] == ["date", "kind", "minutes", "billed_minutes", "rate_eur_per_hour",
                           "amount_eur"]
    assert [row[:6] for row in rows[1:]] == [
        ["2026-11-26", "work", "31", "31", "150.00", "77.50"],
        ["2026-11-27", "live", "45", "60", "150.00", "150.00"],
        ["", "total", "", "", "", "227.50"],
    ]


def test_a_refused_command_prints_no_traceback_in_a_real_process(
        sqlite_platform: Platform) -> None:
    """The operator's terminal, not CliRunner: a refused migration command is one error line."""
    from prefect.settings import PREFECT_API_URL

    env = {**os.environ, "PREFECT_API_URL": str(PREFECT_API_URL.value())}
    done = subprocess.run(
        [sys.executable, "-m", "tenant_export.cli", "migration", "log", "M-unknown",
         "--minutes", "5"], env=env, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines()[-1] == (
        "tenant-export: error: unknown migration case 'M-unknown'")
    assert "Traceback" not in done.stderr, done.stderr
