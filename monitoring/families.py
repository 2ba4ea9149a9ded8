"""The figures the pipeline reports, named once for DogStatsD and for Prometheus.

One table so that a Datadog monitor and a Prometheus rule always talk about the same figure:
``backup.last_bytes`` is ``tenant_export.backup.last_bytes`` in DogStatsD and
``tenant_export_backup_last_bytes`` in Prometheus; counters get Prometheus's ``_total``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

PREFIX = "tenant_export"
Kind = Literal["gauge", "counter"]


@dataclass(frozen=True)
class Family:
    """One metric: its key, kind and the help line Prometheus shows."""

    key: str
    kind: Kind
    help: str

    @property
    def statsd_name(self) -> str:
        """``tenant_export.backup.last_bytes``."""
        return f"{PREFIX}.{self.key}"

    @property
    def prometheus_name(self) -> str:
        """``tenant_export_backup_last_bytes`` (``..._total`` for a counter)."""
        base = f"{PREFIX}_{self.key.replace('.', '_')}"
        return f"{base}_total" if self.kind == "counter" else base


LAST_VERIFIED = Family(
    "backup.last_verified_timestamp_seconds", "gauge",
    "Unix time of the tenant's newest verified backup.")
LAST_VERIFIED_AGE = Family(
    "backup.last_verified_age_seconds", "gauge",
    "Seconds since the tenant's newest verified backup (computed when read or sent).")
BACKUP_BYTES = Family("backup.last_bytes", "gauge",
                      "Bytes uploaded by the tenant's last completed backup.")
BACKUP_SECONDS = Family("backup.last_duration_seconds", "gauge",
                        "Duration of the tenant's last completed backup.")
BACKUP_MISSING = Family("backup.last_documents_missing", "gauge",
                        "Documents listed by the platform but missing from the documents "
                        "bucket in the tenant's last completed backup.")
BACKUP_COMPLETED = Family("backup.completed", "counter", "Completed (verified) backups.")
BACKUP_FAILED = Family("backup.failed", "counter", "Failed backups.")
BACKUP_LAST_FAILURE = Family("backup.last_failure_timestamp_seconds", "gauge",
                             "Unix time of the tenant's last failed backup.")
EXPORT_BYTES = Family("export.last_bytes", "gauge",
                      "Size in bytes of the tenant's last export package.")
EXPORT_SECONDS = Family("export.last_duration_seconds", "gauge",
                        "Duration of the tenant's last export.")
EXPORT_COMPLETED = Family("export.completed", "counter", "Completed export packages.")
EXPORT_FAILED = Family("export.failed", "counter", "Failed exports.")

FAMILIES: tuple[Family, ...] = (
    LAST_VERIFIED, LAST_VERIFIED_AGE, BACKUP_BYTES, BACKUP_SECONDS, BACKUP_MISSING,
    BACKUP_COMPLETED, BACKUP_FAILED, BACKUP_LAST_FAILURE, EXPORT_BYTES, EXPORT_SECONDS,
    EXPORT_COMPLETED, EXPORT_FAILED,
)
BY_KEY = {family.key: family for family in FAMILIES}
DERIVED = {LAST_VERIFIED_AGE.key: LAST_VERIFIED.key}
"""Figures computed from another when read: the age from the timestamp, so it keeps growing
between nights even though nothing writes it."""
