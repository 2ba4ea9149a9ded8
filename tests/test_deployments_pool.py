"""The deployments on a process work pool of a real Prefect server (a subprocess, SQLite), with
real workers (``python -m deployments.worker``): what ``make serve`` / ``make worker`` run.

- every deployment exists with its schedule, form, description and concurrency;
- the alerts fire through Prefect's own automation engine into a local webhook: a Failed and a
  Late nightly backup; the Late night survives a re-deploy and runs when a worker starts;
  stopping the worker leaves the schedule and the next night in place;
- two workers: different tenants run in parallel, one on each worker; two runs of one tenant
  never overlap (the second waits for the lock, then runs);
- a worker's machine dies mid-run: the run is marked Crashed (heartbeats), the tenant's
  next run gets the lock, and the crashed run is re-run on the other worker with the same
  parameters (once: a re-run that crashes again, or a cancelled run, is not re-run).

Waits poll the API with generous timeouts; nothing asserts on elapsed time.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterDeploymentId

from deployments import automations
from deployments.definitions import (
    DEPLOYMENTS,
    NIGHTLY_BACKUP_CRON,
    PRUNE_CRON,
    TIMEZONE,
    WORK_POOL,
    build_deployments,
)
from deployments.deploy import Provisioned
from deployments.serve import provision
from deployments.server import LocalServer
from tests.conftest import Platform
from tests.pool_helpers import GatedProxy, Webhook, Worker, running, wait_for, worker_env
from tests.s3proxy import S3Request
from tests.services import free_port

pytestmark = pytest.mark.timeout(1500)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalServer]:
    home = tmp_path_factory.mktemp("prefect-home")
    local = LocalServer(port=free_port(), home=home, log=home / "server.log")
    local.start(timeout=300)
    try:
        yield local
    finally:
        local.stop()


@pytest.fixture(scope="module")
def webhook() -> Iterator[Webhook]:
    hook = Webhook()
    yield hook
    hook.close()


@pytest.fixture(scope="module")
def provisioned(server: LocalServer, webhook: Webhook) -> Provisioned:
    return provision(server.api_url, WORK_POOL,
                     automations.AlertTarget(webhook_url=webhook.url))


class Api:
    """A sync Prefect client on the test's server (not the session's test harness)."""

    def __init__(self, api_url: str) -> None:
        from prefect.client.orchestration import get_client
        from prefect.settings import PREFECT_API_URL, temporary_settings

        self._settings = temporary_settings(updates={PREFECT_API_URL: api_url})
        self._settings.__enter__()
        self.client = get_client(sync_client=True)
        self.client.__enter__()

    def close(self) -> None:
        self.client.__exit__(None, None, None)
        self._settings.__exit__(None, None, None)

    def run(self, deployment: str, parameters: dict[str, Any]) -> UUID:
        flow_name = {d.name: d.flow.partition(":")[2] for d in DEPLOYMENTS}[deployment]
        dep = self.client.read_deployment_by_name(f"{flow_name}/{deployment}")
        return self.client.create_flow_run_from_deployment(dep.id, parameters=parameters).id

    def state(self, run_id: UUID) -> Any:
        return self.client.read_flow_run(run_id).state

    def finished(self, run_id: UUID) -> Any:
        state = self.state(run_id)
        return state if state is not None and state.is_final() else None

    def online(self, *names: str) -> bool:
        workers = {w.name: w.status for w in self.client.read_workers_for_work_pool(WORK_POOL)}
        return all(workers.get(name) == "ONLINE" for name in names)


@pytest.fixture
def api(server: LocalServer) -> Iterator[Api]:
    client = Api(server.api_url)
    yield client
    client.close()


def _export(tenant: str) -> dict[str, Any]:
    return {"request": {"tenant_id": tenant, "link_ttl_seconds": 3600}}


def _completed(api: Api, run_id: UUID, timeout: float, *workers: Worker) -> None:
    state = wait_for(lambda: api.finished(run_id), timeout, f"flow run {run_id} to finish")
    if not state.is_completed():
        logs = "\n".join(w.output()[-4000:] for w in workers)
        raise AssertionError(f"run {run_id} ended {state.name}: {state.message}\n{logs}")


def test_every_deployment_exists_with_schedule_and_form(server: LocalServer, api: Api,
                                                        provisioned: Provisioned) -> None:
    pool = api.client.read_work_pool(WORK_POOL)
    assert pool.type == "process"
    expected = {d.name: d for d in build_deployments()}
    found = {d.name: d for d in api.client.read_deployments()}
    assert set(found) == set(expected) == set(provisioned.deployments)
    for name, deployment in found.items():
        assert deployment.work_pool_name == WORK_POOL
        assert deployment.description == expected[name].description
        assert "tenant-export" in deployment.tags
        assert deployment.entrypoint == expected[name].entrypoint
        assert deployment.enforce_parameter_schema
        assert (set(deployment.parameter_openapi_schema["properties"])
                == set(expected[name]._parameter_openapi_schema.properties)), name
        assert not deployment.paused
    for name, cron in (("nightly-backup", NIGHTLY_BACKUP_CRON), ("prune-backups", PRUNE_CRON)):
        (schedule,) = found[name].schedules
        assert schedule.active
        assert (schedule.schedule.cron, schedule.schedule.timezone) == (cron, TIMEZONE)
        assert found[name].global_concurrency_limit.limit == 1
    export_form = found["offboarding-export"].parameter_openapi_schema
    assert "tenant_id" in str(export_form["definitions"])
    # idempotent: what the next `make serve` does changes no id and adds no automation
    again = provision(server.api_url, WORK_POOL,
                      automations.AlertTarget(webhook_url="http://127.0.0.1:9/x"))
    assert again == provisioned
    names = [a.name for a in api.client.read_automations()]
    assert sorted(names) == sorted(provisioned.automations)


def test_failed_and_late_nightly_alert_and_a_worker_catches_up(
        server: LocalServer, provisioned: Provisioned, webhook: Webhook, api: Api,
        sqlite_platform: Platform, tmp_path: Path) -> None:
    from prefect.states import Failed, Scheduled

    # the alert target was set to a dead URL by the idempotency test: point it back here
    provision(server.api_url, WORK_POOL, automations.AlertTarget(webhook_url=webhook.url))
    nightly = provisioned.deployments["nightly-backup"]
    client = api.client

    # 1. a nightly backup fails: the alert names the run and the reason
    failing = client.create_flow_run_from_deployment(
        nightly, state=Scheduled(scheduled_time=datetime.now(UTC) + timedelta(days=300)))
    client.set_flow_run_state(failing.id, Failed(message="backup failed for 1 of 3 tenants: t-1"),
                              force=True)
    alert = webhook.next_matching(lambda m: failing.name in m.get("body", ""), timeout=180)
    assert alert["subject"] == "tenant-export: nightly backup Failed"
    assert "backup failed for 1 of 3 tenants: t-1" in alert["body"]

    # 2. a night passes without a worker: the run turns Late and the alert says so
    missed = client.create_flow_run_from_deployment(
        nightly, parameters={"tenants": ["t-2"]},
        state=Scheduled(scheduled_time=datetime.now(UTC) - timedelta(minutes=2)))
    wait_for(lambda: api.state(missed.id).name == "Late", 180, "the missed night to be Late")
    alert = webhook.next_matching(lambda m: missed.name in m.get("body", ""), timeout=180)
    assert alert["subject"] == "tenant-export: nightly backup late"
    assert "make worker" in alert["body"]

    # 3. `make serve` again (re-deploy): the Late night is kept, the schedule still active
    provision(server.api_url, WORK_POOL, automations.AlertTarget(webhook_url=webhook.url))
    assert api.state(missed.id).name == "Late"

    # 4. a worker starts: it runs the missed night
    env = worker_env(server.api_url, tmp_path / "prefect-home")
    worker = Worker("catch-up", env, tmp_path, "--limit", "2")
    with running(worker):
        wait_for(lambda: api.online("catch-up"), 180, "the worker to be online")
        _completed(api, missed.id, 600, worker)
        result_names = [s.name for s in client.read_flow_run_states(missed.id)]
        assert "Late" in result_names and result_names[-1] == "Completed"
        tree = worker.tree()
        assert worker.stop() == 0  # a clean stop (SIGTERM), no process left behind
    wait_for(lambda: not any(Path(f"/proc/{pid}").exists() for pid in tree), 60,
             "the worker's processes to exit")

    # 5. with no worker left, the schedule and the coming nights are still on the server
    deployment = client.read_deployment(nightly)
    assert not deployment.paused and all(s.active for s in deployment.schedules)
    from prefect.client.schemas.filters import (
        DeploymentFilter,
        DeploymentFilterId,
        FlowRunFilter,
        FlowRunFilterState,
        FlowRunFilterStateName,
    )

    def upcoming() -> list[Any]:
        return [r for r in client.read_flow_runs(
            deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[nightly])),
            flow_run_filter=FlowRunFilter(state=FlowRunFilterState(
                name=FlowRunFilterStateName(any_=["Scheduled"]))))
            if r.auto_scheduled and r.expected_start_time > datetime.now(UTC)]

    runs = wait_for(upcoming, 180, "the scheduler to plan the coming nights")
    from zoneinfo import ZoneInfo

    first = min(r.expected_start_time for r in runs).astimezone(ZoneInfo(TIMEZONE))
    assert (first.hour, first.minute) == (3, 30)


def _t1_document(request: S3Request) -> bool:
    return request.operation == "GetObject" and request.key.startswith("t1/")


def _export_ids(platform: Platform, tenant: str) -> list[str]:
    return sorted({k.split("/")[2] for k in platform.export_keys()
                   if k.startswith(f"exports/{tenant}/") and k.endswith("datapackage.json")})


def test_two_workers_share_the_work_and_one_tenant_never_overlaps(
        server: LocalServer, provisioned: Provisioned, api: Api,
        sqlite_platform: Platform, tmp_path: Path) -> None:
    with GatedProxy(sqlite_platform.endpoint, _t1_document) as proxy:
        env = worker_env(server.api_url, tmp_path / "prefect-home",
                         AWS_ENDPOINT_URL_S3=proxy.url, TENANT_EXPORT_LOCK_WAIT_SECONDS="900")
        workers = (Worker("w-a", env, tmp_path, "--limit", "1"),
                   Worker("w-b", env, tmp_path, "--limit", "1"))
        with running(*workers):
            wait_for(lambda: api.online("w-a", "w-b"), 180, "both workers to be online")
            # A: tenant t-1, held inside its lock at its first document
            run_a = api.run("offboarding-export", _export("t-1"))
            wait_for(lambda: proxy.waiting, 300, "run A to hold t-1's lock at a document")
            # B: tenant t-2 runs start to end while A is still in progress
            run_b = api.run("offboarding-export", _export("t-2"))
            _completed(api, run_b, 300, *workers)
            assert api.state(run_a).is_running()
            ran_on = {_worker_of(api, run, workers) for run in (run_a, run_b)}
            assert ran_on == {"w-a", "w-b"}  # one worker each: both take work
            # C: t-1 again, on the worker B freed: it waits for A's lock
            run_c = api.run("offboarding-export", _export("t-1"))
            wait_for(lambda: api.state(run_c).is_running(), 300, "run C to start")
            limit = api.client.read_global_concurrency_limit_by_name("tenant-t-1")
            assert (limit.limit, limit.active_slots) == (1, 1)
            assert len(_export_ids(sqlite_platform, "t-1")) == 0
            proxy.open()
            _completed(api, run_a, 600, *workers)
            _completed(api, run_c, 600, *workers)
        ids = _export_ids(sqlite_platform, "t-1")
        assert len(ids) == 2
        # every S3 request of a package is made under its lock: the two never interleave
        spans = []
        for export_id in ids:
            times = [seen.at for seen in proxy.requests() if export_id in seen.request.key]
            spans.append((min(times), max(times)))
        first, second = sorted(spans)
        assert first[1] < second[0], spans


def _worker_of(api: Api, run_id: UUID, workers: tuple[Worker, ...]) -> str:
    """The worker that ran ``run_id``: its flow-run process is in that worker's process tree
    while it runs; once it ended, Prefect's worker has logged the run's id."""

    def find() -> str | None:
        pid = api.client.read_flow_run(run_id).infrastructure_pid
        if pid is not None:
            number = int(str(pid).rsplit(":", 1)[-1])
            found = next((w.name for w in workers if number in w.tree()), None)
            if found:
                return found
        return next((w.name for w in workers if str(run_id) in w.output()), None)

    return wait_for(find, 120, f"the worker of run {run_id}")


def _reruns_of(api: Api, run_id: UUID) -> list[Any]:
    from prefect.client.schemas.filters import FlowRunFilterTags

    return list(api.client.read_flow_runs(flow_run_filter=FlowRunFilter(
        tags=FlowRunFilterTags(all_=[f"rerun-of:{run_id}"]))))


def _rerun_decision(api: Api, provisioned: Provisioned, crashed: UUID, says: str) -> str:
    """The line of the ``crash-rerun`` run started for ``crashed`` that ``says`` something
    (its logs reach the server shortly after it ended)."""
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    def finished() -> Any:
        runs = [r for r in api.client.read_flow_runs(flow_run_filter=FlowRunFilter(
            deployment_id=FlowRunFilterDeploymentId(any_=[
                provisioned.deployments["crash-rerun"]])))
            if r.parameters.get("crashed_run") == str(crashed)]
        return runs[0] if len(runs) == 1 and api.finished(runs[0].id) else None

    helper = wait_for(finished, 600, f"the crash-rerun run for {crashed} to finish")
    assert helper.state.is_completed(), helper.state

    def line() -> str | None:
        logs = api.client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[helper.id])))
        return next((log.message for log in logs if says in log.message), None)

    return wait_for(line, 120, f"the crash-rerun run's log to say {says!r}")


def test_a_dead_workers_run_is_crashed_rerun_elsewhere_and_its_lock_freed(
        server: LocalServer, provisioned: Provisioned, api: Api,
        sqlite_platform: Platform, tmp_path: Path) -> None:
    """Issue 13: a crashed worker's runs are marked and retried without manual cleanup of
    locks; a re-run that crashes again, and a run an operator cancelled, are not re-run."""
    from prefect.states import Cancelling, Crashed, Scheduled

    with GatedProxy(sqlite_platform.endpoint, _t1_document) as proxy:
        env = worker_env(server.api_url, tmp_path / "prefect-home",
                         AWS_ENDPOINT_URL_S3=proxy.url, TENANT_EXPORT_LOCK_WAIT_SECONDS="900")
        workers = (Worker("w-c", env, tmp_path, "--limit", "1"),
                   Worker("w-d", env, tmp_path, "--limit", "1"))
        with running(*workers):
            wait_for(lambda: api.online("w-c", "w-d"), 180, "both workers to be online")
            doomed = api.run("offboarding-export", _export("t-1"))
            wait_for(lambda: proxy.waiting, 300, "the run to hold t-1's lock at a document")
            host = next(w for w in workers if w.name == _worker_of(api, doomed, workers))
            host.kill_machine()
            proxy.open()
            killed_at = datetime.now(UTC)
            survivor = next(w for w in workers if w is not host)
            nxt = api.run("offboarding-export", _export("t-1"))
            # the dead run stops looking Running: no heartbeat for 90 s -> Crashed
            crashed = wait_for(lambda: api.finished(doomed), 600, "the dead run to be Crashed")
            assert crashed.name == "Crashed", crashed
            # and the tenant's next run gets the lock (the dead holder's lease runs out)
            _completed(api, nxt, 900, survivor)
            ended = api.client.read_flow_run(nxt).end_time
            crashed_at = api.client.read_flow_run(doomed).state.timestamp
            # the crashed run is run again, by itself, with the same parameters, on the
            # worker that is left; nobody touched the lock
            (rerun,) = wait_for(lambda: _reruns_of(api, doomed), 600, "the re-run to appear")
            assert rerun.parameters == api.client.read_flow_run(doomed).parameters
            assert rerun.deployment_id == provisioned.deployments["offboarding-export"]
            assert {"rerun", f"rerun-of:{doomed}", "rerun:1"} <= set(rerun.tags)
            first_state = api.client.read_flow_run_states(rerun.id)[0]
            assert str(doomed) in (first_state.message or "")  # the UI says what it re-runs
            _completed(api, rerun.id, 900, survivor)
            assert _worker_of(api, rerun.id, workers) == survivor.name
            rerun_ended = api.client.read_flow_run(rerun.id).end_time
            assert rerun_ended is not None
            _rerun_decision(api, provisioned, doomed, "started as flow run")
            print(f"\nafter the machine died: the tenant's next run ended in "
                  f"{(ended - killed_at).total_seconds():.0f} s, the dead run was marked "
                  f"Crashed in {(crashed_at - killed_at).total_seconds():.0f} s "
                  f"({crashed.message}), its re-run ended "
                  f"{(rerun_ended - killed_at).total_seconds():.0f} s after the kill")

            # bounded: the re-run crashing again is not re-run (TENANT_EXPORT_CRASH_RERUNS
            # defaults to 1), nor a run an operator cancelled that ended Crashed
            export = provisioned.deployments["offboarding-export"]
            later: Any = Scheduled(scheduled_time=datetime.now(UTC) + timedelta(days=300))
            again = api.client.create_flow_run_from_deployment(
                export, parameters=_export("t-2"), state=later,
                tags=["rerun", f"rerun-of:{doomed}", "rerun:1"])
            cancelled = api.client.create_flow_run_from_deployment(
                export, parameters=_export("t-2"), state=later)
            api.client.set_flow_run_state(cancelled.id, Cancelling(), force=True)
            for run in (again, cancelled):
                api.client.set_flow_run_state(run.id, Crashed(message="crashed (test)"),
                                              force=True)
            _rerun_decision(api, provisioned, again.id, "crashed again after 1 re-run(s)")
            _rerun_decision(api, provisioned, cancelled.id, "cancelled by an operator")
            assert not _reruns_of(api, again.id) and not _reruns_of(api, cancelled.id)
        # the dead run published nothing; the next run and the re-run one package each
        published = _export_ids(sqlite_platform, "t-1")
        assert len(published) == 2
        # and what the dead run had staged was removed by a later run, under the lock
        assert {k.split("/")[2] for k in sqlite_platform.export_keys()
                if k.startswith("exports/t-1/")} == set(published)


def test_make_serve_starts_everything_and_ctrl_c_stops_it_in_order(
        sqlite_platform: Platform, tmp_path: Path) -> None:
    """``python -m deployments.serve`` (``make serve``) on a free port: server with the UI
    pointed at its API, deployments, one worker with its metrics endpoint; SIGINT stops the
    worker, then the server, and leaves no process behind."""
    import json
    import signal
    import sys
    import urllib.request

    from deployments import processes
    from tests.services import ROOT

    port, metrics_port = free_port(), free_port()
    env = worker_env("", tmp_path / "prefect-home")
    del env["PREFECT_API_URL"]  # serve starts its own server
    log = tmp_path / "serve.log"
    serve = processes.start([sys.executable, "-m", "deployments.serve", "--port", str(port),
                             "--metrics-port", str(metrics_port)], env, log=log, cwd=ROOT)
    try:
        wait_for(lambda: "Prefect UI: " in log.read_text() or serve.poll() is not None, 600,
                 "serve to print the UI address")
        assert serve.poll() is None, log.read_text()
        assert f"Prefect UI: http://127.0.0.1:{port}" in log.read_text()
        base = f"http://127.0.0.1:{port}"
        with urllib.request.urlopen(f"{base}/ui-settings", timeout=30) as response:
            assert json.load(response)["api_url"] == f"{base}/api"
        with urllib.request.urlopen(base + "/", timeout=30) as response:
            assert b"<html" in response.read().lower()
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics",
                                    timeout=30) as response:
            assert b"# TYPE tenant_export_backup_last_verified_timestamp_seconds gauge" in (
                response.read())
        tree = [serve.pid]
        for child in processes.children_of(serve.pid):
            tree += [child, *processes.children_of(child)]
        assert len(tree) >= 4  # serve, server, worker supervisor, Prefect's worker
        serve.send_signal(signal.SIGINT)
        assert serve.wait(timeout=300) == 0, log.read_text()
    finally:
        if serve.poll() is None:
            processes.stop(serve, signal.SIGTERM)
    wait_for(lambda: not any(processes.alive(pid) for pid in tree), 60,
             "every process of serve to exit")
    assert "Stopping: the worker first" in log.read_text()


def test_a_sharded_night_fans_out_to_shard_runs_and_completes(
        server: LocalServer, provisioned: Provisioned, api: Api,
        sqlite_platform: Platform, tmp_path: Path) -> None:
    """The night holds nightly-backup's one-at-a-time slot while it waits: its shards run on
    their own deployment, or they would wait for it forever."""
    env = worker_env(server.api_url, tmp_path / "prefect-home",
                     AWS_ENDPOINT_URL_S3=sqlite_platform.endpoint)
    workers = (Worker("w-a", env, tmp_path, "--limit", "2"),
               Worker("w-b", env, tmp_path, "--limit", "2"))
    with running(*workers):
        wait_for(lambda: api.online("w-a", "w-b"), 180, "both workers to be online")
        night = api.run("nightly-backup", {"shards": 2})
        _completed(api, night, 600, *workers)
        shard = api.client.read_deployment_by_name("nightly_backup/nightly-backup-shard")
        shard_runs = api.client.read_flow_runs(flow_run_filter=FlowRunFilter(
            deployment_id=FlowRunFilterDeploymentId(any_=[shard.id])))
    assert len(shard_runs) == 2
    assert all(run.state is not None and run.state.is_completed() for run in shard_runs)
    shards = [run.parameters["tenants"] for run in shard_runs]
    covered = [tenant for part in shards for tenant in part]
    assert len(covered) == len(set(covered)) >= 2 and all(shards)  # each tenant once
    for tenant in covered:  # each has its snapshot in the backup bucket
        listed = sqlite_platform.s3.list_objects_v2(
            Bucket=sqlite_platform.backup_bucket, Prefix=f"backups/{tenant}/snapshots/")
        assert listed.get("KeyCount", 0) > 0, tenant
