"""Offboarding commands: ``offboard``, ``offboard status``, ``hold``, ``hold release``, ``purge``.

``offboard`` and ``hold`` are both commands and groups: a first word that is not a subcommand
is a tenant id, so ``offboard t-42 --contract-end 2026-11-26`` runs ``offboard start t-42 ...``
and ``hold t-42 --reason ...`` runs ``hold set t-42 ...`` (a tenant named like a subcommand is
given with the long form). ``offboard status`` and ``hold`` run no flow: they only read or
write the control database.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from typer.core import TyperGroup

from kernel.errors import BadInput, ExportError
from kernel.ids import validate_tenant_id
from kernel.timeparse import parse_day
from tenant_export.cliapp import JsonOption, app, echo, run

if TYPE_CHECKING:
    from kernel.settings import Settings

TenantArgument = Annotated[str, typer.Argument(help="Tenant id.")]
ByOption = Annotated[str | None, typer.Option("--by", help="Who acts (recorded in the audit "
                                              "trail); default operator:<login>.")]


class _DefaultsTo(TyperGroup):
    """Routes ``GROUP TENANT ...`` to ``GROUP <default> TENANT ...``."""

    default = ""

    # ctx is typer's vendored click Context, which has no public name: hence Any.
    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ("--help", "-h"):
            args = [self.default, *args]
        return super().parse_args(ctx, args)


class _Offboard(_DefaultsTo):
    default = "start"


class _Hold(_DefaultsTo):
    default = "set"


offboard_app = typer.Typer(cls=_Offboard, no_args_is_help=True, help=(
    "Offboarding case: `offboard TENANT --contract-end DATE` starts (or resumes) it; "
    "`offboard status TENANT` shows where it stands."))
hold_app = typer.Typer(cls=_Hold, no_args_is_help=True, help=(
    "Legal hold: `hold TENANT --reason TEXT` refuses purge until `hold release TENANT`."))
app.add_typer(offboard_app, name="offboard")
app.add_typer(hold_app, name="hold")


@offboard_app.command("start")
def offboard_start(
    tenant: TenantArgument,
    contract_end: Annotated[str, typer.Option("--contract-end", help="The day the contract "
                                              "ended (YYYY-MM-DD).")],
    retention_days: Annotated[int | None, typer.Option(
        "--retention-days", min=1, max=3650, help="Days after the contract end before purge; "
        "default TENANT_EXPORT_EXPORT_RETENTION_DAYS.")] = None,
    notice_days: Annotated[int, typer.Option(
        "--notice-days", min=1, max=90, help="The deletion notice goes out this many days "
        "before the purge.")] = 7,
    by: ByOption = None,
    as_json: JsonOption = False,
) -> None:
    """Start (or resume) a case: final backup, export with links, email to the contacts."""

    def body(_settings: Settings) -> dict[str, Any]:
        validate_tenant_id(tenant)
        day = parse_day(contract_end, "--contract-end")
        from flows.offboarding import operator  # noqa: PLC0415 - keeps --help fast
        from flows.offboarding_flow import OffboardingRequest, offboarding  # noqa: PLC0415

        return offboarding(OffboardingRequest(
            tenant_id=tenant, contract_end=day, retention_days=retention_days,
            notice_days=notice_days, requested_by=operator(by)))

    result = run(body)
    if as_json:
        echo(result, True)
        return
    _print_case(result["case"])
    if result["export"]:
        from tenant_export.commands.exports import print_result  # noqa: PLC0415

        typer.echo("")
        print_result(result["export"], False)


@offboard_app.command("status")
def offboard_status(tenant: TenantArgument, as_json: JsonOption = False) -> None:
    """Where the tenant's newest case stands: steps done, next step and date, hold."""

    def body(settings: Settings) -> dict[str, Any]:
        from flows.offboarding import case_status  # noqa: PLC0415
        from storage.cases import CaseStore  # noqa: PLC0415

        with CaseStore(settings.resolved_control_url()) as cases:
            found = cases.cases(validate_tenant_id(tenant))
            if not found:
                hold = cases.hold(tenant)
                held = f" (on legal hold since {hold.since}: {hold.reason})" if hold else ""
                raise BadInput(f"tenant {tenant!r} has no offboarding case{held}",
                               tenant_id=tenant)
            return case_status(cases, found[-1])

    status = run(body, flows=False)
    if as_json:
        echo(status, True)
    else:
        _print_case(status)


