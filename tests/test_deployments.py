"""What the Prefect UI offers, the nightly schedule (Europe/Berlin, outside the DST hour), the
alerts declared in code, and a worker that refuses an incomplete configuration. No server:
``test_deployments_pool.py`` runs all of it against a real one."""

from __future__ import annotations

import io
from datetime import datetime, timedelta
from uuid import uuid4
from zoneinfo import ZoneInfo

import pytest

from deployments import automations
from deployments.definitions import (
    DEPLOYMENTS,
    EXPORT_RETENTION_CRON,
    NIGHTLY_BACKUP_CRON,
    OFFBOARDING_SWEEP_CRON,
    PRUNE_CRON,
    TIMEZONE,
    WORK_POOL,
    build_deployments,
)
from deployments.doctor import Check
from deployments.monitor import metrics_config
from deployments.worker import WorkerOptions, refusals, run_worker, worker_env
from kernel.errors import BadInput
from kernel.settings import Settings

EXPECTED = {"offboarding-export", "export-links", "assisted-migration", "nightly-backup",
            "nightly-backup-shard",
            "prune-backups", "verify-backup", "restore-backup", "offboarding",
            "offboarding-sweeper", "export-retention", "purge-tenant", "restore-in-place",
            "crash-rerun"}
SCHEDULED = {"nightly-backup": NIGHTLY_BACKUP_CRON, "prune-backups": PRUNE_CRON,
             "export-retention": EXPORT_RETENTION_CRON,
             "offboarding-sweeper": OFFBOARDING_SWEEP_CRON}


def test_deployments_and_schedules() -> None:
    deployments = {d.name: d for d in build_deployments()}
    assert set(deployments) == EXPECTED == {d.name for d in DEPLOYMENTS}
    for name, cron in SCHEDULED.items():
        (schedule,) = deployments[name].schedules
        assert schedule.schedule.cron == cron
        assert schedule.schedule.timezone == TIMEZONE == "Europe/Berlin"
        assert deployments[name].concurrency_limit == 1  # one night at a time, the next waits
        assert deployments[name].concurrency_options.collision_strategy.value == "ENQUEUE"
    on_demand = EXPECTED - set(SCHEDULED)
    assert all(not deployments[name].schedules for name in on_demand)
    # exports of different tenants run in parallel: the tenant lock, not a deployment limit
    assert deployments["offboarding-export"].concurrency_limit is None


def test_every_deployment_is_described_and_runs_from_the_installed_package() -> None:
    for deployment in build_deployments():
        assert deployment.description and len(deployment.description) > 40, deployment.name
        assert "tenant-export" in deployment.tags
        assert deployment.work_pool_name == WORK_POOL
        # a module path: the worker imports the installed package, nothing is downloaded
        assert deployment.entrypoint is not None
        assert ":" not in deployment.entrypoint and deployment.entrypoint.startswith("flows.")
        assert deployment.storage is None
        assert deployment._parameter_openapi_schema.properties, deployment.name
    schema = {d.name: d for d in build_deployments()}["offboarding-export"]
    assert "request" in schema._parameter_openapi_schema.properties


def test_nightly_runs_once_a_night_across_both_dst_switches() -> None:
    """Daily at a fixed wall-clock time that exists exactly once on both switch days."""
    minute, hour, day, month, weekday = NIGHTLY_BACKUP_CRON.split()
    assert (day, month, weekday) == ("*", "*", "*")
    assert not 2 <= int(hour) < 3  # the hour DST skips (March) or repeats (October)
    berlin = ZoneInfo(TIMEZONE)
    for switch in (datetime(2026, 3, 29), datetime(2026, 10, 25)):
        for offset in (-1, 0, 1):
            local = (switch + timedelta(days=offset)).replace(hour=int(hour), minute=int(minute))
            first = local.replace(tzinfo=berlin, fold=0)
            second = local.replace(tzinfo=berlin, fold=1)
            assert first.utcoffset() == second.utcoffset()  # neither skipped nor repeated
            round_trip = first.astimezone(ZoneInfo("UTC")).astimezone(berlin)
            assert round_trip.replace(tzinfo=None) == local  # the time exists


def test_alert_automations_watch_the_nightly_backup() -> None:
    nightly, block = uuid4(), uuid4()
    declared = {a.name.removeprefix(automations.PREFIX): a
                for a in automations.declared(nightly, block)}
    assert set(declared) == {"nightly backup failed", "nightly backup late",
                             "tenant without a verified backup for 26 hours",
                             "crash flow runs without heartbeat"}
    failed, late = declared["nightly backup failed"], declared["nightly backup late"]
    assert failed.trigger.expect == {"prefect.flow-run.Failed", "prefect.flow-run.Crashed",
                                     "prefect.flow-run.TimedOut"}
    assert late.trigger.expect == {"prefect.flow-run.Late"}
    for automation in (failed, late):
        assert automation.trigger.posture == "Reactive" and automation.trigger.threshold == 1
        related = automation.trigger.match_related
        assert related.model_dump() == {"prefect.resource.id": f"prefect.deployment.{nightly}"}
        (action,) = automation.actions
        assert action.type == "send-notification" and action.block_document_id == block
    stale = declared["tenant without a verified backup for 26 hours"].trigger
    assert stale.posture == "Proactive" and stale.within == timedelta(hours=26)
    assert stale.expect == {automations.VERIFIED_EVENT}
    assert stale.for_each == {"prefect.resource.id"}
    zombie = declared["crash flow runs without heartbeat"]
    assert zombie.actions[0].type == "change-flow-run-state"
    assert zombie.actions[0].state.value == "CRASHED"
    # without a target the automations still exist (the UI's event feed shows them firing)
    quiet = automations.declared(nightly, None)
    assert [a.actions[0].type for a in quiet][:3] == ["do-nothing"] * 3


