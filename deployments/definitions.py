"""Every deployment, declared once: what the UI lists, when it runs, how many runs at a time.

The declarations are data (no Prefect import here), so docs, tests and tools read them cheaply;
:func:`build_deployments` turns them into Prefect ``RunnerDeployment`` objects. Entrypoints are
module paths (``flows.export_flow.offboarding_export``): a worker imports the installed package
instead of downloading code, which is what a process pool on this machine and a Docker or
Kubernetes image with the package installed both need.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from prefect.deployments.runner import RunnerDeployment

# Nightly backups at 03:30 Berlin time: after the 02:00-03:00 hour that the DST switches skip
# or repeat, so the run happens exactly once every night. Retention follows at 05:30.
NIGHTLY_BACKUP_CRON = "30 3 * * *"
PRUNE_CRON = "30 5 * * *"
# After the night's backups and prune: packages whose retention ended, then offboarding cases.
EXPORT_RETENTION_CRON = "0 6 * * *"
OFFBOARDING_SWEEP_CRON = "0 7 * * *"
TIMEZONE = "Europe/Berlin"
TAGS = ("tenant-export",)
WORK_POOL = "tenant-export"
"""The process work pool ``make serve`` creates; other pool types are named by the operator."""


@dataclass(frozen=True)
class Concurrency:
    """A deployment-wide limit: it covers every run of the deployment, never one tenant (the
    per-tenant lock does that), so it is only for jobs that span the whole platform."""

    limit: int
    collision: Literal["ENQUEUE", "CANCEL_NEW"] = "ENQUEUE"


@dataclass(frozen=True)
class DeploymentSpec:
    """One deployment as operators see it in the UI."""

    name: str
    flow: str
    """``module:attribute`` of the flow object."""
    description: str
    cron: str | None = None
    concurrency: Concurrency | None = None
    tags: tuple[str, ...] = ()
    rerun_on_crash: bool = True
    """Whether a crashed run is run again automatically (``flows.crash_rerun``): only where
    a second run with the same parameters finishes the work instead of doing it twice."""

    @property
    def module(self) -> str:
        """The module that defines the flow."""
        return self.flow.partition(":")[0]

    @property
    def attribute(self) -> str:
        """The flow object's name in its module."""
        return self.flow.partition(":")[2]


ONE_AT_A_TIME = Concurrency(limit=1, collision="ENQUEUE")

