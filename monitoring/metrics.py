"""What the flows report: one call per outcome, sent to DogStatsD and kept for Prometheus.

Reporting never fails the run that reports: a backup that was written and verified stays a
success when the agent is down or the figure store is busy. A lost figure errs on the safe
side: the "age of the last verified backup" grows, and the alert fires rather than stays quiet.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy.exc import SQLAlchemyError

from kernel.ids import validate_tenant_id
from monitoring import families as f
from monitoring.dogstatsd import DEFAULT_PORT, DogStatsd, datagram
from monitoring.store import FigureStore

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class MetricsConfig:
    """Where figures go: a DogStatsD agent (optional) and the figure store (optional)."""

    statsd_host: str | None = None
    statsd_port: int = DEFAULT_PORT


class Metrics:
    """The reporting API of the flows."""

    def __init__(self, store: FigureStore | None = None, statsd: DogStatsd | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.statsd = statsd
        self.clock = clock

    @classmethod
    def open(cls, config: MetricsConfig, store: FigureStore | None = None) -> Metrics:
        """Metrics for ``config``; DogStatsD only when an agent host is configured."""
        statsd = DogStatsd(config.statsd_host, config.statsd_port) if config.statsd_host else None
        return cls(store, statsd)

    def backup_completed(self, tenant_id: str, bytes_uploaded: int, seconds: float,
                         documents_missing: int) -> None:
        """A backup was written and read back: it is the tenant's newest verified backup."""
        now = self.clock()
        self._report(tenant_id, now, gauges={
            f.BACKUP_BYTES: bytes_uploaded, f.BACKUP_SECONDS: seconds,
            f.BACKUP_MISSING: documents_missing,
        }, newest={f.LAST_VERIFIED: now}, counters={f.BACKUP_COMPLETED: 1},
            extra={f.LAST_VERIFIED: now, f.LAST_VERIFIED_AGE: 0.0})

    def backup_verified(self, tenant_id: str, taken_at: float) -> None:
        """``verify`` read back intact a snapshot taken at ``taken_at`` (Unix time): it counts
        as the newest verified backup only if no newer one is known."""
        now = self.clock()
        self._report(tenant_id, now, newest={f.LAST_VERIFIED: taken_at})

    def backup_failed(self, tenant_id: str) -> None:
        """A tenant's backup failed (its last verified backup keeps ageing)."""
        now = self.clock()
        self._report(tenant_id, now, gauges={f.BACKUP_LAST_FAILURE: now},
                     counters={f.BACKUP_FAILED: 1})

    def export_completed(self, tenant_id: str, bytes_total: int, seconds: float) -> None:
        """An export package was published."""
        self._report(tenant_id, self.clock(),
                     gauges={f.EXPORT_BYTES: bytes_total, f.EXPORT_SECONDS: seconds},
                     counters={f.EXPORT_COMPLETED: 1})

    def export_failed(self, tenant_id: str) -> None:
        """An export failed (nothing was published)."""
        self._report(tenant_id, self.clock(), counters={f.EXPORT_FAILED: 1})

    def send_ages(self) -> int:
        """Send every tenant's "age of the last verified backup" to DogStatsD; how many.

        Called every minute by the worker (:class:`AgeReporter`): a gauge sent only when a
        backup completes would stay at 0 in Datadog while the backups have stopped.
        """
        if self.statsd is None or self.store is None:
            return 0
        now = self.clock()
        figures = [x for x in self.store.figures() if x.family == f.LAST_VERIFIED.key]
        self.statsd.send(datagram(f.LAST_VERIFIED_AGE, max(0.0, now - x.value),
                                  {"tenant": x.tenant_id}) for x in figures)
        return len(figures)

    def close(self) -> None:
        """Release the socket (the caller disposes of the store's engine)."""
        if self.statsd is not None:
            self.statsd.close()

    def _report(self, tenant_id: str, now: float, *, gauges: dict[f.Family, float] | None = None,
                counters: dict[f.Family, float] | None = None,
                newest: dict[f.Family, float] | None = None,
                extra: dict[f.Family, float] | None = None) -> None:
        """Send ``gauges``, ``counters`` and ``extra`` to the agent; store ``gauges``,
        ``counters`` and ``newest`` (high-water marks: kept only when higher than the stored
        value, and sent to the agent as an age by :meth:`send_ages`)."""
        validate_tenant_id(tenant_id)
        gauges, counters, newest = gauges or {}, counters or {}, newest or {}
        if self.statsd is not None:
            tags = {"tenant": tenant_id}
            self.statsd.send(datagram(family, value, tags) for family, value in
                             (*gauges.items(), *counters.items(), *(extra or {}).items()))
        if self.store is not None:
            try:
                self.store.record(tenant_id, now,
                                  set_={family.key: value for family, value in gauges.items()},
                                  add={family.key: value for family, value in counters.items()},
                                  raise_to={family.key: value for family, value in newest.items()})
            except SQLAlchemyError as err:  # reported, never fatal: see the module docstring
                logger.warning("figures of tenant %s not stored: %s", tenant_id, err)


class AgeReporter:
    """Sends :meth:`Metrics.send_ages` every ``interval`` seconds in a background thread."""

    def __init__(self, metrics: Metrics, interval: float = 60.0) -> None:
        self.metrics = metrics
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="backup-age-reporter",
                                        daemon=True)

    def _run(self) -> None:
        while True:
            try:
                self.metrics.send_ages()
            except SQLAlchemyError as err:  # the store is down for now: try again next time
                logger.warning("backup ages not sent: %s", err)
            if self._stop.wait(self.interval):
                return

    def start(self) -> AgeReporter:
        """Start reporting (the first report goes out at once)."""
        self._thread.start()
        return self

    def close(self) -> None:
        """Stop reporting."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)