def _print_case(status: dict[str, Any]) -> None:
    typer.echo(f"Offboarding case {status['case_id']} of tenant {status['tenant_id']}: "
               f"{status['state']}")
    typer.echo(f"Contract end {status['contract_end']}; retention ends "
               f"{status['retention_ends_at']} ({status['retention_days']} days); deletion "
               f"notice {status['notice_days']} days before")
    for step in status["steps"]:
        facts = " ".join(f"{k}={v}" for k, v in step.items() if k not in ("step", "at", "by"))
        typer.echo(f"  done  {step['step']:<16} {step['at']}  by {step['by']}  {facts}".rstrip())
    upcoming = status["next_step"]
    if upcoming:
        blocked = f" [blocked: {upcoming['blocked_by']}]" if "blocked_by" in upcoming else ""
        typer.echo(f"  next  {upcoming['step']:<16} {upcoming['due_at']}  by "
                   f"{upcoming['by']}{blocked}")
    if status["hold"]:
        hold = status["hold"]
        typer.echo(f"Legal hold since {hold['since']} by {hold['by']}: {hold['reason']}")
    if status["certificate_id"]:
        typer.echo(f"Deletion certificate {status['certificate_id']}")


@hold_app.command("set")
def hold_set(
    tenant: TenantArgument,
    reason: Annotated[str, typer.Option("--reason", help="Why (a court order, a dispute); "
                                        "shown when purge is refused.")],
    by: ByOption = None,
    as_json: JsonOption = False,
) -> None:
    """Put a tenant on legal hold: purge is refused until the hold is released."""

    def body(settings: Settings) -> dict[str, Any]:
        from flows.offboarding import CaseDesk, operator, set_hold  # noqa: PLC0415

        desk = CaseDesk.open(settings)
        try:
            return set_hold(desk, validate_tenant_id(tenant), reason, operator(by))
        finally:
            desk.close()

    echo(run(body, flows=False), as_json)


@hold_app.command("release")
def hold_release(tenant: TenantArgument, by: ByOption = None, as_json: JsonOption = False
                 ) -> None:
    """Release a tenant's legal hold (recorded with who and when)."""

    def body(settings: Settings) -> dict[str, Any]:
        from flows.offboarding import CaseDesk, operator, release_hold  # noqa: PLC0415

        desk = CaseDesk.open(settings)
        try:
            return release_hold(desk, validate_tenant_id(tenant), operator(by))
        finally:
            desk.close()

    echo(run(body, flows=False), as_json)


@app.command()
def purge(
    tenant: TenantArgument,
    confirm: Annotated[bool, typer.Option("--confirm", help="Required: purge cannot be "
                                          "undone.")] = False,
    certificate_out: Annotated[Path | None, typer.Option(
        "--certificate-out", help="Write the signed deletion certificate to this file.")] = None,
    replica_bucket: Annotated[list[str] | None, typer.Option(
        "--replica-bucket", help="A replica of the backup bucket to purge too (repeatable).")
    ] = None,
    by: ByOption = None,
    as_json: JsonOption = False,
) -> None:
    """Delete every export and backup of a tenant, destroy its data key, print the signed
    certificate. A rerun finishes an interrupted purge, or re-issues the same certificate."""

    def check(_settings: Settings) -> None:
        validate_tenant_id(tenant)
        if not confirm:
            raise BadInput("purge deletes every export and backup of the tenant and destroys "
                           "its data key: confirm it with --confirm", tenant_id=tenant)
        if certificate_out is not None and not certificate_out.parent.is_dir():
            raise BadInput(f"--certificate-out: no folder {certificate_out.parent}")

    def body(_settings: Settings) -> dict[str, Any]:
        from flows.offboarding import operator  # noqa: PLC0415
        from flows.offboarding_flow import PurgeRequest, purge_tenant  # noqa: PLC0415

        certificate = purge_tenant(PurgeRequest(
            tenant_id=tenant, confirm=True, replica_buckets=list(replica_bucket or []),
            requested_by=operator(by)))
        if certificate_out is not None:
            _write(certificate_out, certificate)
        return certificate

    certificate = run(body, check=check)
    if as_json:
        from storage.signing import dump_certificate  # noqa: PLC0415

        typer.echo(dump_certificate(certificate).decode("utf-8"), nl=False)
        return
    deleted = certificate["deleted"]
    typer.echo(f"tenant {tenant} purged: {deleted['export_packages']['count']} export "
               f"package(s), {deleted['backup_snapshots']['count']} backup snapshot(s), "
               f"{deleted['backup_blobs']['objects']} blob(s); data key destroyed at "
               f"{deleted['data_keys']['destroyed_at']}")
    where = f", written to {certificate_out}" if certificate_out else ""
    typer.echo(f"deletion certificate {certificate['certificate_id']} issued "
               f"{certificate['issued_at']}, signed by {certificate['key_id']}{where}")


def _write(path: Path, certificate: dict[str, Any]) -> None:
    """Write the file whole or not at all (the purge is done: a rerun writes it again)."""
    from storage.signing import dump_certificate  # noqa: PLC0415

    tmp = path.with_name(f".{path.name}.tmp")
    try:
        tmp.write_bytes(dump_certificate(certificate))
        os.replace(tmp, path)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise ExportError(f"the purge is complete, but the certificate could not be written "
                          f"to {path}: {err.strerror or err}; run the purge again to re-issue "
                          "it", tenant_id=certificate.get("tenant_id")) from err
