"""Progress artifacts: what an operator sees of a long run while it runs, read through the API."""

from __future__ import annotations

import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from flows import progress
from flows.progress import Progress, size, span


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_outside_a_flow_run_it_counts_and_publishes_nothing(
        monkeypatch: pytest.MonkeyPatch) -> None:
    def no_api(*_args: Any, **_kwargs: Any) -> Any:
        raise AssertionError("no artifact outside a flow run")

    monkeypatch.setattr(progress, "create_progress_artifact", no_api)
    monkeypatch.setattr(progress, "update_progress_artifact", no_api)
    clock = FakeClock()
    with Progress(total_steps=4, title="Export of tenant t-1", every_seconds=0,
                  clock=clock) as p:
        clock.now += 10
        p.advance(tables=1, nbytes=1536)
        assert p.percent() == 25.0
        assert p.remaining_seconds() == 30.0  # 10 s for 1 step, 3 to go
        assert p.line() == "1 tables, 0 documents, 1.5 KiB; about 30 s left"
        text = p.markdown()
    assert "### Export of tenant t-1: 25 %" in text and "| now |" not in text
    for row in ("| steps | 1 of 4 |", "| tables written | 1 |", "| documents packed | 0 |",
                "| bytes | 1.5 KiB |", "| elapsed | 10 s |", "| estimated time left | 30 s |"):
        assert row in text, row
    assert p.percent() == 100.0 and p.remaining_seconds() is None
    assert p.line() == "1 tables, 0 documents, 1.5 KiB"
    assert "Export of tenant t-1: done" in p.markdown()


def test_a_failed_block_says_where_it_stopped() -> None:
    p = Progress(total_steps=10)

    def three_steps_then_fail() -> None:
        with p:
            p.advance(3)
            raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        three_steps_then_fail()
    assert p.percent() == 30.0
    assert "### Progress: stopped at 30 % (RuntimeError)" in p.markdown()


def test_units_for_people() -> None:
    assert [span(s) for s in (0, 59.6, 65, 3599, 7800)] == [
        "0 s", "1 min 00 s", "1 min 05 s", "59 min 59 s", "2 h 10 min"]
    assert [size(n) for n in (0, 1023, 1024, 5 * 1024**3)] == [
        "0 bytes", "1023 bytes", "1.0 KiB", "5.0 GiB"]


def _read(client: Any, key: str) -> list[Any]:
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    return list(client.read_artifacts(
        artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key]))))


