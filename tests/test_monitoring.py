"""Monitoring: the figures reach a DogStatsD listener over UDP and a Prometheus scrape, the same
figures in both; they survive the process that reported them; reporting never fails a run."""

from __future__ import annotations

import re
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine

from deployments.monitor import worker_monitoring
from kernel.settings import Settings
from monitoring import METADATA, AgeReporter, DogStatsd, Figure, FigureStore, Metrics, render
from monitoring.dogstatsd import MAX_DATAGRAM
from monitoring.metrics import MetricsConfig
from monitoring.prometheus import MetricsEndpoint
from storage.control import open_control
from tests.services import ROOT

SAMPLE = re.compile(r'^([a-z_]+)\{tenant="([^"]*)"\} (\S+)$')


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    """A local "agent": a UDP socket on a free port."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(30)
    yield sock
    sock.close()


@pytest.fixture
def control(tmp_path: Path) -> Iterator[Engine]:
    engine = open_control(f"sqlite:///{tmp_path / 'control.sqlite'}", METADATA)
    yield engine
    engine.dispose()


def agent(sock: socket.socket) -> DogStatsd:
    return DogStatsd("127.0.0.1", sock.getsockname()[1])


def received(sock: socket.socket, n: int) -> set[str]:
    """The next ``n`` metric lines (several may share a datagram)."""
    lines: list[str] = []
    while len(lines) < n:
        packet, _ = sock.recvfrom(65535)
        assert len(packet) <= MAX_DATAGRAM
        lines += packet.decode().split("\n")
    assert len(lines) == n, lines
    return set(lines)


def scrape(url: str) -> dict[tuple[str, str], float]:
    with urllib.request.urlopen(url, timeout=30) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = response.read().decode()
    samples: dict[tuple[str, str], float] = {}
    for line in text.splitlines():
        if line.startswith("#"):
            assert re.match(r"^# (HELP|TYPE) tenant_export_[a-z_]+ \S", line), line
            continue
        match = SAMPLE.match(line)
        assert match, line
        samples[(match[1], match[2])] = float(match[3])
    return samples


def test_datagrams_reach_the_agent(listener: socket.socket) -> None:
    metrics = Metrics(statsd=agent(listener), clock=Clock(1_800_000_000.0))
    metrics.backup_completed("t-42", bytes_uploaded=5_000_000_000, seconds=2.5,
                             documents_missing=1)
    tag = "|#tenant:t-42"
    assert received(listener, 6) == {
        "tenant_export.backup.last_bytes:5000000000|g" + tag,
        "tenant_export.backup.last_duration_seconds:2.5|g" + tag,
        "tenant_export.backup.last_documents_missing:1|g" + tag,
        "tenant_export.backup.last_verified_timestamp_seconds:1800000000|g" + tag,
        "tenant_export.backup.completed:1|c" + tag,
        "tenant_export.backup.last_verified_age_seconds:0|g" + tag,
    }
    metrics.backup_failed("t-42")
    assert received(listener, 2) == {
        "tenant_export.backup.last_failure_timestamp_seconds:1800000000|g" + tag,
        "tenant_export.backup.failed:1|c" + tag}
    metrics.export_completed("t-7", bytes_total=1234, seconds=0.75)
    assert received(listener, 3) == {
        "tenant_export.export.last_bytes:1234|g|#tenant:t-7",
        "tenant_export.export.last_duration_seconds:0.75|g|#tenant:t-7",
        "tenant_export.export.completed:1|c|#tenant:t-7"}


def test_prometheus_endpoint_serves_the_same_figures(control: Engine) -> None:
    clock = Clock(1_800_000_000.0)
    metrics = Metrics(store=FigureStore(control), clock=clock)
    metrics.backup_completed("t-42", 1234, 2.5, 0)
    metrics.backup_completed("t-42", 999, 1.5, 2)  # the newest backup wins for gauges
    metrics.backup_failed("t-1")
    metrics.export_completed("t-42", 4096, 3.0)
    endpoint = MetricsEndpoint(FigureStore(control).figures, port=0, clock=clock).start()
    try:
        clock.now += 26 * 3600 + 1  # a day and two hours later, nothing reported since
        samples = scrape(endpoint.url)
    finally:
        endpoint.close()
    assert samples[("tenant_export_backup_last_bytes", "t-42")] == 999
    assert samples[("tenant_export_backup_last_documents_missing", "t-42")] == 2
    assert samples[("tenant_export_backup_completed_total", "t-42")] == 2
    assert samples[("tenant_export_backup_failed_total", "t-1")] == 1
    assert samples[("tenant_export_backup_last_verified_timestamp_seconds", "t-42")] == (
        1_800_000_000)
    # the age grows at read time: this is what the 26-hour alert rule compares
    assert samples[("tenant_export_backup_last_verified_age_seconds", "t-42")] == 26 * 3600 + 1
    assert ("tenant_export_backup_last_verified_age_seconds", "t-1") not in samples
    assert samples[("tenant_export_export_last_bytes", "t-42")] == 4096
    assert samples[("tenant_export_export_completed_total", "t-42")] == 1


def test_figures_outlive_the_flow_run_that_reported_them(tmp_path: Path,
                                                         control: Engine) -> None:
    """A flow run is a process of its own (on any machine): its figures are in the shared
    control database, and the worker's endpoint shows them after the run has exited."""
    url = f"sqlite:///{tmp_path / 'control.sqlite'}"
    child = (
        "from monitoring import METADATA, FigureStore, Metrics\n"
        "from storage.control import open_control\n"
        f"m = Metrics(store=FigureStore(open_control({url!r}, METADATA)))\n"
        "m.backup_completed('t-9', 77, 1.0, 0)\n"
    )
    for _ in range(2):
        subprocess.run([sys.executable, "-c", child], check=True, cwd=ROOT, timeout=120)
    endpoint = MetricsEndpoint(FigureStore(control).figures, port=0).start()
    try:
        samples = scrape(endpoint.url)
    finally:
        endpoint.close()
    assert samples[("tenant_export_backup_completed_total", "t-9")] == 2  # counts add up
    assert samples[("tenant_export_backup_last_bytes", "t-9")] == 77


