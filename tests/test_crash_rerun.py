"""When a crashed run is run again (``flows.crash_rerun``): the rules on Prefect's own schemas,
no server. ``test_deployments_pool.py`` proves them through the API with workers."""

from __future__ import annotations

from typing import Any
from uuid import UUID, uuid4

import pytest
from prefect.client.schemas.objects import FlowRun
from prefect.states import Cancelled, Cancelling, Completed, Crashed, Failed, Running, Scheduled

from flows.crash_rerun import Rerun, attempt_of, decide, reruns_from
from kernel.errors import BadInput

PARAMETERS = {"request": {"tenant_id": "t-1", "link_ttl_seconds": 3600}}


def crashed_run(tags: list[str] | None = None, state: Any = None,
                deployment: UUID | None = None) -> FlowRun:
    return FlowRun(id=uuid4(), name="export-t-1", flow_id=uuid4(),
                   deployment_id=deployment or uuid4(), parameters=PARAMETERS,
                   tags=tags if tags is not None else ["tenant-export", "export"],
                   state=state or Crashed(message="no heartbeat for 90 s: the worker or its "
                                          "machine stopped\nsecond line"),
                   work_queue_name="default", job_variables={"env": {"X": "1"}})


def test_a_crashed_run_is_rerun_once_with_the_same_parameters() -> None:
    run = crashed_run()
    rerun = decide(run, [Scheduled(), Running(), run.state], limit=1)
    assert isinstance(rerun, Rerun)
    assert rerun.deployment_id == run.deployment_id and rerun.parameters == PARAMETERS
    assert rerun.tags == ["tenant-export", "export", "rerun", f"rerun-of:{run.id}", "rerun:1"]
    assert rerun.attempt == 1 and rerun.idempotency_key == f"crash-rerun-{run.id}"
    assert rerun.message == (f"re-run 1 of at most 1 of export-t-1 ({run.id}), which crashed: "
                             "no heartbeat for 90 s: the worker or its machine stopped")
    assert rerun.job_variables == {"env": {"X": "1"}} and rerun.work_queue_name == "default"


def test_a_crash_that_repeats_ends_at_the_limit() -> None:
    original = crashed_run()
    first = decide(original, [], limit=2)
    assert isinstance(first, Rerun)
    again = crashed_run(tags=first.tags)
    second = decide(again, [], limit=2)
    assert isinstance(second, Rerun) and second.attempt == 2
    # each re-run names the run it repeats; the chain count is carried along, not the tags
    assert second.tags == ["tenant-export", "export", "rerun", f"rerun-of:{again.id}",
                           "rerun:2"]
    third = decide(crashed_run(tags=second.tags), [], limit=2)
    assert isinstance(third, str) and "crashed again after 2 re-run(s)" in third
    assert isinstance(decide(original, [], limit=0), str)  # 0: never re-run


@pytest.mark.parametrize("history", [
    [Running(), Cancelling()],  # cancelled, then its process was gone: Crashed
    [Running(), Cancelled()],
])
def test_a_run_an_operator_cancelled_is_never_rerun(history: list[Any]) -> None:
    run = crashed_run()
    why = decide(run, [*history, run.state], limit=5)
    assert isinstance(why, str) and "cancelled by an operator" in why


@pytest.mark.parametrize("state", [Cancelled(), Failed(), Completed(), Running()])
def test_only_crashed_runs_are_rerun(state: Any) -> None:
    why = decide(crashed_run(state=state), [], limit=5)
    assert isinstance(why, str) and "not Crashed" in why


def test_a_run_without_deployment_is_not_rerun() -> None:
    run = crashed_run()
    run.deployment_id = None
    why = decide(run, [], limit=1)
    assert isinstance(why, str) and "not started from a deployment" in why


def test_attempts_and_the_limit_from_the_environment() -> None:
    assert attempt_of(["rerun", "rerun:2", "rerun-of:x"]) == 2
    assert attempt_of(["tenant-export"]) == 0
    assert reruns_from({}) == 1
    assert reruns_from({"TENANT_EXPORT_CRASH_RERUNS": "0"}) == 0
    assert reruns_from({"TENANT_EXPORT_CRASH_RERUNS": " 3 "}) == 3
    for bad in ("6", "-1", "once"):
        with pytest.raises(BadInput, match="TENANT_EXPORT_CRASH_RERUNS"):
            reruns_from({"TENANT_EXPORT_CRASH_RERUNS": bad})
