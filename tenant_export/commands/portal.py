"""``portal``: serve the client self-service portal; issue, list and revoke contact tokens.

Token commands run no flow and answer at once. A token is printed once, at issue, and stored
only as a hash; issuing and revoking are recorded in the tenant's audit trail.
"""

from __future__ import annotations

import getpass
import json
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any

import typer

from kernel.errors import BadInput
from kernel.ids import validate_tenant_id
from kernel.timeparse import parse_duration, shown
from tenant_export.cliapp import JsonOption, PortOption, app, run

if TYPE_CHECKING:
    from kernel.settings import Settings
    from storage.tokens import TokenInfo

portal_app = typer.Typer(invoke_without_command=True,
                         help="Client self-service portal: `portal [--port N]` serves the web "
                         "page and API; `portal token ...` manages contact tokens.")
token_app = typer.Typer(no_args_is_help=True, help="Contact tokens: issue, list, revoke.")
portal_app.add_typer(token_app, name="token")
app.add_typer(portal_app, name="portal")

DEFAULT_TOKEN_TTL = "90d"  # noqa: S105 - a lifetime, not a secret


@portal_app.callback()
def portal(ctx: typer.Context, port: PortOption = 8000) -> None:
    """Serve the portal (web page, API, /openapi.json) until Ctrl-C."""
    if ctx.invoked_subcommand is not None:
        return

    def body(settings: Settings) -> None:
        import uvicorn  # noqa: PLC0415 - only when serving

        from portal.app import create_app  # noqa: PLC0415
        from portal.config import PortalSettings  # noqa: PLC0415

        config = PortalSettings()
        web = create_app(settings, config)
        starter = web.state.portal.starter.name
        typer.echo(f"portal: http://{config.host}:{port}/ (API under /v1, schema at "
                   f"/openapi.json); exports run {starter}; Ctrl-C stops it", err=True)
        uvicorn.run(web, host=config.host, port=port, proxy_headers=True,
                    forwarded_allow_ips=config.forwarded_allow_ips, server_header=False,
                    log_level="info")

    run(body)


def _ttl_seconds(text: str) -> int:
    from storage.tokens import MAX_TOKEN_TTL_SECONDS  # noqa: PLC0415

    seconds = parse_duration(text)
    if seconds > MAX_TOKEN_TTL_SECONDS:
        raise BadInput(f"token lifetime {shown(text)}: at most "
                       f"{MAX_TOKEN_TTL_SECONDS // 86400} days")
    return seconds


def _actor() -> str:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no login name in a bare container
        return "operator"
    return f"operator {user}" if user.isprintable() and len(user) < 100 else "operator"


def _audit(settings: Settings, kind: str, tenant_id: str, **details: Any) -> None:
    from storage.audit import AuditTrail  # noqa: PLC0415

    trail = AuditTrail(settings.resolved_control_url())
    try:
        trail.record(kind, tenant_id, _actor(), **details)
    finally:
        trail.close()


def _stored_tenant(settings: Settings, tenant: str) -> str:
    """The tenant's id as the platform stores it; ``UnknownTenant`` (exit 2) otherwise."""
    from flows.context import RunContext  # noqa: PLC0415 - reads the platform database

    ctx = RunContext.open(settings)
    try:
        return ctx.check_tenant(tenant).id
    finally:
        ctx.close()


@token_app.command("issue")
def token_issue(
    tenant: Annotated[str, typer.Argument(help="Tenant id.")],
    contact: Annotated[str, typer.Option("--contact", help="The contact's email address "
                                         "(a tenant has at most two authorised contacts).")],
    ttl: Annotated[str, typer.Option("--ttl", help="Lifetime: seconds or 15m/12h/30d, at "
                                     "most 366d.")] = DEFAULT_TOKEN_TTL,
    as_json: JsonOption = False,
) -> None:
    """Issue a token for one contact of a tenant; it is printed once, stored only as a hash."""
    from storage.tokens import TokenStore, check_contact  # noqa: PLC0415

    def check(_settings: Settings) -> None:
        validate_tenant_id(tenant)
        check_contact(contact)
        _ttl_seconds(ttl)

    def body(settings: Settings) -> dict[str, Any]:
        stored = _stored_tenant(settings, tenant)
        store = TokenStore(settings.resolved_control_url())
        try:
            issued = store.issue(stored, contact, _ttl_seconds(ttl))
            try:
                _audit(settings, "portal.token.issued", stored, token_id=issued.info.token_id,
                       contact=issued.info.contact, expires_at=issued.info.expires_at)
            except BaseException:
                store.revoke(issued.info.token_id)  # unrecorded, so not handed out
                raise
        finally:
            store.close()
        return {**_fields(issued.info), "token": issued.token}

    result = run(body, flows=False, check=check)
    if as_json:
        typer.echo(json.dumps(result, indent=2))
        return
    typer.echo(f"Token {result['token_id']} for {result['contact']} of tenant "
               f"{result['tenant_id']}, valid until {result['expires_at']}:\n\n"
               f"  {result['token']}\n\nIt is shown this once (only its hash is kept). Send it "
               "to the contact by a channel you trust; revoke it with `tenant-export portal "
               f"token revoke {result['token_id']}`.")


@token_app.command("revoke")
def token_revoke(
    token_id: Annotated[str, typer.Argument(help="Token id, as `portal token list` shows.")],
    as_json: JsonOption = False,
) -> None:
    """Revoke a token at once; sessions signed in with it end too."""
    from storage.tokens import TokenStore, check_token_id  # noqa: PLC0415

    def body(settings: Settings) -> dict[str, Any]:
        store = TokenStore(settings.resolved_control_url())
        try:
            info = store.revoke(token_id)
        finally:
            store.close()
        _audit(settings, "portal.token.revoked", info.tenant_id, token_id=info.token_id,
               contact=info.contact)
        return _fields(info)

    result = run(body, flows=False, check=lambda _settings: check_token_id(token_id))
    if as_json:
        typer.echo(json.dumps(result, indent=2))
    else:
        typer.echo(f"Token {result['token_id']} of {result['contact']} (tenant "
                   f"{result['tenant_id']}) revoked at {result['revoked_at']}.")


@token_app.command("list")
def token_list(
    tenant: Annotated[str, typer.Argument(help="Tenant id.")],
    as_json: JsonOption = False,
) -> None:
    """A tenant's tokens (never the tokens themselves): contact, state, dates."""
    from storage.tokens import TokenStore  # noqa: PLC0415

    def body(settings: Settings) -> list[dict[str, Any]]:
        store = TokenStore(settings.resolved_control_url())
        try:
            return [_fields(info) for info in store.tokens(tenant)]
        finally:
            store.close()

    tokens = run(body, flows=False, check=lambda _settings: validate_tenant_id(tenant))
    if as_json:
        typer.echo(json.dumps({"tenant_id": tenant, "tokens": tokens}, indent=2))
        return
    if not tokens:
        typer.echo(f"no portal tokens for tenant {tenant}")
    for t in tokens:
        typer.echo(f"{t['token_id']}  {t['state']:<8} {t['contact']}  created {t['created_at']}"
                   f"  expires {t['expires_at']}  last used {t['last_used_at'] or 'never'}")


def _fields(info: TokenInfo) -> dict[str, Any]:
    return info.as_dict(datetime.now(UTC))