def test_verifying_an_old_snapshot_never_makes_the_backups_look_newer(control: Engine) -> None:
    clock = Clock(1_800_000_000.0)
    metrics = Metrics(FigureStore(control), clock=clock)
    metrics.backup_completed("t-42", 1, 1.0, 0)
    metrics.backup_verified("t-42", taken_at=1_700_000_000.0)  # an older snapshot, intact
    metrics.backup_verified("t-5", taken_at=1_799_990_000.0)  # first known for this tenant
    samples = {(f.family, f.tenant_id): f.value for f in FigureStore(control).figures()}
    assert samples[("backup.last_verified_timestamp_seconds", "t-42")] == 1_800_000_000.0
    assert samples[("backup.last_verified_timestamp_seconds", "t-5")] == 1_799_990_000.0
    clock.now += 10
    metrics.backup_verified("t-5", taken_at=clock.now)
    samples = {(f.family, f.tenant_id): f.value for f in FigureStore(control).figures()}
    assert samples[("backup.last_verified_timestamp_seconds", "t-5")] == clock.now


def test_backup_age_is_resent_while_no_backup_happens(listener: socket.socket,
                                                      control: Engine) -> None:
    """A gauge sent only when a backup completes would stay at 0 in Datadog after the
    backups stopped; the worker re-sends the age, so a monitor sees it grow."""
    clock = Clock(1_800_000_000.0)
    metrics = Metrics(FigureStore(control), agent(listener), clock)
    metrics.backup_completed("t-42", 1, 1.0, 0)
    received(listener, 6)
    clock.now += 93_601
    assert metrics.send_ages() == 1
    assert received(listener, 1) == {
        "tenant_export.backup.last_verified_age_seconds:93601|g|#tenant:t-42"}
    reporter = AgeReporter(metrics, interval=3600).start()  # the first report goes out at once
    try:
        assert received(listener, 1) == {
            "tenant_export.backup.last_verified_age_seconds:93601|g|#tenant:t-42"}
    finally:
        reporter.close()


