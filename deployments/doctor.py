"""The configuration checks: every piece checked, one line each (``tenant-export doctor``).

Run them before starting a worker or after changing the environment: a missing bucket or key
found here costs a minute, found by the 03:30 nightly backup it costs a night. They live in
``deployments`` (moved from ``tenant_export/doctor.py``) because a worker refuses to start
when one fails, and the CLI sits above this package while a worker is part of it.
"""

from __future__ import annotations

import os
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass

from kernel.dburl import describe_url
from kernel.errors import ExportError
from kernel.settings import Settings
from sources.catalog import CatalogConfig, discover
from sources.database import open_engine
from storage.keys import describe_master_keys
from storage.ledger import Ledger
from storage.s3 import make_client, require_bucket


@dataclass(frozen=True)
class Check:
    """One line of the report."""

    name: str
    ok: bool
    detail: str
    required: bool = True

    def line(self) -> str:
        """``ok   name: detail`` or ``FAIL name: detail``."""
        mark = "ok  " if self.ok else ("FAIL" if self.required else "warn")
        return f"{mark}  {self.name}: {self.detail}"

    def as_dict(self) -> dict[str, object]:
        """For ``--json``."""
        return asdict(self)


def _guard(name: str, probe: Callable[[], str]) -> Check:
    """Run one probe; any error becomes a failed line naming what is wrong."""
    try:
        return Check(name, True, probe())
    except ExportError as err:
        return Check(name, False, str(err))
    except Exception as err:  # noqa: BLE001 - doctor reports every failure as one line
        return Check(name, False, f"{type(err).__name__}: {err}")


def _platform(settings: Settings) -> str:
    config = CatalogConfig.load(settings.catalog)
    engine = open_engine(settings.resolved_source_url())
    try:
        catalog = discover(engine, config)
    finally:
        engine.dispose()
    where = describe_url(settings.resolved_source_url())
    source = f"catalog {settings.catalog}" if settings.catalog else "discovery rules"
    return (f"{where} reachable; {len(catalog.table_names)} tables, {len(catalog.tables)} "
            f"exported ({source})")


def _bucket(settings: Settings, bucket: str, role: str) -> Callable[[], str]:
    def probe() -> str:
        require_bucket(make_client(settings, quick=True), bucket, role)
        return f"{bucket!r} exists and is reachable"

    return probe


def _master_key(settings: Settings) -> str:
    """The key (and the one being retired) parsed and, for KMS, looked up: a disabled or
    missing KMS key fails here rather than at the first backup."""
    return describe_master_keys(settings)


def _control(settings: Settings) -> str:
    url = settings.resolved_control_url()
    Ledger(url).close()  # reachable, and its tables exist (created on first use)
    return f"{describe_url(url)} reachable"


def _prefect_api() -> Check:
    api = os.environ.get("PREFECT_API_URL", "")
    if not api:
        return Check("Prefect API", True, "none configured: commands run their flows on a "
                     "local server kept between commands (started on demand, stopped when "
                     "idle); set PREFECT_API_URL to use yours", required=False)
    try:
        with urllib.request.urlopen(f"{api.rstrip('/')}/health", timeout=5) as response:  # noqa: S310 - operator's configured URL
            healthy = response.status == 200
    except (urllib.error.URLError, OSError, ValueError) as err:
        return Check("Prefect API", False, f"{api} unreachable: {getattr(err, 'reason', err)}")
    return Check("Prefect API", healthy, f"{api} {'healthy' if healthy else 'unhealthy'}")


def run_checks(settings: Settings) -> list[Check]:
    """Every check, in the order a run needs them."""
    control_dir = settings.state_dir
    return [
        Check("state directory", True, str(control_dir)),
        _guard("platform database", lambda: _platform(settings)),
        _guard("documents bucket", _bucket(settings, settings.documents_bucket, "documents")),
        _guard("export bucket", _bucket(settings, settings.export_bucket, "export")),
        _guard("backup bucket", _bucket(settings, settings.backup_bucket, "backup")),
        _guard("master key", lambda: _master_key(settings)),
        _guard("control database", lambda: _control(settings)),
        _prefect_api(),
    ]