DEPLOYMENTS: tuple[DeploymentSpec, ...] = (
    DeploymentSpec(
        "offboarding-export", "flows.export_flow:offboarding_export",
        "Self-service offboarding export of one tenant (terms 14.3): every table as CSV and "
        "the uploaded documents as ZIP, verified, with expiring signed links. Runs for "
        "different tenants run in parallel; one tenant's exports and backups take turns.",
        tags=("export",),
    ),
    DeploymentSpec(
        "export-links", "flows.export_flow:export_links",
        "Fresh signed links for a retained export of one tenant (the newest when no export id "
        "is given).", tags=("export",),
    ),
    DeploymentSpec(
        "assisted-migration", "flows.migration_flow:assisted_migration",
        "Assisted migration case (terms 14.2): waits for the operator's input (time, "
        "bookings, automated steps) until closed, then produces the statement.",
        tags=("migration",), rerun_on_crash=False,  # a re-run would open a second case
    ),
    DeploymentSpec(
        "nightly-backup", "flows.backup_flow:nightly_backup",
        "Encrypted, verified backup of every tenant (terms 2.2), every night at 03:30 "
        "Europe/Berlin. A night missed while no worker ran shows as Late and is run when a "
        "worker returns; Failed, Crashed or Late runs raise the alert.",
        cron=NIGHTLY_BACKUP_CRON, concurrency=ONE_AT_A_TIME, tags=("backup",),
    ),
    DeploymentSpec(
        "nightly-backup-shard", "flows.backup_flow:nightly_backup",
        "One shard (a list of tenants) of a nightly backup that fans out across workers "
        "(nightly-backup with shards > 1 starts these and waits for them). Not scheduled and "
        "without the one-at-a-time limit, which the waiting night holds; each tenant is "
        "backed up under its own lock.", tags=("backup",),
        rerun_on_crash=False,  # the waiting night re-submits a crashed shard itself
    ),
    DeploymentSpec(
        "prune-backups", "flows.backup_flow:prune_backups",
        "Backup retention (daily/weekly/monthly), every night at 05:30 Europe/Berlin, after "
        "the nightly backup.", cron=PRUNE_CRON, concurrency=ONE_AT_A_TIME, tags=("backup",),
    ),
    DeploymentSpec(
        "verify-backup", "flows.restore_flow:verify_backup",
        "Decrypt and check every object of one tenant's snapshot (the newest by default).",
        tags=("backup",),
    ),
    DeploymentSpec(
        "restore-backup", "flows.restore_flow:restore_backup",
        "Restore one tenant's snapshot into an empty database (and its documents into a "
        "bucket), or, with \"Into the platform's schema (rows only)\", into a schema the "
        "platform's migrations created; the target names a database without carrying its "
        "password.",
        tags=("backup",), rerun_on_crash=False,  # its target is no longer empty
    ),
    DeploymentSpec(
        "restore-in-place", "flows.restore_flow:restore_in_place",
        "Put one tenant of the live platform back to a snapshot: rows created since are "
        "removed, documents rewritten where missing or different; needs \"Yes, replace the "
        "tenant's live data\" ticked; holds the tenant lock.", tags=("backup",),
    ),
    DeploymentSpec(
        "offboarding", "flows.offboarding_flow:offboarding",
        "Start (or resume) the offboarding case of a departing tenant at contract end: final "
        "backup, self-service export, notice to the authorised contacts; the retention window "
        "and purge follow by schedule (offboarding-sweeper).", tags=("offboarding",),
    ),
    DeploymentSpec(
        "offboarding-sweeper", "flows.offboarding_flow:offboarding_sweeper",
        "Every day at 07:00 Europe/Berlin: sends deletion notices and purges the offboarded "
        "tenants whose retention ended (never a tenant under legal hold).",
        cron=OFFBOARDING_SWEEP_CRON, concurrency=ONE_AT_A_TIME, tags=("offboarding",),
    ),
    DeploymentSpec(
        "export-retention", "flows.offboarding_flow:export_retention",
        "Every day at 06:00 Europe/Berlin: deletes export packages whose retention ended (and "
        "unfinished export folders older than a day).",
        cron=EXPORT_RETENTION_CRON, concurrency=ONE_AT_A_TIME, tags=("export",),
    ),
    DeploymentSpec(
        "purge-tenant", "flows.offboarding_flow:purge_tenant",
        "Purge one tenant (refused under legal hold): every export, backup and data key "
        "version, then a signed deletion certificate. Normally run by the sweeper.",
        tags=("offboarding",),
    ),
    DeploymentSpec(
        "crash-rerun", "flows.crash_rerun:rerun_crashed",
        "Runs a crashed flow run again with the same parameters (started by the automation "
        "'re-run crashed flow runs'): never a run an operator cancelled, at most "
        "TENANT_EXPORT_CRASH_RERUNS times (default 1) per original run; the new run is "
        "tagged rerun-of:<crashed run id>.", tags=("maintenance",),
        rerun_on_crash=False,  # never re-run the re-runner
    ),
)


def spec(name: str) -> DeploymentSpec:
    """The declaration of one deployment, by its name."""
    for declared in DEPLOYMENTS:
        if declared.name == name:
            return declared
    raise KeyError(name)


def load_flow(declared: DeploymentSpec) -> Any:
    """The flow object a declaration names (imports the flows, hence Prefect)."""
    return getattr(importlib.import_module(declared.module), declared.attribute)


def build_deployments(work_pool: str | None = WORK_POOL,
                      specs: tuple[DeploymentSpec, ...] = DEPLOYMENTS,
                      job_variables: dict[str, Any] | None = None) -> list[RunnerDeployment]:
    """Prefect deployments for ``specs``, bound to ``work_pool`` (``None``: for ``serve``);
    ``job_variables`` override the pool's job template (``{"image": ...}`` on Docker or
    Kubernetes pools)."""
    from prefect.client.schemas.objects import (  # noqa: PLC0415 - Prefect only when deploying
        ConcurrencyLimitConfig,
        ConcurrencyLimitStrategy,
    )
    from prefect.schedules import Cron  # noqa: PLC0415
    from prefect.types.entrypoint import EntrypointType  # noqa: PLC0415

    built: list[RunnerDeployment] = []
    for declared in specs:
        options: dict[str, Any] = {}
        if declared.cron:
            options["schedules"] = [Cron(declared.cron, timezone=TIMEZONE)]
        if declared.concurrency:
            options["concurrency_limit"] = ConcurrencyLimitConfig(
                limit=declared.concurrency.limit,
                collision_strategy=ConcurrencyLimitStrategy(declared.concurrency.collision))
        if work_pool:
            options["work_pool_name"] = work_pool
            if job_variables:
                options["job_variables"] = dict(job_variables)
        deployment: RunnerDeployment = load_flow(declared).to_deployment(
            name=declared.name, description=declared.description,
            tags=[*TAGS, *declared.tags], entrypoint_type=EntrypointType.MODULE_PATH,
            **options)
        built.append(deployment)
    return built