def test_many_tenants_are_packed_into_datagrams(listener: socket.socket,
                                                control: Engine) -> None:
    clock = Clock(1_800_000_000.0)
    store = FigureStore(control)
    for i in range(200):
        store.record(f"tenant-{i:03d}", clock.now, set_={
            "backup.last_verified_timestamp_seconds": clock.now - i})
    assert Metrics(store, agent(listener), clock).send_ages() == 200
    lines = received(listener, 200)  # each datagram within MAX_DATAGRAM, none lost on loopback
    assert "tenant_export.backup.last_verified_age_seconds:199|g|#tenant:tenant-199" in lines


def test_reporting_never_fails_the_run(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """No agent listening, an unresolvable agent, a figure store that cannot be written: the
    backup that reports stays a success, and the loss is logged."""
    closed = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()
    unusable = create_engine(f"sqlite:///{tmp_path / 'no-tables.sqlite'}")  # no figure table
    for host in ("127.0.0.1", "agent.invalid"):
        metrics = Metrics(FigureStore(unusable), DogStatsd(host, port))
        metrics.backup_completed("t-1", 1, 1.0, 0)
        metrics.backup_failed("t-1")
        metrics.export_completed("t-1", 1, 1.0)
        metrics.close()
    unusable.dispose()
    assert "agent.invalid" in caplog.text  # the unresolvable agent is named in the warning
    assert "figures of tenant t-1 not stored" in caplog.text


def test_prometheus_text_escapes_labels() -> None:
    text = render([Figure("backup.failed", 'a"b\\c\nd', 3.0, 0.0),
                   Figure("unknown.family", "t", 1.0, 0.0)], now=0.0)
    assert 'tenant_export_backup_failed_total{tenant="a\\"b\\\\c\\nd"} 3' in text
    assert "unknown" not in text
    assert "# TYPE tenant_export_backup_failed_total counter" in text
    assert "# TYPE tenant_export_backup_last_bytes gauge" in text


def test_the_worker_serves_metrics_and_sends_ages(monkeypatch: pytest.MonkeyPatch,
                                                  tmp_path: Path,
                                                  listener: socket.socket) -> None:
    """``deployments.monitor``: what ``python -m deployments.worker --metrics-port`` runs."""
    url = f"sqlite:///{tmp_path / 'control.sqlite'}"
    monkeypatch.setenv("TENANT_EXPORT_CONTROL_URL", url)
    engine = open_control(url, METADATA)
    Metrics(FigureStore(engine)).backup_completed("t-3", 10, 1.0, 0)
    config = MetricsConfig(statsd_host="127.0.0.1", statsd_port=listener.getsockname()[1])
    with worker_monitoring(Settings(), config, port=0) as endpoint:
        assert endpoint is not None
        (line,) = received(listener, 1)
        assert line.startswith("tenant_export.backup.last_verified_age_seconds:")
        assert line.endswith("|g|#tenant:t-3")
        samples = scrape(endpoint.url)
        assert samples[("tenant_export_backup_completed_total", "t-3")] == 1
        with pytest.raises(urllib.error.HTTPError) as missing:
            urllib.request.urlopen(endpoint.url.replace("/metrics", "/other"), timeout=30)
        assert missing.value.code == 404
    engine.dispose()


@pytest.mark.postgres
def test_figures_on_a_postgresql_control_database(postgres_url: str) -> None:
    """Production keeps the control database on PostgreSQL: the same upserts there."""
    from tests.services import fresh_database

    engine = open_control(fresh_database(postgres_url, "metrics"), METADATA)
    try:
        clock = Clock(1_800_000_000.0)
        metrics = Metrics(FigureStore(engine), clock=clock)
        for _ in range(2):
            metrics.backup_completed("t-42", 10, 1.0, 0)
        metrics.backup_verified("t-42", taken_at=1.0)
        clock.now += 60
        text = render(FigureStore(engine).figures(), clock.now)
    finally:
        engine.dispose()
    assert 'tenant_export_backup_completed_total{tenant="t-42"} 2' in text
    assert 'tenant_export_backup_last_verified_timestamp_seconds{tenant="t-42"} 1800000000' in text
    assert 'tenant_export_backup_last_verified_age_seconds{tenant="t-42"} 60' in text
