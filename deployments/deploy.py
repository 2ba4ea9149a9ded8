"""``python -m deployments.deploy``: the deployments and alerts on the server of
``PREFECT_API_URL``, for a production server where ``make serve`` is not used.

``--pool`` names the work pool (default ``tenant-export``, a process pool created if missing).
A Docker or Kubernetes pool is created by the operator (``prefect work-pool create NAME --type
kubernetes``) and its image given here (``--image``) or in the pool's job template: the flows
run from the package installed in that image (module entrypoints, no code download).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from uuid import UUID

from deployments import automations
from deployments.definitions import DEPLOYMENTS, WORK_POOL
from deployments.pool import deploy_all, ensure_process_pool, pool_exists
from kernel.errors import BadInput, ExportError


@dataclass(frozen=True)
class Provisioned:
    """What is on the server now: ids by name."""

    deployments: dict[str, UUID]
    automations: dict[str, UUID]


def deploy(pool: str = WORK_POOL, image: str | None = None,
           target: automations.AlertTarget | None = None) -> Provisioned:
    """Pool (a process pool when missing and no image), deployments, automations; idempotent.

    Raises:
        BadInput: an image was given for a pool that does not exist (its type is unknown), or
            ``TENANT_EXPORT_CRASH_RERUNS`` is not 0 to 5.
    """
    from flows.crash_rerun import reruns_from  # noqa: PLC0415 - imports Prefect

    reruns = reruns_from(os.environ)
    if image and not pool_exists(pool):
        raise BadInput(f"work pool {pool!r} does not exist: create it with its type first "
                       f"(`prefect work-pool create {pool} --type kubernetes`, or docker)")
    if not image:
        ensure_process_pool(pool)
    ids = deploy_all(pool, DEPLOYMENTS, {"image": image} if image else None)
    alerts = automations.install(ids, target or automations.AlertTarget(), reruns)
    return Provisioned(ids, alerts)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m deployments.deploy``."""
    parser = argparse.ArgumentParser(prog="python -m deployments.deploy", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pool", default=WORK_POOL, help="work pool (default tenant-export)")
    parser.add_argument("--image", help="container image of a Docker or Kubernetes pool")
    args = parser.parse_args(argv)
    try:
        if not os.environ.get("PREFECT_API_URL"):
            raise BadInput("PREFECT_API_URL is not set: it names the server to deploy to")
        result = deploy(args.pool, args.image,
                        automations.AlertTarget.from_environ(os.environ))
    except BadInput as err:
        print(f"deploy: error: {err}", file=sys.stderr)
        return 2
    except ExportError as err:
        print(f"deploy: error: {err}", file=sys.stderr)
        return 1
    for name in result.deployments:
        print(f"deployed {name} on work pool {args.pool!r}")
    print(f"{len(result.automations)} automations up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
