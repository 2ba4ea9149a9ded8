"""Assisted migration driven the way an operator drives it from the Prefect UI, through the API.

Issue 4 acceptance: "From the Prefect UI (exercised through the Prefect API in tests): start a
case, enter time through the input form, close it, read the statement artifact". The UI does
exactly what this test does: it finds the paused ``assisted_migration`` run, reads the input
schema the pause advertises (that is what the form is rendered from), and resumes the run with
the form's values as ``run_input``.
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
from typing import Any
from uuid import UUID

import pytest

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
                      ) -> tuple[Any, dict[str, Any]] | None:
    """The run's state and input schema once it waits for a new form, else ``None``.

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
    except (ObjectNotFound, PrefectHTTPStatusError):
        return None
    return state, schema


def _submit(client: Any, flow: FlowThread, run_id: UUID, pause_key: str,
            form: dict[str, Any]) -> str:
    """Fill the form of the current pause (what the UI's Resume button does)."""
    from prefect.flow_runs import resume_flow_run

    resume_flow_run(run_id, run_input=form)
    if form.get("action") == "close":
        return pause_key
    state, _ = _wait_for(f"the run to wait for input again after {form}",
                         lambda: _paused_with_form(client, run_id, pause_key), flow)
    return str(state.state_details.pause_key)


def _logs(client: Any, run_id: UUID) -> list[str]:
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    return [log.message for log in client.read_logs(
        log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run_id])), limit=200)]


def test_operator_runs_a_case_from_the_ui(sqlite_platform: Platform,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        ArtifactFilter,
        ArtifactFilterKey,
        FlowRunFilter,
        FlowRunFilterId,
    )
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
            state, schema = _wait_for("the input form of the first pause",
                                      lambda: _paused_with_form(client, run.id, None), flow)
            assert state.state_details.run_input_keyset["schema"].endswith("-schema")
            fields = schema["properties"]
            assert {"action", "minutes", "kind", "on", "entry_id", "booking_id", "start",
                    "reverses", "target_uri", "link_ttl_seconds"} <= set(fields)
            assert "action" in schema.get("required", [])
            actions = json.dumps(fields["action"])
            for action in ("log-time", "book", "cancel", "no-show", "correct",
                           "deliver-export", "fresh-links", "close"):
                assert f'"{action}"' in actions, (action, fields["action"])
            pause = str(state.state_details.pause_key)

            # The case id, from the markdown artifact the run publishes for the operator.
            def case_card() -> Any:
                cards = [a for a in client.read_artifacts(
                    flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run.id])))
                    if (a.key or "").startswith("migration-")]
                return cards[0] if cards else None

            card = _wait_for("the case's markdown artifact", case_card, flow)
            found = re.search(r"Migration case `([^`]+)`", str(card.data))
            assert found, card.data
            case_id = found.group(1)
            assert card.key == artifact_key("migration", case_id)
            assert "first response due" in str(card.data)

            # -- enter time through the form --------------------------------------------------
            work = {"action": "log-time", "minutes": 31, "kind": "work", "on": "2026-11-26",
                    "note": "mapping the successor's folders", "entry_id": "ui-1"}
            pause = _submit(client, flow, run.id, pause, work)
            pause = _submit(client, flow, run.id, pause, work)  # submitted twice: counts once
            # A wrong entry is refused and logged; the case keeps waiting for input.
            pause = _submit(client, flow, run.id, pause,
                            {"action": "log-time", "minutes": 0, "entry_id": "ui-bad"})
            pause = _submit(client, flow, run.id, pause,
                            {"action": "log-time", "minutes": 45, "kind": "live",
                             "on": "2026-11-27", "entry_id": "ui-2"})

            # -- close it ---------------------------------------------------------------------
            _submit(client, flow, run.id, pause, {"action": "close"})
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

        # The refusal of the bad entry is in the run's logs (shipped to the API in batches).
        _wait_for("the refusal in the run's logs",
                  lambda: [m for m in _logs(client, run.id)
                           if "log-time failed" in m and "positive" in m], None)

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
