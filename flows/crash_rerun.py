"""Crashed runs are run again, with the same parameters, a bounded number of times.

A run *crashes* when its process or machine dies (the heartbeat automation marks it Crashed)
or a worker is stopped under it. What it did is never half-published (manifests and
``datapackage.json`` are written last) and its tenant lock frees itself, so running it again is
safe: the automation *re-run crashed flow runs* (``deployments/automations.py``) starts the
``crash-rerun`` deployment for each crashed run of the project's deployments, and
:func:`rerun_crashed` creates the new run. The nightly backup re-submits its own crashed
shards with the same rules (:func:`decide`), so its summary counts the re-run.

The rules (:func:`decide`):

- only a run that is Crashed now, of a deployment, and never asked to cancel: a run an
  operator cancelled (Cancelling or Cancelled anywhere in its history) is never re-run, even
  if it ended Crashed because its process was gone;
- at most ``TENANT_EXPORT_CRASH_RERUNS`` times per original run (default 1, 0: never): a re-run
  carries the tags ``rerun-of:<id of the run it re-runs>`` and ``rerun:<n>``; a re-run that
  crashes again is re-run only while ``n`` is below the limit, so a crash that repeats ends;
- one re-run per crashed run, however often it is asked for (the server's idempotency key
  ``crash-rerun-<id>``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any
from uuid import UUID

from prefect import flow, get_run_logger
from pydantic import Field

from flows.forms import form_field
from kernel.errors import BadInput

RERUNS_ENV = "TENANT_EXPORT_CRASH_RERUNS"
DEFAULT_RERUNS = 1
MOST_RERUNS = 5
RERUN_TAG = "rerun"
RERUN_OF = "rerun-of:"
"""Tag prefix: the id of the crashed run a re-run repeats."""
ATTEMPT = "rerun:"
"""Tag prefix: which re-run of the original run this is (1, 2, ...)."""
DEPLOYMENT = "crash_rerun/crash-rerun"
_UUID = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
_ATTEMPT = re.compile(re.escape(ATTEMPT) + r"([0-9]+)$")
_CANCEL_TYPES = frozenset({"CANCELLING", "CANCELLED"})


def reruns_from(environ: Mapping[str, str]) -> int:
    """``TENANT_EXPORT_CRASH_RERUNS`` (0 to 5, default 1)."""
    raw = environ.get(RERUNS_ENV, "").strip()
    if not raw:
        return DEFAULT_RERUNS
    if not raw.isdigit() or int(raw) > MOST_RERUNS:
        raise BadInput(f"{RERUNS_ENV}={raw!r}: expected 0 to {MOST_RERUNS} (re-runs of a "
                       "crashed run; 0: never re-run)")
    return int(raw)


@dataclass(frozen=True)
class Rerun:
    """The run to create in place of a crashed one."""

    deployment_id: UUID
    parameters: dict[str, Any]
    tags: list[str]
    attempt: int
    idempotency_key: str
    message: str
    """The new run's Scheduled state message: which run it repeats, and why."""
    job_variables: dict[str, Any] = field(default_factory=dict)
    work_queue_name: str | None = None


def attempt_of(tags: Iterable[str]) -> int:
    """Which re-run a run with these tags is (0: an original run)."""
    found = [int(m.group(1)) for tag in tags if (m := _ATTEMPT.match(tag))]
    return max(found, default=0)


def _type_name(state: Any) -> str:
    kind = getattr(state, "type", None)
    return str(getattr(kind, "value", kind or "")).upper()


def decide(run: Any, history: Iterable[Any], limit: int) -> Rerun | str:
    """The re-run of the crashed flow run ``run`` (a Prefect ``FlowRun``), or why there is
    none; ``history`` is its states, oldest first (``read_flow_run_states``)."""
    name = f"{run.name} ({run.id})"
    if _type_name(run.state) != "CRASHED":
        return f"{name} is {run.state.name if run.state else 'without a state'}, not Crashed"
    if any(_type_name(state) in _CANCEL_TYPES for state in history):
        return f"{name} was cancelled by an operator: a cancelled run is never re-run"
    if run.deployment_id is None:
        return f"{name} was not started from a deployment: nothing to re-run it from"
    done = attempt_of(run.tags or ())
    if done >= limit:
        return (f"{name} crashed again after {done} re-run(s): not re-run again (at most "
                f"{limit}, {RERUNS_ENV}); look at its logs and start it by hand once fixed")
    kept = [t for t in (run.tags or ()) if t != RERUN_TAG and not t.startswith(
        (RERUN_OF, ATTEMPT))]
    why = (run.state.message or "").strip().splitlines()
    return Rerun(
        deployment_id=run.deployment_id, parameters=dict(run.parameters or {}),
        tags=[*kept, RERUN_TAG, f"{RERUN_OF}{run.id}", f"{ATTEMPT}{done + 1}"],
        attempt=done + 1, idempotency_key=f"crash-rerun-{run.id}",
        message=(f"re-run {done + 1} of at most {limit} of {run.name} ({run.id}), which "
                 f"crashed: {why[0] if why else 'no message'}"),
        job_variables=dict(run.job_variables or {}), work_queue_name=run.work_queue_name)


def submit(client: Any, rerun: Rerun, *, parent_task_run_id: UUID | None = None) -> Any:
    """Create the re-run (once: the idempotency key returns the existing one); the new run."""
    from prefect.states import Scheduled  # noqa: PLC0415

    return client.create_flow_run_from_deployment(
        rerun.deployment_id, parameters=rerun.parameters, tags=rerun.tags,
        idempotency_key=rerun.idempotency_key, state=Scheduled(message=rerun.message),
        job_variables=rerun.job_variables or None, work_queue_name=rerun.work_queue_name,
        parent_task_run_id=parent_task_run_id)


def rerun_of(client: Any, run_id: UUID, limit: int) -> Rerun | str:
    """Read the crashed run ``run_id`` from the server and :func:`decide`."""
    return decide(client.read_flow_run(run_id), client.read_flow_run_states(run_id), limit)


@flow(name="crash_rerun", flow_run_name="rerun-{crashed_run}")
def rerun_crashed(
    crashed_run: Annotated[str, Field(pattern=_UUID), form_field(
        "Crashed run", "The id of the crashed flow run to run again with the same "
        "parameters (the automation 're-run crashed flow runs' fills it in).", pattern=_UUID)],
    max_reruns: Annotated[int, Field(ge=0, le=MOST_RERUNS), form_field(
        "Re-runs at most", "How many times one original run is re-run after crashes, 0 to 5: "
        "a run whose re-runs crashed that often is left for an operator.")] = DEFAULT_RERUNS,
) -> dict[str, Any]:
    """Run a crashed flow run again, with the same parameters, unless it was cancelled or it
    has been re-run ``max_reruns`` times already; says in its log which run it started."""
    from prefect.client.orchestration import get_client  # noqa: PLC0415

    logger = get_run_logger()
    with get_client(sync_client=True) as client:
        decision = rerun_of(client, UUID(crashed_run), max_reruns)
        if isinstance(decision, str):
            logger.warning("not re-running: %s", decision)
            return {"crashed_run": crashed_run, "rerun": None, "reason": decision}
        new = submit(client, decision)
    logger.info("%s: started as flow run %s (%s), tags %s", decision.message, new.name, new.id,
                ", ".join(decision.tags))
    return {"crashed_run": crashed_run, "rerun": str(new.id), "attempt": decision.attempt,
            "reason": decision.message}
