"""Monitoring: the figures every run reports, for a Datadog agent and for Prometheus.

A stage like the others: it imports only the kernel (never Prefect nor another stage). Flows
call :class:`Metrics`; the worker process serves the figures at ``/metrics`` and sends the
backup-age gauge to DogStatsD every minute.
"""

from monitoring.dogstatsd import DogStatsd
from monitoring.metrics import AgeReporter, Metrics, MetricsConfig
from monitoring.prometheus import MetricsEndpoint, render
from monitoring.store import METADATA, Figure, FigureStore

__all__ = ["METADATA", "AgeReporter", "DogStatsd", "Figure", "FigureStore", "Metrics",
           "MetricsConfig", "MetricsEndpoint", "render"]
