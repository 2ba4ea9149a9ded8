"""A sharded night's bookkeeping (``flows.backup_flow._run_shards``) with the shard runs
replaced: each shard's rows survive another shard's error, a crashed shard is re-run once,
progress counts shards as they end, and a shard's summary is its newest. The shards running
on real workers: ``test_deployments_pool.py``."""

from __future__ import annotations

import threading
import time
from typing import Any
from uuid import UUID, uuid4

import prefect.deployments
import pytest
from prefect import flow
from prefect.client.schemas.objects import FlowRun
from prefect.states import Completed, Crashed

from flows import backup_flow, crash_rerun

TENANTS = ["a", "b", "c", "d"]  # two shards: [a, c] and [b, d]


class Shards:
    """Stands in for ``run_deployment`` and the shards' summaries."""

    def __init__(self, behaviour: dict[str, list[str]]) -> None:
        self.behaviour = behaviour  # first tenant of a shard -> what each call does
        self.calls: list[tuple[list[str], dict[str, Any]]] = []
        self.summaries: dict[UUID, list[dict[str, Any]] | None] = {}
        self._lock = threading.Lock()

    def run_deployment(self, name: str, *, parameters: dict[str, Any], **options: Any) -> Any:
        assert name == backup_flow.NIGHTLY_SHARD_DEPLOYMENT
        part = parameters["tenants"]
        with self._lock:
            attempt = sum(1 for p, _ in self.calls if p == part)
            self.calls.append((part, options))
        what = self.behaviour.get(part[0], ["ok"])[attempt]
        if what == "error":
            raise RuntimeError("the server answered 503\nretry later")
        if what.startswith("slow"):
            time.sleep(1.5)
        run = FlowRun(id=uuid4(), name=f"shard-{part[0]}-{attempt}", flow_id=uuid4(),
                      deployment_id=uuid4(), parameters=parameters,
                      tags=list(options.get("tags") or ["tenant-export"]),
                      state=Crashed(message="no heartbeat for 90 s") if what == "crash"
                      else Completed())
        self.summaries[run.id] = None if what == "crash" else [
            {"tenant": t, "status": "ok", "documents": 1, "bytes_uploaded": 10} for t in part]
        self.runs = {**getattr(self, "runs", {}), run.id: run}
        return run


@pytest.fixture
def shards(prefect_server: None, monkeypatch: pytest.MonkeyPatch) -> Any:
    def install(behaviour: dict[str, list[str]]) -> Shards:
        fake = Shards(behaviour)
        monkeypatch.setattr(prefect.deployments, "run_deployment", fake.run_deployment)
        monkeypatch.setattr(backup_flow, "_shard_summary", lambda run_id: fake.summaries[run_id])
        monkeypatch.setattr(crash_rerun, "rerun_of", lambda client, run_id, limit:
                            crash_rerun.decide(fake.runs[run_id], [], limit))
        return fake
    return install


@flow(name="shards-probe")
def run_shards() -> list[dict[str, Any]]:
    return backup_flow._run_shards(TENANTS, 2)


def test_one_shard_failing_to_start_keeps_the_other_shards_rows(shards: Any) -> None:
    shards({"a": ["error"]})
    rows = run_shards()
    assert [r["tenant"] for r in rows] == TENANTS
    assert {r["tenant"]: r["status"] for r in rows} == {
        "a": "failed", "b": "ok", "c": "failed", "d": "ok"}
    assert rows[0]["error"] == "shard run failed: the server answered 503"


def test_a_crashed_shard_is_rerun_once_with_its_tenants(shards: Any) -> None:
    fake = shards({"a": ["crash", "ok"], "b": ["crash", "crash"]})
    rows = {r["tenant"]: r for r in run_shards()}
    assert rows["a"]["status"] == rows["c"]["status"] == "ok"  # the re-run's summary
    # the re-run of [b, d] crashed too: not re-run again, its tenants reported failed
    assert rows["b"]["status"] == rows["d"]["status"] == "failed"
    assert "no heartbeat for 90 s" in rows["b"]["error"]
    for first in ("a", "b"):
        calls = [options for part, options in fake.calls if part[0] == first]
        assert len(calls) == 2 and "tags" not in calls[0]
        crashed = next(r for r in fake.runs.values()
                       if r.name == f"shard-{first}-0")
        assert f"rerun-of:{crashed.id}" in calls[1]["tags"] and "rerun:1" in calls[1]["tags"]
        assert calls[1]["idempotency_key"] == f"crash-rerun-{crashed.id}"


def test_progress_counts_each_shard_as_it_ends(shards: Any,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    shards({"a": ["slow"]})
    counted: list[tuple[list[str], int]] = []
    real = backup_flow._count

    def record(progress: Any, rows: list[dict[str, Any]], done: int, total: int,
               last: str) -> None:
        counted.append(([r["tenant"] for r in rows], done))
        real(progress, rows, done, total, last)

    monkeypatch.setattr(backup_flow, "_count", record)

    @flow(name="shards-progress-probe")
    def probe() -> list[dict[str, Any]]:
        with backup_flow.Progress(total_steps=4) as progress:
            return backup_flow._run_shards(TENANTS, 2, progress)

    rows = probe()
    assert counted == [(["b", "d"], 2), (["a", "c"], 4)]  # the quick shard first
    assert [r["tenant"] for r in rows] == TENANTS  # the summary in the tenants' order


def test_a_shards_summary_is_its_newest(prefect_server: None) -> None:
    from prefect.artifacts import create_table_artifact
    from prefect.runtime import flow_run

    @flow(name="summary-probe")
    def summaries() -> str:
        for tenant in ("oldest", "older", "newest"):
            create_table_artifact(key="nightly-backup", table=[{"tenant": tenant}])
            time.sleep(0.05)
        return str(flow_run.id)

    run_id = summaries()
    assert backup_flow._shard_summary(UUID(run_id)) == [{"tenant": "newest"}]
    assert backup_flow._shard_summary(uuid4()) is None