def test_crashed_runs_of_the_deployments_are_rerun_by_the_crash_rerun_deployment() -> None:
    ids = {d.name: uuid4() for d in DEPLOYMENTS}
    reruns = automations.crash_reruns(ids, 2)
    declared = {a.name.removeprefix(automations.PREFIX): a
                for a in automations.declared(ids["nightly-backup"], uuid4(), reruns)}
    rerun = declared["re-run crashed flow runs"]
    assert rerun.enabled
    assert rerun.trigger.expect == {"prefect.flow-run.Crashed"}  # never Cancelled or Failed
    assert rerun.trigger.posture == "Reactive" and rerun.trigger.threshold == 1
    watched = set(rerun.trigger.match_related.model_dump()["prefect.resource.id"])
    # not the re-runner itself, not a shard (its night re-submits it), not the runs whose
    # re-run would do the work twice (a second migration case, a restore into a used target)
    left_out = {"crash-rerun", "nightly-backup-shard", "assisted-migration", "restore-backup"}
    assert watched == {f"prefect.deployment.{ids[name]}" for name in set(ids) - left_out}
    (action,) = rerun.actions
    assert action.type == "run-deployment" and action.source == "selected"
    assert action.deployment_id == ids["crash-rerun"]
    assert action.parameters == {
        "crashed_run": {"__prefect_kind": "jinja", "template": "{{ flow_run.id }}"},
        "max_reruns": 2}
    # what the server renders from a crashed run: its id as text, the limit as given
    from prefect.utilities.schema_tools.hydration import HydrationContext, hydrate

    run_id = uuid4()
    rendered = hydrate(action.parameters, HydrationContext(
        render_jinja=True, raise_on_error=True, jinja_context={"flow_run": {"id": run_id}}))
    assert rendered == {"crashed_run": str(run_id), "max_reruns": 2}
    # the nightly alert says a crashed night is run again
    body = declared["nightly backup failed"].actions[0].body
    assert "{% if flow_run.state.name == 'Crashed' %}" in body and "rerun-of:" in body
    # 0 re-runs: the automation stays, disabled (a re-deploy updates it in place)
    (off,) = [a for a in automations.declared(ids["nightly-backup"], None,
                                              automations.crash_reruns(ids, 0))
              if a.name.endswith("re-run crashed flow runs")]
    assert not off.enabled


@pytest.mark.parametrize(("environ", "message"), [
    ({"TENANT_EXPORT_ALERT_WEBHOOK_URL": "ftp://x"}, "http(s) URL"),
    ({"TENANT_EXPORT_ALERT_BLOCK": "no-slash"}, "<block-type-slug>/<block-name>"),
    ({"TENANT_EXPORT_ALERT_WEBHOOK_URL": "http://a", "TENANT_EXPORT_ALERT_BLOCK": "a/b"},
     "not both"),
])
def test_a_malformed_alert_target_is_bad_input(environ: dict[str, str], message: str) -> None:
    with pytest.raises(BadInput, match=message.replace("(", r"\(").replace(")", r"\)")):
        automations.AlertTarget.from_environ(environ)


def test_alert_target_from_the_environment() -> None:
    target = automations.AlertTarget.from_environ(
        {"TENANT_EXPORT_ALERT_WEBHOOK_URL": "https://hooks.example/x"})
    assert target.configured and target.webhook_url == "https://hooks.example/x"
    assert not automations.AlertTarget.from_environ({}).configured


def test_worker_refuses_an_incomplete_configuration(monkeypatch: pytest.MonkeyPatch) -> None:
    """The doctor's failed checks (injected here) and a missing PREFECT_API_URL stop a worker
    before it polls; warnings do not."""
    monkeypatch.setenv("TENANT_EXPORT_STATE_DIR", "/nonexistent-state")

    def doctor(_settings: Settings) -> list[Check]:
        return [Check("platform database", True, "reachable"),
                Check("master key", False, "TENANT_EXPORT_MASTER_KEY is not set"),
                Check("Prefect API", True, "none configured", required=False)]

    out = io.StringIO()
    code = run_worker(WorkerOptions(), preflight=doctor, environ={}, out=out)
    assert code == 1
    text = out.getvalue()
    assert "refusing to start" in text
    assert "FAIL  master key: TENANT_EXPORT_MASTER_KEY is not set" in text
    assert "PREFECT_API_URL is not set" in text
    assert "platform database" not in text  # only what is wrong is listed

    problems = refusals(Settings(), lambda _s: [Check("x", True, "fine")],
                        {"PREFECT_API_URL": "http://127.0.0.1:1/api"})
    assert problems == []


def test_worker_environment_turns_heartbeats_on() -> None:
    env = worker_env({"PATH": "/bin"})
    assert env["PREFECT_FLOWS_HEARTBEAT_FREQUENCY"] == "30"
    assert worker_env({"PREFECT_FLOWS_HEARTBEAT_FREQUENCY": "60"})[
        "PREFECT_FLOWS_HEARTBEAT_FREQUENCY"] == "60"  # an operator's choice wins


def test_datadog_agent_from_its_standard_variables() -> None:
    assert metrics_config({}).statsd_host is None
    config = metrics_config({"DD_AGENT_HOST": "agent", "DD_DOGSTATSD_PORT": "8200"})
    assert (config.statsd_host, config.statsd_port) == ("agent", 8200)
    with pytest.raises(BadInput, match="DD_DOGSTATSD_PORT"):
        metrics_config({"DD_AGENT_HOST": "agent", "DD_DOGSTATSD_PORT": "udp"})
