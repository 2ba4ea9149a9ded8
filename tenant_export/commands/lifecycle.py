"""Audit trail and deletion certificates: fast commands that run no flow.

``audit`` is both a command (``audit TENANT``) and a group (``audit verify``, ``audit head``):
a first word that is not a subcommand is taken as a tenant id, so ``audit t-42 --json`` runs
``audit show t-42 --json``. A tenant named like a subcommand is listed with ``audit show NAME``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from typer.core import TyperGroup

from kernel.errors import BadInput, VerificationFailed
from tenant_export.cliapp import JsonOption, app, echo, run

if TYPE_CHECKING:
    from kernel.settings import Settings


class _TenantOrSubcommand(TyperGroup):
    """Routes ``audit TENANT ...`` to ``audit show TENANT ...``."""

    # ctx is typer's vendored click Context, which has no public name: hence Any.
    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        first = next((a for a in args if not a.startswith("-")), None)
        if first is not None and first not in self.commands:
            args = ["show", *args]
        return super().parse_args(ctx, args)


audit_app = typer.Typer(cls=_TenantOrSubcommand, no_args_is_help=True,
                        help="Audit trail: `audit TENANT [--json]` lists a tenant's events; "
                        "`audit verify` checks the hash chain.")
certificate_app = typer.Typer(no_args_is_help=True, help="Signed deletion certificates.")
app.add_typer(audit_app, name="audit")
app.add_typer(certificate_app, name="certificate")


@audit_app.command("show")
def audit_show(
    tenant: Annotated[str, typer.Argument(help="Tenant id.")],
    as_json: JsonOption = False,
) -> None:
    """A tenant's events, oldest first (also: `audit TENANT`)."""
    from storage.audit import AuditTrail  # noqa: PLC0415 - keeps --help fast

    def body(settings: Settings) -> None:
        trail = AuditTrail(settings.resolved_control_url())
        try:
            events = trail.events(tenant)
        finally:
            trail.close()
        if as_json:
            echo({"tenant_id": tenant, "events": [e.as_dict() for e in events]}, True)
            return
        for e in events:
            details = json.dumps(e.details, ensure_ascii=False, sort_keys=True)
            typer.echo(f"{e.seq:>6}  {e.recorded_at}  {e.kind:<18} {e.actor}  {details}")
        if not events:
            typer.echo(f"no audit events for tenant {tenant}")

    run(body, flows=False)


@audit_app.command("verify")
def audit_verify(
    anchor: Annotated[list[str] | None, typer.Option(
        "--anchor", help="SEQ:HASH kept outside the control database (from `audit head` or a "
        "certificate's audit_head); repeatable.")] = None,
    as_json: JsonOption = False,
) -> None:
    """Recompute the hash chain: exit 0 if intact, 1 naming the first bad event."""
    from storage.audit import AuditAnchor, AuditTrail  # noqa: PLC0415

    def body(settings: Settings) -> None:
        anchors = [AuditAnchor.parse(a) for a in anchor or []]
        trail = AuditTrail(settings.resolved_control_url())
        try:
            report = trail.verify(anchors)
        finally:
            trail.close()
        if as_json:
            echo(report.as_dict(), True)
            if not report.ok:
                raise typer.Exit(1)
        elif not report.ok:
            raise VerificationFailed(report.line())
        else:
            typer.echo(report.line())

    run(body, flows=False)


@audit_app.command("head")
def audit_head(as_json: JsonOption = False) -> None:
    """The head (event count and last hash) to keep elsewhere as an anchor."""
    from storage.audit import AuditTrail  # noqa: PLC0415

    def body(settings: Settings) -> None:
        trail = AuditTrail(settings.resolved_control_url())
        try:
            head = trail.head()
        finally:
            trail.close()
        echo(head.as_dict() if as_json else {"anchor": head.anchor().text(),
                                              "updated_at": head.updated_at}, as_json)

    run(body, flows=False)


@certificate_app.command("verify")
def certificate_verify(
    file: Annotated[Path, typer.Argument(help="The certificate (JSON).")],
    public_key: Annotated[Path | None, typer.Option(
        "--public-key", help="The published public key (PEM or base64); default: this "
        "installation's key.")] = None,
    as_json: JsonOption = False,
) -> None:
    """Check a deletion certificate offline: exit 0 if valid, 1 with the reason if not."""
    from storage import signing  # noqa: PLC0415

    def body(settings: Settings) -> None:
        data = _read(file, "certificate")
        key = (signing.load_public_key(_read(public_key, "public key")) if public_key
               else signing.local_public_key(settings))
        if key is None:
            raise BadInput("no signing key in this installation: pass --public-key FILE")
        doc = signing.parse_certificate(data)
        signing.verify_certificate(doc, key)
        result: dict[str, Any] = {"valid": True, "key_id": doc["key_id"],
                                  "tenant_id": doc.get("tenant_id"),
                                  "issued_at": doc.get("issued_at")}
        if as_json:
            echo(result, True)
        else:
            typer.echo(f"valid: deletion certificate of tenant {doc.get('tenant_id')} issued "
                       f"{doc.get('issued_at')}, signed by key {doc['key_id']}")

    run(body, flows=False)


@certificate_app.command("public-key")
def certificate_public_key(as_json: JsonOption = False) -> None:
    """Print the public key to publish (PEM); creates the local key on first use."""
    from storage import signing  # noqa: PLC0415

    def body(settings: Settings) -> None:
        public = signing.signing_key_from_settings(settings).public_key()
        if as_json:
            echo({"key_id": signing.key_id(public), "public_key_pem": signing.public_key_pem(
                public), "public_key_base64": signing.public_key_base64(public)}, True)
        else:
            typer.echo(signing.public_key_pem(public), nl=False)

    run(body, flows=False)


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as err:
        raise BadInput(f"cannot read the {what} {path}: {err.strerror or err}") from None
