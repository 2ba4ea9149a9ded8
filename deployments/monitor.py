"""The worker's side of monitoring: ``/metrics`` for Prometheus, the age gauge for Datadog.

Flow runs write their figures to the control database (``monitoring.FigureStore``); the
worker process, which lives for weeks, serves them and re-sends the backup-age gauge every
minute. The DogStatsD agent is found the way Datadog's own clients find it: ``DD_AGENT_HOST``
and ``DD_DOGSTATSD_PORT``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager

from kernel.errors import BadInput
from kernel.settings import Settings
from monitoring import METADATA, AgeReporter, FigureStore, Metrics, MetricsConfig, MetricsEndpoint
from monitoring.dogstatsd import DEFAULT_PORT
from storage.control import open_control


def metrics_config(environ: Mapping[str, str]) -> MetricsConfig:
    """The DogStatsD agent named by Datadog's variables (none: no datagrams)."""
    port = environ.get("DD_DOGSTATSD_PORT") or str(DEFAULT_PORT)
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise BadInput(f"invalid DD_DOGSTATSD_PORT {port!r}: expected a UDP port number")
    return MetricsConfig(statsd_host=environ.get("DD_AGENT_HOST") or None,
                         statsd_port=int(port))


@contextmanager
def worker_monitoring(settings: Settings, config: MetricsConfig, *, port: int | None,
                      host: str = "127.0.0.1", age_interval: float = 60.0,
                      ) -> Iterator[MetricsEndpoint | None]:
    """Serve ``/metrics`` on ``host:port`` (``None``: not served) and send backup ages to
    DogStatsD when an agent is configured, for the duration of the block."""
    engine = open_control(settings.resolved_control_url(), METADATA)
    store = FigureStore(engine)
    metrics = Metrics.open(config, store)
    endpoint = MetricsEndpoint(store.figures, host, port) if port is not None else None
    reporter = AgeReporter(metrics, age_interval) if metrics.statsd is not None else None
    try:
        if endpoint is not None:
            endpoint.start()
        if reporter is not None:
            reporter.start()
        yield endpoint
    finally:
        if reporter is not None:
            reporter.close()
        if endpoint is not None:
            endpoint.close()
        metrics.close()
        engine.dispose()
