"""Operating commands: demo, serve, doctor."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated

import typer

from kernel.errors import BadInput
from tenant_export.cliapp import JsonOption, PortOption, app, run

if TYPE_CHECKING:
    from kernel.settings import Settings


@app.command()
def demo(
    tenant: Annotated[str, typer.Option(help="Demo tenant to export.")] = "harbour-rowing",
) -> None:
    """The whole pipeline on embedded defaults (demo SQLite + local S3), with a summary."""
    from tenant_export.demo import run_demo  # noqa: PLC0415

    def check(_settings: Settings) -> None:
        from tenant_export.demo_data import TENANTS  # noqa: PLC0415

        known = [row[0] for row in TENANTS]
        if tenant not in known:  # refused before the demo builds anything
            raise BadInput(f"unknown demo tenant {tenant!r}: choose one of {', '.join(known)}")

    run(lambda settings: run_demo(settings, tenant), check=check)


@app.command()
def serve(
    port: PortOption = 4200,
    metrics_port: Annotated[int | None, typer.Option(
        "--metrics-port", min=1, max=65535,
        help="Serve Prometheus metrics on this port beside the worker.")] = None,
) -> None:
    """Start a Prefect server (unless PREFECT_API_URL is set), deploy every flow to a process
    work pool and run one worker; on embedded defaults, a local S3 emulator and demo platform."""
    from deployments.serve import serve_all  # noqa: PLC0415
    from tenant_export.embedded import embedded_environment  # noqa: PLC0415

    def body(settings: Settings) -> None:
        with embedded_environment(settings) as env:
            serve_all(port, worker_env=env, metrics_port=metrics_port)

    run(body)


@app.command()
def doctor(as_json: JsonOption = False) -> None:
    """Check every piece of the configuration (database, buckets, key, control DB, Prefect)."""
    from deployments.doctor import run_checks  # noqa: PLC0415

    def body(settings: Settings) -> list[dict[str, object]]:
        checks = run_checks(settings)
        if as_json:
            typer.echo(json.dumps([c.as_dict() for c in checks], indent=2))
        else:
            for check in checks:
                typer.echo(check.line())
        if any(c.required and not c.ok for c in checks):
            raise typer.Exit(1)
        return [c.as_dict() for c in checks]

    run(body, flows=False)