def test_a_flow_run_shows_its_progress_while_it_runs(prefect_server: None,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    from prefect import flow
    from prefect.client.orchestration import get_client

    key = f"progress-test-{uuid.uuid4().hex[:8]}"
    halfway, resume = threading.Event(), threading.Event()
    updates: list[float] = []
    real_update = progress.update_progress_artifact

    def counted(artifact_id: Any, value: float, **kwargs: Any) -> Any:
        updates.append(value)
        return real_update(artifact_id, value, **kwargs)

    monkeypatch.setattr(progress, "update_progress_artifact", counted)

    @flow(name="progress-probe")
    def probe() -> str:
        with Progress(total_steps=4, title="Export of tenant `t-1`", key=key,
                      every_seconds=0) as p:
            p.advance(tables=1, nbytes=1000)
            p.advance(tables=1, nbytes=2000)
            p.doing("packing the documents")
            halfway.set()
            assert resume.wait(60), "the test never read the halfway mark"
            with ThreadPoolExecutor(2) as pool:  # documents are packed in worker threads
                list(pool.map(lambda n: p.advance(documents=1, nbytes=n), [4096, 4096]))
        return "done"

    runner = threading.Thread(target=probe, daemon=True)
    runner.start()
    try:
        assert halfway.wait(60), "the flow did not reach its halfway mark"
        with get_client(sync_client=True) as client:
            (bar,) = _read(client, key)
            (summary,) = _read(client, f"{key}-summary")
            assert bar.type == "progress" and float(bar.data) == 50.0
            assert bar.description.startswith(
                "packing the documents: 2 tables, 0 documents, 2.9 KiB; about ")
            assert summary.type == "markdown" and summary.flow_run_id == bar.flow_run_id
            text = str(summary.data)
            assert "### Export of tenant \\`t-1\\`: 50 %" in text
            assert "| steps | 2 of 4 |" in text and "| tables written | 2 |" in text
            assert "| now | packing the documents |" in text
            assert "| bytes | 2.9 KiB |" in text and "| estimated time left |" in text
    finally:
        resume.set()
    runner.join(60)
    assert not runner.is_alive()

    with get_client(sync_client=True) as client:
        (bar,) = _read(client, key)  # updated in place: still one artifact per key
        (summary,) = _read(client, f"{key}-summary")
        run = client.read_flow_run(bar.flow_run_id)
    assert run.state is not None and run.state.is_completed()
    assert float(bar.data) == 100.0
    assert "Export of tenant \\`t-1\\`: done" in str(summary.data)
    assert "| documents packed | 2 |" in str(summary.data)
    assert "| bytes | 10.9 KiB |" in str(summary.data)
    # 2 advances, doing(), each document unless the other thread was publishing at that
    # instant (one of them always is published), and the final word
    assert updates[-1] == 100.0 and 5 <= len(updates) <= 6 and updates == sorted(updates)


def test_updates_are_throttled(prefect_server: None, monkeypatch: pytest.MonkeyPatch) -> None:
    from prefect import flow

    clock = FakeClock()
    updates: list[float] = []
    real_update = progress.update_progress_artifact
    monkeypatch.setattr(progress, "update_progress_artifact",
                        lambda a, v, **k: (updates.append(v), real_update(a, v, **k))[1])

    @flow(name="progress-throttle-probe")
    def many() -> None:
        with Progress(total_steps=1000, every_seconds=2.0, clock=clock) as p:
            for _ in range(1000):
                clock.now += 0.01  # 1,000 documents in 10 s
                p.advance(documents=1)

    many()
    assert 4 <= len(updates) <= 6  # one every 2 s, plus the last: not 1,000 API calls
    assert updates[-1] == 100.0


def test_stages_are_throttled_too(prefect_server: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """A night calls ``doing`` once per tenant: 1,000 tenants are a handful of updates, and
    the last one says where the run ended."""
    from prefect import flow

    clock = FakeClock()
    descriptions: list[str] = []
    real_update = progress.update_progress_artifact

    def counted(artifact_id: Any, value: float, **kwargs: Any) -> Any:
        descriptions.append(kwargs.get("description") or "")
        return real_update(artifact_id, value, **kwargs)

    monkeypatch.setattr(progress, "update_progress_artifact", counted)

    @flow(name="progress-stage-throttle-probe")
    def night() -> None:
        with Progress(total_steps=1000, every_seconds=2.0, clock=clock) as p:
            for n in range(1, 1001):
                clock.now += 0.01  # 1,000 tenants in 10 s
                p.doing(f"{n} of 1000 tenants backed up")
                p.advance()

    night()
    assert 4 <= len(descriptions) <= 7, descriptions
    assert descriptions[-1].startswith("1000 of 1000 tenants backed up: ")


def test_a_stage_begun_just_after_an_update_is_shown_soon(
        prefect_server: None, monkeypatch: pytest.MonkeyPatch) -> None:
    from prefect import flow

    shown = threading.Event()
    real_update = progress.update_progress_artifact

    def watched(artifact_id: Any, value: float, **kwargs: Any) -> Any:
        if "verifying every object" in (kwargs.get("description") or ""):
            shown.set()
        return real_update(artifact_id, value, **kwargs)

    monkeypatch.setattr(progress, "update_progress_artifact", watched)

    @flow(name="progress-late-stage-probe")
    def stage() -> bool:
        with Progress(total_steps=2, every_seconds=0.5) as p:
            p.doing("verifying every object")  # within 0.5 s of the first update: deferred
            return shown.wait(30)  # published by itself, no other call in between

    assert stage()
