"""The only module that knows how to drive this project: its CLI, its environment, the JSON it
prints, and (for the fan-out) the nightly flow and its per-tenant unit.

The pipeline's internals change while it is made fast; the CLI and the environment contract of
DESIGN §3 do not. When a mechanism moves (the nightly's per-tenant unit, its parallelism),
adapt it here and nowhere else.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
CLI = Path(sys.executable).with_name("tenant-export")
WARM_IMPORTS = ("tenant_export.cli", "flows.export_flow", "flows.backup_flow",
                "flows.restore_flow", "pyarrow.csv", "pyarrow.parquet", "moto.server")
"""Imported once before anything is measured, so every measured process finds a bytecode
cache as an installed package has (see ``base_env``)."""


@dataclass(frozen=True)
class Target:
    """One configuration of the pipeline: platform, catalog, buckets and its own state."""

    source_url: str
    catalog: Path
    state_dir: Path
    documents_bucket: str
    export_bucket: str
    backup_bucket: str
    master_key: str = field(repr=False)

    def env(self, base: Mapping[str, str]) -> dict[str, str]:
        """``base`` plus the ``TENANT_EXPORT_*`` variables of DESIGN §3.2."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        return {**base,
                "TENANT_EXPORT_SOURCE_URL": self.source_url,
                "TENANT_EXPORT_CATALOG": str(self.catalog),
                "TENANT_EXPORT_STATE_DIR": str(self.state_dir),
                "TENANT_EXPORT_CONTROL_URL": f"sqlite:///{self.state_dir / 'control.sqlite'}",
                "TENANT_EXPORT_DOCUMENTS_BUCKET": self.documents_bucket,
                "TENANT_EXPORT_EXPORT_BUCKET": self.export_bucket,
                "TENANT_EXPORT_BACKUP_BUCKET": self.backup_bucket,
                "TENANT_EXPORT_MASTER_KEY": self.master_key,
                "TENANT_EXPORT_LOCK_WAIT_SECONDS": "120"}


def base_env(aws: Mapping[str, str], prefect_api_url: str, pycache: Path,
             prefect_home: Path) -> dict[str, str]:
    """The environment of every measured process of ours: S3 through the proxy, the
    benchmark's Prefect server, and a bytecode cache in the work directory (an installed
    package has one; ``PYTHONDONTWRITEBYTECODE`` would make every process compile its
    imports, seconds each)."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("TENANT_EXPORT_", "AWS_", "PREFECT_"))
           and k != "PYTHONDONTWRITEBYTECODE"}
    env.update(aws)
    env.update({"PREFECT_API_URL": prefect_api_url,
                "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
                "PREFECT_HOME": str(prefect_home),
                "PYTHONPYCACHEPREFIX": str(pycache),
                "PYTHONPATH": str(ROOT)})
    return env


def tenant_of(args: list[str]) -> str | None:
    """The tenant an ``export`` or ``backup`` command of ours names, if it is one."""
    if len(args) > 2 and args[0] == str(CLI) and args[1] in ("export", "backup"):
        return args[2]
    return None


def release_lock_command(tenant: str) -> list[str]:
    """Frees a tenant's lock left held by a run the benchmark killed at its time limit
    (its lease would otherwise keep the next run of that tenant waiting for minutes)."""
    return [sys.executable, "-m", "bench.pipeline", "release-lock", tenant]


def _release_lock(tenant: str) -> None:
    from prefect.client.orchestration import get_client  # noqa: PLC0415
    from prefect.exceptions import ObjectNotFound  # noqa: PLC0415

    from flows.locks import lock_name  # noqa: PLC0415

    with get_client(sync_client=True) as client, contextlib.suppress(ObjectNotFound):
        client.delete_global_concurrency_limit_by_name(lock_name(tenant))  # recreated on use


def warm_command() -> list[str]:
    return [sys.executable, "-c", "import " + ", ".join(WARM_IMPORTS)]


def master_key() -> str:
    """A fresh master key (DESIGN §3.2: base64 of 32 bytes) for one benchmark run."""
    import base64  # noqa: PLC0415

    return base64.b64encode(os.urandom(32)).decode()


# -- commands and what they print --------------------------------------------------------------


def export_command(tenant: str) -> list[str]:
    return [str(CLI), "export", tenant, "--json"]


def backup_command(tenant: str) -> list[str]:
    return [str(CLI), "backup", tenant, "--json"]


@dataclass(frozen=True)
class ExportResult:
    files: list[dict[str, Any]]

    @property
    def bytes(self) -> int:
        return sum(int(f.get("bytes") or 0) for f in self.files)

    @property
    def rows(self) -> int:
        return sum(int(f.get("rows") or 0) for f in self.files
                   if str(f.get("path", "")).startswith("data/")
                   and str(f.get("path", "")).endswith(".csv"))

    def summary(self) -> str:
        return f"{len(self.files)} files, {self.bytes / 2**20:.1f} MiB"


def parse_export(stdout: str) -> ExportResult:
    """The ``export --json`` document of DESIGN §3.1."""
    data = json.loads(stdout)
    return ExportResult(list(data.get("files", [])))


def parse_backup(stdout: str) -> dict[str, Any]:
    """The one tenant's row of ``backup --json`` (the nightly summary)."""
    data = json.loads(stdout)
    rows = data if isinstance(data, list) else [data]
    return dict(rows[0]) if rows else {}


