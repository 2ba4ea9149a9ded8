"""The process work pool and the deployments on it, created or updated idempotently.

Deploying again (every ``make serve``) updates descriptions, forms and schedules in place. The
server keeps a deployment's past-due runs across such updates (it deletes only future
auto-scheduled runs and re-creates them), so a night that went by without a worker stays
visible as Late and is run once a worker polls again.
"""

from __future__ import annotations

from typing import Any, cast
from uuid import UUID

from deployments.definitions import DEPLOYMENTS, WORK_POOL, DeploymentSpec, build_deployments


def ensure_process_pool(name: str = WORK_POOL) -> UUID:
    """The id of the work pool ``name``, created as a process pool when missing.

    An existing pool is left as the operator configured it (its type, concurrency limit and
    job template), so the same code deploys to a Docker or Kubernetes pool created by hand.
    """
    from prefect.client.orchestration import get_client  # noqa: PLC0415 - Prefect at run time
    from prefect.client.schemas.actions import WorkPoolCreate  # noqa: PLC0415
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound  # noqa: PLC0415
    from prefect.workers.process import ProcessWorker  # noqa: PLC0415

    with get_client(sync_client=True) as client:
        try:
            return client.read_work_pool(name).id
        except ObjectNotFound:
            pass
        template = ProcessWorker.get_default_base_job_template()
        try:
            return client.create_work_pool(WorkPoolCreate(
                name=name, type="process", base_job_template=template,
                description="tenant-export flows run as local processes by "
                "`python -m deployments.worker` (one or more per machine).")).id
        except ObjectAlreadyExists:  # another `make serve` created it just now
            return client.read_work_pool(name).id


def deploy_all(work_pool: str = WORK_POOL, specs: tuple[DeploymentSpec, ...] = DEPLOYMENTS,
               job_variables: dict[str, Any] | None = None) -> dict[str, UUID]:
    """Create or update every deployment on ``work_pool``; ids by deployment name."""
    # ``apply`` is sync outside an event loop (Prefect's async_dispatch types it as both).
    return {deployment.name: cast(UUID, deployment.apply(work_pool_name=work_pool))
            for deployment in build_deployments(work_pool, specs, job_variables)}


def pool_exists(name: str) -> bool:
    """Whether the work pool ``name`` exists on the configured server."""
    from prefect.client.orchestration import get_client  # noqa: PLC0415
    from prefect.exceptions import ObjectNotFound  # noqa: PLC0415

    with get_client(sync_client=True) as client:
        try:
            client.read_work_pool(name)
        except ObjectNotFound:
            return False
        return True
