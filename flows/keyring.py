"""The key-encryption keys of the backups, resolved from the settings, and the key commands:
``keys rotate`` (a new active data key for a tenant) and ``keys rewrap`` (every key record
wrapped under the current master key, e.g. after moving from one master key to another).

Both run per tenant under the tenant lock (shared with backups, restores and purge), with the
lock's fence checked just before the record is written, and write only over the version of
the record they read (``storage.key_store``): a rotation or rewrap never resurrects a record
that a purge deleted meanwhile.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger

from flows.context import S3Context, current_settings
from flows.locks import tenant_lock
from flows.prune import backed_up_tenants
from kernel.errors import BadInput, ExportError
from kernel.ids import validate_tenant_id
from kernel.settings import Settings
from storage.key_registry import KeyRegistry
from storage.key_store import KeyStore
from storage.keys import wrapper_from_settings
from storage.wrapping import MASTER_KEY_VARIABLE, KeyWrapper


def master_key(settings: Settings) -> KeyWrapper:
    """The key wrapper of ``TENANT_EXPORT_MASTER_KEY`` (refused when unset)."""
    wrapper = wrapper_from_settings(settings)
    if wrapper is None:
        raise BadInput(f"{MASTER_KEY_VARIABLE} is not set: backups are encrypted under it (a "
                       "KMS key: kms:<key id, ARN or alias>; or a local key from `tenant-export "
                       "keygen`, kept in a secret store)")
    return wrapper


def previous_master_key(settings: Settings) -> KeyWrapper | None:
    """The master key being retired (``TENANT_EXPORT_PREVIOUS_MASTER_KEY``), if set."""
    return wrapper_from_settings(settings, previous=True)


# -- plain code --------------------------------------------------------------------------------


def rotate_tenant(ctx: S3Context, wrapper: KeyWrapper, tenant_id: str) -> dict[str, Any]:
    """Add a new active data key to the tenant's record, under the tenant lock."""
    validate_tenant_id(tenant_id)
    settings = ctx.settings
    with (tenant_lock(tenant_id, settings.lock_wait_seconds,
                      control_url=settings.resolved_control_url()) as held,
          KeyRegistry(settings.resolved_control_url()) as registry):
        return KeyStore(ctx.s3, settings.backup_bucket).rotate(wrapper, tenant_id, registry,
                                                               fence=held.check)


def rewrap_tenant(ctx: S3Context, current: KeyWrapper, previous: KeyWrapper | None,
                  tenant_id: str) -> dict[str, Any]:
    """Wrap the tenant's record under ``current``, under the tenant lock."""
    validate_tenant_id(tenant_id)
    settings = ctx.settings
    with (tenant_lock(tenant_id, settings.lock_wait_seconds,
                      control_url=settings.resolved_control_url()) as held,
          KeyRegistry(settings.resolved_control_url()) as registry):
        return KeyStore(ctx.s3, settings.backup_bucket).rewrap(current, previous, tenant_id,
                                                               registry, fence=held.check)


def key_summary(ctx: S3Context, wrappers: list[KeyWrapper], tenant_id: str) -> dict[str, Any]:
    """The tenant's record as an operator may see it (ids, states, times; never a key),
    after it has been opened and authenticated."""
    validate_tenant_id(tenant_id)
    loaded = KeyStore(ctx.s3, ctx.settings.backup_bucket).load(tenant_id, wrappers)
    if loaded is None:
        raise BadInput(f"tenant {tenant_id!r} has no key record (never backed up, or purged)",
                       tenant_id=tenant_id)
    return {**loaded.record.summary(), "active": loaded.keys.active}


# -- flows -----------------------------------------------------------------------------------


@flow(name="rotate_data_key", flow_run_name="rotate-key-{tenant_id}")
def rotate_data_key(tenant_id: str) -> dict[str, Any]:
    """A new active data key for the tenant; older snapshots keep reading with the retired."""
    settings = current_settings()
    return rotate_tenant(S3Context.open(settings), master_key(settings), tenant_id)


@flow(name="rewrap_key_records", flow_run_name="rewrap-keys")
def rewrap_key_records(tenants: list[str] | None = None) -> list[dict[str, Any]]:
    """Rewrap the records of ``tenants`` (default: every tenant with backups) under the current
    master key, reading with the previous one; one tenant failing never stops the others, but
    fails the run once all are done."""
    settings = current_settings()
    current, previous = master_key(settings), previous_master_key(settings)
    ctx = S3Context.open(settings)
    store = KeyStore(ctx.s3, settings.backup_bucket)
    chosen = list(tenants) if tenants else [t for t in backed_up_tenants(ctx)
                                             if store.read(t) is not None]
    results: list[dict[str, Any]] = []
    errors: list[ExportError] = []
    for tenant_id in chosen:
        try:
            results.append(rewrap_tenant(ctx, current, previous, tenant_id))
        except ExportError as err:
            get_run_logger().error("rewrap of %s failed: %s", tenant_id, err)
            results.append({"tenant_id": tenant_id, "status": "failed", "error": str(err)})
            errors.append(err)
    if errors:  # bad input (a named tenant without a record) only when every failure was
        kind = BadInput if all(isinstance(e, BadInput) for e in errors) else ExportError
        raise kind(f"rewrap failed for {len(errors)} of {len(results)} tenants: " + "; ".join(
            f"{r['tenant_id']} ({r['error']})" for r in results if r["status"] == "failed"))
    return results


@flow(name="show_data_keys", flow_run_name="keys-{tenant_id}")
def show_data_keys(tenant_id: str) -> dict[str, Any]:
    """The tenant's data keys (ids, states, times) and the master key that wraps them."""
    settings = current_settings()
    previous = previous_master_key(settings)
    wrappers = [master_key(settings), *([previous] if previous else [])]
    return key_summary(S3Context.open(settings), wrappers, tenant_id)