# -- the nightly fan-out, in process (``bench.fanout_child``) --------------------------------------


def nightly_parallelism() -> int:
    """How many tenants the nightly flow backs up at once (its task runner's bound)."""
    from flows.backup_flow import nightly_backup  # noqa: PLC0415

    runner = getattr(nightly_backup, "task_runner", None)
    for name in ("max_workers", "_max_workers"):
        value = getattr(runner, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return 4


def run_nightly() -> list[dict[str, Any]]:
    """The nightly flow over every tenant of the platform, as its deployment runs it."""
    from flows.backup_flow import nightly_backup  # noqa: PLC0415
    from flows.context import using  # noqa: PLC0415
    from kernel.settings import Settings  # noqa: PLC0415

    with using(Settings()):
        return list(nightly_backup())


def tenants_of_platform() -> list[str]:
    """Every tenant the platform lists (what the nightly flow would back up)."""
    from flows.context import RunContext  # noqa: PLC0415
    from kernel.settings import Settings  # noqa: PLC0415
    from sources.tenants import all_tenants  # noqa: PLC0415

    ctx = RunContext.open(Settings())
    try:
        with ctx.snapshot() as snap:
            return list(all_tenants(ctx.catalog, snap))
    finally:
        ctx.close()


def backup_alone(tenants: list[str], parallelism: int) -> int:
    """The same per-tenant work as the nightly flow (lock, backup, audit, metrics) without its
    orchestration: the task's plain function on a thread pool of the flow's width. Returns how
    many tenants failed."""
    from concurrent.futures import ThreadPoolExecutor  # noqa: PLC0415

    from flows.backup_flow import backup_one  # noqa: PLC0415
    from flows.context import using  # noqa: PLC0415
    from kernel.settings import Settings  # noqa: PLC0415

    settings = Settings()
    plain = backup_one.fn

    def one(tenant: str) -> bool:
        with using(settings):
            try:
                plain(tenant, settings, "bench")
            except Exception as err:  # noqa: BLE001 - counted and reported, not fatal
                print(f"backup of {tenant} failed: {err}", file=sys.stderr)
                return False
            return True

    with ThreadPoolExecutor(max_workers=parallelism) as pool:
        return sum(1 for ok in pool.map(one, tenants) if not ok)


def warm_in_process() -> None:
    """Costs every process pays once, whichever way it backs up (pyarrow's lazy pandas
    import, the Prefect client's first connection), paid before the clock starts."""
    import pyarrow as pa  # noqa: PLC0415
    from prefect.client.orchestration import get_client  # noqa: PLC0415

    pa.array([0], type=pa.int64())
    with get_client(sync_client=True) as client:
        client.hello()


if __name__ == "__main__":
    if sys.argv[1:2] == ["release-lock"]:
        _release_lock(sys.argv[2])
