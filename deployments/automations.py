"""Alerting that ships with the project: Prefect automations declared in code.

Created or updated by name on every ``make serve`` (idempotent), evaluated by the Prefect
server itself, so an alert fires even when no worker runs (that is when a night goes Late):

- the nightly backup ended Failed, Crashed or TimedOut;
- the nightly backup is Late (scheduled, and no worker picked it up);
- a tenant had no verified backup for 26 hours (the flows emit ``tenant.backup.verified``);
- a flow run stopped sending heartbeats (its machine died): it is marked Crashed, which frees
  its deployment slot and, for the nightly backup, raises the first alert;
- a flow run of the project's deployments ended Crashed: the ``crash-rerun`` deployment runs it
  again with the same parameters (``flows.crash_rerun``: never a cancelled run, at most
  ``TENANT_EXPORT_CRASH_RERUNS`` times per original run, default 1).

The notification target is configurable: ``TENANT_EXPORT_ALERT_WEBHOOK_URL`` (a JSON POST with
``text``, ``subject`` and ``body``: Slack-compatible, or any HTTP receiver), or
``TENANT_EXPORT_ALERT_BLOCK`` naming an existing Prefect notification block as
``<block-type-slug>/<name>`` (email through SendGrid, Teams, PagerDuty, Opsgenie, ...).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, cast
from uuid import UUID

from deployments.definitions import DEPLOYMENTS
from kernel.errors import BadInput

if TYPE_CHECKING:
    from prefect.events.schemas.automations import AutomationCore

PREFIX = "tenant-export: "
BLOCK_NAME = "tenant-export-alerts"
VERIFIED_EVENT = "tenant.backup.verified"
"""Emitted by the flows after each verified backup, resource ``tenant.<id>``."""
VERIFIED_WITHIN = timedelta(hours=26)
"""A nightly backup plus two hours of slack: one late night alerts, a DST switch does not."""
HEARTBEAT_TIMEOUT = timedelta(seconds=90)
FAILURE_STATES = ("Failed", "Crashed", "TimedOut")
RERUN_DEPLOYMENT = "crash-rerun"


@dataclass(frozen=True)
class CrashReruns:
    """What the automation *re-run crashed flow runs* needs: the ``crash-rerun`` deployment,
    the deployments whose crashed runs it re-runs, and how often per original run."""

    rerun_deployment_id: UUID
    watched: tuple[UUID, ...]
    most: int = 1
    """Re-runs per original run; 0 leaves the automation disabled."""


@dataclass(frozen=True)
class AlertTarget:
    """Where alerts go: a webhook URL, or a notification block an operator configured."""

    webhook_url: str | None = None
    block: str | None = None
    """``<block-type-slug>/<block-name>`` of an existing notification block."""

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> AlertTarget:
        """``TENANT_EXPORT_ALERT_WEBHOOK_URL`` / ``TENANT_EXPORT_ALERT_BLOCK``."""
        url = environ.get("TENANT_EXPORT_ALERT_WEBHOOK_URL") or None
        block = environ.get("TENANT_EXPORT_ALERT_BLOCK") or None
        if url and block:
            raise BadInput("set TENANT_EXPORT_ALERT_WEBHOOK_URL or TENANT_EXPORT_ALERT_BLOCK, "
                           "not both")
        if url and not url.startswith(("http://", "https://")):
            raise BadInput("TENANT_EXPORT_ALERT_WEBHOOK_URL must be an http(s) URL")
        if block and block.count("/") != 1:
            raise BadInput(f"TENANT_EXPORT_ALERT_BLOCK {block!r}: expected "
                           "<block-type-slug>/<block-name>, e.g. slack-webhook/ops")
        return cls(url, block)

    @property
    def configured(self) -> bool:
        """Whether alerts reach anyone (else they show only in the UI's event feed)."""
        return bool(self.webhook_url or self.block)


def notification_block(target: AlertTarget) -> UUID | None:
    """The block document alerts are sent through (saved from the webhook URL, or looked up
    by name); ``None`` when no target is configured."""
    from prefect.blocks.notifications import CustomWebhookNotificationBlock  # noqa: PLC0415
    from prefect.client.orchestration import get_client  # noqa: PLC0415
    from prefect.exceptions import ObjectNotFound  # noqa: PLC0415

    if target.webhook_url:
        block = CustomWebhookNotificationBlock.model_validate({
            "name": BLOCK_NAME, "url": target.webhook_url,
            "json_data": {"text": "{{subject}}\n{{body}}", "subject": "{{subject}}",
                          "body": "{{body}}"}})
        # ``save`` is sync outside an event loop (async_dispatch types it as both).
        return cast(UUID, block.save(BLOCK_NAME, overwrite=True))
    if target.block:
        slug, _, name = target.block.partition("/")
        with get_client(sync_client=True) as client:
            try:
                return client.read_block_document_by_name(name, slug).id
            except ObjectNotFound as err:
                raise BadInput(f"TENANT_EXPORT_ALERT_BLOCK {target.block!r}: no such block; "
                               "create it in the UI (Blocks) first") from err
    return None


def declared(nightly_deployment_id: UUID, block_id: UUID | None,
             reruns: CrashReruns | None = None) -> list[AutomationCore]:
    """Every automation of the project, for the nightly backup deployment given (and the
    crash re-runs, when ``reruns`` says where they run)."""
    from prefect.client.schemas.objects import StateType  # noqa: PLC0415
    from prefect.events.actions import (  # noqa: PLC0415
        ActionTypesOrUnknown,
        ChangeFlowRunState,
        DoNothing,
        RunDeployment,
        SendNotification,
    )
    from prefect.events.schemas.automations import (  # noqa: PLC0415
        AutomationCore,
        EventTrigger,
        Posture,
    )

    def notify(subject: str, body: str) -> list[ActionTypesOrUnknown]:
        if block_id is None:
            return [DoNothing()]
        return [SendNotification(block_document_id=block_id, subject=subject, body=body)]

    runs: dict[str, str | list[str]] = {"prefect.resource.id": "prefect.flow-run.*"}
    nightly: dict[str, str | list[str]] = {
        "prefect.resource.id": f"prefect.deployment.{nightly_deployment_id}"}
    run_line = ("Run {{ flow_run.name }} ({{ flow_run|ui_url }}), scheduled for "
                "{{ flow_run.expected_start_time }}")
    rerun_line = ("" if reruns is None or reruns.most == 0 else
                  "{% if flow_run.state.name == 'Crashed' %} It is run again automatically "
                  "with the same parameters (deployment crash-rerun, at most "
                  f"{reruns.most} time(s); the new run is tagged "
                  "rerun-of:{{ flow_run.id }}) unless an operator cancelled it.{% endif %}")
    automations = [
        AutomationCore(
            name=PREFIX + "nightly backup failed",
            description="A nightly-backup run ended Failed, Crashed or TimedOut: some tenant "
            "has no backup tonight. The run's state message and summary artifact say which.",
            trigger=EventTrigger(
                expect={f"prefect.flow-run.{state}" for state in FAILURE_STATES},
                match=runs, match_related=nightly, posture=Posture.Reactive, threshold=1),
            actions=notify(
                "tenant-export: nightly backup {{ flow_run.state.name }}",
                run_line + " ended {{ flow_run.state.name }}: {{ flow_run.state.message }}"
                + rerun_line),
        ),
        AutomationCore(
            name=PREFIX + "nightly backup late",
            description="A nightly-backup run is past its start time and no worker took it: "
            "start a worker (`make worker`); it runs the missed night when it starts.",
            trigger=EventTrigger(expect={"prefect.flow-run.Late"}, match=runs,
                                 match_related=nightly, posture=Posture.Reactive, threshold=1),
            actions=notify(
                "tenant-export: nightly backup late",
                run_line + " is Late: no worker is polling its work pool. Start one "
                "(`make worker` or `python -m deployments.worker`); it runs the night then."),
        ),
        AutomationCore(
            name=PREFIX + "tenant without a verified backup for 26 hours",
            description="No `tenant.backup.verified` event for a tenant in 26 hours (terms "
            "2.2: a daily backup). Tenants are tracked from their first verified backup.",
            trigger=EventTrigger(
                after={VERIFIED_EVENT}, expect={VERIFIED_EVENT},
                match={"prefect.resource.id": "tenant.*"}, for_each={"prefect.resource.id"},
                posture=Posture.Proactive, threshold=1, within=VERIFIED_WITHIN),
            actions=notify(
                "tenant-export: no verified backup for 26 hours",
                "{{ labels.prefect.resource.id }} has had no verified backup for 26 hours. "
                "Check the last nightly-backup runs and `tenant-export snapshots`."),
        ),
        AutomationCore(
            name=PREFIX + "crash flow runs without heartbeat",
            description="A running flow run sent no heartbeat for 90 s (its worker's machine "
            "died): mark it Crashed so it no longer looks Running and alerts can fire.",
            trigger=EventTrigger(
                after={"prefect.flow-run.heartbeat"},
                expect={"prefect.flow-run.heartbeat", "prefect.flow-run.Completed",
                        "prefect.flow-run.Failed", "prefect.flow-run.Cancelled",
                        "prefect.flow-run.Crashed"},
                match={"prefect.resource.id": "prefect.flow-run.*"},
                for_each={"prefect.resource.id"}, posture=Posture.Proactive, threshold=1,
                within=HEARTBEAT_TIMEOUT),
            actions=[ChangeFlowRunState.model_validate({
                "state": StateType.CRASHED,
                "message": "no heartbeat for 90 s: the worker or its machine stopped"})],
        ),
    ]
    if reruns is not None:
        automations.append(AutomationCore(
            name=PREFIX + "re-run crashed flow runs",
            description="A run of the project's deployments ended Crashed (its worker or "
            "machine died, or a worker was stopped under it): the crash-rerun deployment runs "
            "it again with the same parameters, tagged rerun-of:<crashed run id> and "
            f"rerun:<n>; at most {reruns.most} time(s) per original run "
            "(TENANT_EXPORT_CRASH_RERUNS), never a run an operator cancelled. Its log says "
            "which run it started, or why none.",
            enabled=reruns.most > 0,
            trigger=EventTrigger(
                expect={"prefect.flow-run.Crashed"}, match=runs,
                match_related={"prefect.resource.id": [
                    f"prefect.deployment.{watched}" for watched in reruns.watched]},
                posture=Posture.Reactive, threshold=1),
            actions=[RunDeployment(
                source="selected", deployment_id=reruns.rerun_deployment_id,
                # a jinja placeholder (renders to text): a plain "{{ ... }}" string is taken
                # as a v1 template and passed through ``tojson``, which a UUID fails
                parameters={"crashed_run": {"__prefect_kind": "jinja",
                                            "template": "{{ flow_run.id }}"},
                            "max_reruns": reruns.most},
                job_variables=None)],
        ))
    return automations


def upsert(automations: Sequence[AutomationCore]) -> dict[str, UUID]:
    """Create or update each automation by name (duplicates left by hand are removed)."""
    from prefect.client.orchestration import get_client  # noqa: PLC0415

    ids: dict[str, UUID] = {}
    with get_client(sync_client=True) as client:
        for automation in automations:
            existing = client.read_automations_by_name(automation.name)
            if existing:
                keep, *extra = existing
                client.update_automation(keep.id, automation)
                for duplicate in extra:
                    client.delete_automation(duplicate.id)
                ids[automation.name] = keep.id
            else:
                ids[automation.name] = client.create_automation(automation)
    return ids


def crash_reruns(deployments: Mapping[str, UUID], most: int) -> CrashReruns:
    """The crash re-runs for the deployments deployed (ids by name): every deployment declared
    with ``rerun_on_crash``."""
    watched = tuple(deployments[d.name] for d in DEPLOYMENTS
                    if d.rerun_on_crash and d.name in deployments)
    return CrashReruns(deployments[RERUN_DEPLOYMENT], watched, most)


def install(deployments: Mapping[str, UUID], target: AlertTarget,
            reruns: int = 1) -> dict[str, UUID]:
    """The notification block and every automation, idempotently; ids by name.

    Args:
        deployments: the project's deployment ids by name (``nightly-backup`` and
            ``crash-rerun`` among them).
        target: where alerts go.
        reruns: how often a crashed run is re-run per original run (0: never).
    """
    return upsert(declared(deployments["nightly-backup"], notification_block(target),
                           crash_reruns(deployments, reruns)))
