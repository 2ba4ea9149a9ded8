"""Purge and export retention in plain code: every version of a tenant's objects goes, then its
data key, then a signed deletion certificate is issued.

Purge order (``docs/offboarding.md``, "Purge"), each point recorded in the control database so
a crash anywhere and a rerun end in the same state with one certificate:

1. refuse under legal hold (``BadInput``, nothing written); record the purge (``purges``);
2. abort open multipart uploads and take the **inventory**: every object version and delete
   marker under ``exports/<t>/``, ``migrations/<t>/`` and ``backups/<t>/`` (in the backup
   bucket and any replica), one row each, added once: a rerun adds only what is new, so the
   certificate counts each version exactly once, however often the purge was interrupted;
3. delete every version: commit markers first (``datapackage.json``, ``manifest.json``, so
   nothing half-deleted looks complete), then the rest, except the data-key record;
4. destroy the data key: every version of ``backups/<t>/keys/`` in every backup bucket (a copy
   of the tenant's backups anywhere is unreadable from then on);
5. check that nothing of the tenant is left, then build the certificate document once (stored
   unsigned, re-signed identically by Ed25519 on every rerun).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from flows.offboarding import CaseDesk, check_actor, open_case_of, purge_at
from kernel.errors import BadInput, StorageError, TenantBusy, VerificationFailed
from kernel.ids import new_case_id, validate_export_id, validate_tenant_id
from kernel.s3errors import raise_storage
from storage import objects
from storage.audit import AuditKind
from storage.cases import Case, ObjectVersion, Purge, iso
from storage.registry import SnapshotRegistry
from storage.signing import sign_certificate

COMMIT_MARKERS = ("/datapackage.json", "/manifest.json")
KEYS_FOLDER = "keys"
INCOMPLETE_AFTER = timedelta(days=1)
NOT_DELETED = ("not touched: deleting the tenant's rows in the platform database is the "
               "platform's own job")


def checkpoint(name: str) -> None:
    """A named point of the purge order; tests replace this to kill the process there."""


@dataclass(frozen=True)
class Target:
    """One prefix of the tenant in one bucket."""

    bucket: str
    prefix: str
    role: str  # exports | migrations | backups

    def uri(self) -> str:
        """Where, for the certificate."""
        return f"s3://{self.bucket}/{self.prefix}"


@dataclass(frozen=True)
class PurgeOutcome:
    """The signed certificate, and whether this run issued it (False: a rerun re-signed it)."""

    certificate: dict[str, Any]
    issued_now: bool


def targets(desk: CaseDesk, tenant_id: str, replica_buckets: tuple[str, ...] = ()
            ) -> list[Target]:
    """Every prefix holding something of the tenant (backups last: the key lives there)."""
    exports = desk.settings.export_bucket
    backups = dict.fromkeys([desk.settings.backup_bucket, *replica_buckets])
    return [Target(exports, f"exports/{tenant_id}/", "exports"),
            Target(exports, f"migrations/{tenant_id}/", "migrations"),
            *(Target(bucket, f"backups/{tenant_id}/", "backups") for bucket in backups)]


def _outside_keys(target: Target, key: str) -> bool:
    """Everything but the data-key record, which goes last."""
    return _classify(target, key)[0] != "data_keys"


def _classify(target: Target, key: str) -> tuple[str, str]:
    """(category, unit): the unit is what ``count`` counts (a snapshot, an export package)."""
    parts = key[len(target.prefix):].split("/")
    if target.role == "exports":
        return "export_packages", parts[0]
    if target.role == "migrations":
        return "migration_statements", parts[0]
    kinds = {"snapshots": "backup_snapshots", "blobs": "backup_blobs", KEYS_FOLDER: "data_keys"}
    category = kinds.get(parts[0], "backup_other")
    unit = parts[1] if category == "backup_snapshots" and len(parts) > 1 else parts[0]
    return category, unit


# -- object versions -------------------------------------------------------------------------


def versions(s3: Any, bucket: str, prefix: str, tenant_id: str) -> Iterator[list[dict[str, Any]]]:
    """Pages of every version and delete marker under ``prefix`` (an unversioned bucket lists
    each object once, as version ``null``)."""
    try:
        pages = s3.get_paginator("list_object_versions").paginate(Bucket=bucket, Prefix=prefix)
        for page in pages:
            found = [{**v, "marker": False} for v in page.get("Versions", [])]
            found += [{**m, "Size": 0, "marker": True} for m in page.get("DeleteMarkers", [])]
            yield found
    except (ClientError, BotoCoreError) as err:
        raise_storage(err, f"listing versions under {prefix!r} in {bucket!r}", tenant_id)


def delete_versions(s3: Any, bucket: str, prefix: str, tenant_id: str,
                    pick: Callable[[str], bool] = lambda _key: True) -> int:
    """Delete every version (and delete marker) under ``prefix`` whose key ``pick`` accepts,
    1000 per request; returns how many were deleted."""
    deleted = 0
    for page in versions(s3, bucket, prefix, tenant_id):
        batch = [{"Key": v["Key"], "VersionId": v["VersionId"]} for v in page if pick(v["Key"])]
        if not batch:
            continue
        try:
            response = s3.delete_objects(Bucket=bucket, Delete={"Objects": batch, "Quiet": True})
        except (ClientError, BotoCoreError) as err:
            raise_storage(err, f"deleting versions under {prefix!r} in {bucket!r}", tenant_id)
        if response.get("Errors"):
            first = response["Errors"][0]
            raise StorageError(f"deleting under {prefix!r} in {bucket!r}: "
                               f"{len(response['Errors'])} versions not deleted, e.g. "
                               f"{first.get('Key')!r}: {first.get('Code')} (Object Lock?)",
                               tenant_id=tenant_id)
        deleted += len(batch)
    return deleted


def _open_uploads(s3: Any, bucket: str, prefix: str, tenant_id: str) -> list[tuple[str, str]]:
    """Key and upload id of every multipart upload left open under ``prefix``."""
    try:
        pages = s3.get_paginator("list_multipart_uploads").paginate(Bucket=bucket, Prefix=prefix)
        return [(u["Key"], u["UploadId"]) for page in pages for u in page.get("Uploads", [])]
    except (ClientError, BotoCoreError) as err:
        raise_storage(err, f"listing uploads under {prefix!r} in {bucket!r}", tenant_id)


def _stored(s3: Any, target: Target, tenant_id: str) -> bool:
    """Whether anything at all (a version, a marker, an open upload) is under the target."""
    try:
        found = s3.list_object_versions(Bucket=target.bucket, Prefix=target.prefix, MaxKeys=1)
    except (ClientError, BotoCoreError) as err:
        raise_storage(err, f"listing versions under {target.prefix!r} in {target.bucket!r}",
                      tenant_id)
    return bool(found.get("Versions") or found.get("DeleteMarkers")) or bool(
        objects.count_uploads(s3, target.bucket, target.prefix, tenant_id))


def _left(s3: Any, target: Target, tenant_id: str) -> int:
    """Versions and open uploads still under the target."""
    found = sum(len(page) for page in versions(s3, target.bucket, target.prefix, tenant_id))
    return found + objects.count_uploads(s3, target.bucket, target.prefix, tenant_id)


# -- purge -----------------------------------------------------------------------------------


def purge_tenant(desk: CaseDesk, s3: Any, key: Ed25519PrivateKey, tenant_id: str, actor: str, *,
                 replica_buckets: tuple[str, ...] = (),
                 fence: Callable[[], None] | None = None) -> PurgeOutcome:
    """Delete everything the pipeline holds of the tenant and issue the certificate.

    ``fence``: the tenant lock's check, called before deleting and before destroying the key.

    Raises:
        BadInput: the tenant is on legal hold, or nothing of it exists (a mistyped id).
        VerificationFailed: something of the tenant is still there after the purge (written
            meanwhile by a process without the lock): run the purge again.
    """
    validate_tenant_id(tenant_id)
    check_actor(actor)
    hold = desk.cases.hold(tenant_id)
    if hold is not None:
        raise BadInput(f"purge of tenant {tenant_id!r} refused: it is on legal hold since "
                       f"{hold.since} (set by {hold.by}): {hold.reason}. Release the hold "
                       f"first (tenant-export hold release {tenant_id})", tenant_id=tenant_id)
    where = targets(desk, tenant_id, replica_buckets)
    purge = _resume_or_start(desk, s3, key, tenant_id, actor, where)
    if isinstance(purge, PurgeOutcome):
        return purge
    checkpoint("started")
    if fence is not None:
        fence()
    _inventory(desk, s3, purge, where)
    checkpoint("inventoried")
    for target in where:  # commit markers first: nothing half-deleted looks complete
        delete_versions(s3, target.bucket, target.prefix, tenant_id,
                        lambda k: k.endswith(COMMIT_MARKERS))
        delete_versions(s3, target.bucket, target.prefix, tenant_id,
                        partial(_outside_keys, target))
    with SnapshotRegistry(desk.settings.resolved_control_url()) as registry:
        registry.record_forgotten(tenant_id, desk.cases.inventory_units(purge.purge_id,
                                                                        "backup_snapshots"))
    desk.cases.record_purge_step(purge, "objects_deleted", desk.now())
    checkpoint("objects-deleted")
    if fence is not None:
        fence()
    for target in where:
        if target.role == "backups":
            delete_versions(s3, target.bucket, f"{target.prefix}{KEYS_FOLDER}/", tenant_id)
    desk.cases.record_purge_step(purge, "key_destroyed", desk.now())
    checkpoint("key-destroyed")
    left = {t.uri(): n for t in where if (n := _left(s3, t, tenant_id))}
    if left:
        raise VerificationFailed(f"purge of tenant {tenant_id!r} incomplete: still stored "
                                 f"{left}; run the purge again", tenant_id=tenant_id)
    return _certify(desk, key, purge, where, actor)


def _resume_or_start(desk: CaseDesk, s3: Any, key: Ed25519PrivateKey, tenant_id: str,
                     actor: str, where: list[Target]) -> Purge | PurgeOutcome:
    """The unfinished purge to resume; the finished one's certificate when nothing came back
    since; else a new purge (refused when nothing at all is known of the tenant)."""
    history = desk.cases.purges(tenant_id)
    last = desk.cases.certificate_document(history[-1].purge_id) if history else None
    if history and last is None:
        return history[-1]
    stored = any(_stored(s3, t, tenant_id) for t in where)
    if last is not None and not stored:
        return PurgeOutcome(sign_certificate(key, last), False)
    case = open_case_of(desk.cases, tenant_id)
    if not history and case is None and not stored:
        raise BadInput(f"nothing is stored for tenant {tenant_id!r} and it has no offboarding "
                       "case: check the tenant id", tenant_id=tenant_id)
    now = desk.now()
    purge = desk.cases.start_purge(Purge(new_case_id("P", now), tenant_id,
                                         case.case_id if case else None, iso(now), actor))
    desk.audit.record(AuditKind.PURGE_STARTED, tenant_id, actor, purge_id=purge.purge_id,
                      case_id=purge.case_id, locations=[t.uri() for t in where])
    return purge


def _inventory(desk: CaseDesk, s3: Any, purge: Purge, where: list[Target]) -> None:
    """Record every version, delete marker and open upload, page by page (memory stays
    bounded), then abort the uploads: no process of the tenant runs under the lock."""
    tenant = purge.tenant_id
    records: list[dict[str, Any]] = []
    for target in where:
        for page in versions(s3, target.bucket, target.prefix, tenant):
            found = [ObjectVersion(target.bucket, v["Key"], v["VersionId"],
                                   *_classify(target, v["Key"]), int(v["Size"]), v["marker"])
                     for v in page]
            desk.cases.add_inventory(purge, found)
            records += [_key_record(s3, v) for v in found
                        if v.category == "data_keys" and not v.marker]
        uploads = _open_uploads(s3, target.bucket, target.prefix, tenant)
        desk.cases.add_inventory(purge, (ObjectVersion(
            target.bucket, k, f"upload:{upload_id}", "open_uploads", k, 0)
            for k, upload_id in uploads))
        objects.abort_uploads(s3, target.bucket, target.prefix, tenant)
    distinct = {json.dumps(r, sort_keys=True): r for r in records}
    desk.cases.record_purge_step(purge, "key_records", desk.now(),
                                 {"records": [distinct[k] for k in sorted(distinct)]})


def _key_record(s3: Any, found: ObjectVersion) -> dict[str, Any]:
    """Which master key wrapped a data-key record, and when (never the wrapped key itself):
    the certificate names the records it destroyed (docs/backup-format.md, section 8)."""
    try:
        body = s3.get_object(Bucket=found.bucket, Key=found.key, VersionId=found.version_id)
        record = json.loads(body["Body"].read())
        return {"key_id": str(record["key_id"]), "created_at": record.get("created_at")}
    except (ClientError, BotoCoreError, ValueError, KeyError, TypeError):
        return {"key_id": "unreadable", "created_at": None}


def _certify(desk: CaseDesk, key: Ed25519PrivateKey, purge: Purge, where: list[Target],
             actor: str) -> PurgeOutcome:
    """Build the certificate document once, store it unsigned, sign it; audit each fact once
    (a crash between an audit event and its mark repeats the event, never loses it)."""
    tenant = purge.tenant_id
    desk.cases.record_purge_step(purge, "completed", desk.now())
    steps = desk.cases.purge_steps(purge.purge_id)
    case = next((c for c in desk.cases.cases(tenant) if c.case_id == purge.case_id), None)
    if "completed_audited" not in steps:
        totals = desk.cases.inventory_totals(purge.purge_id)
        desk.audit.record(AuditKind.PURGE_COMPLETED, tenant, actor, purge_id=purge.purge_id,
                          case_id=purge.case_id, **{f"{c}_count": t["objects"]
                                                    for c, t in sorted(totals.items())})
        desk.cases.record_purge_step(purge, "completed_audited", desk.now())
    document = desk.cases.certificate_document(purge.purge_id)
    if document is None:
        document = desk.cases.store_certificate(
            purge, (built := _document(desk, purge, where, case, steps))["certificate_id"], built)
    signed = sign_certificate(key, document)
    if case is not None:
        desk.done(case, "purged", actor, purge_id=purge.purge_id,
                  certificate_id=document["certificate_id"])
    issued_now = "certificate_audited" not in steps
    if issued_now:
        desk.audit.record(AuditKind.CERTIFICATE_ISSUED, tenant, actor, purge_id=purge.purge_id,
                          certificate_id=document["certificate_id"], key_id=signed["key_id"])
        desk.cases.record_purge_step(purge, "certificate_audited", desk.now())
    return PurgeOutcome(signed, issued_now)


def _document(desk: CaseDesk, purge: Purge, where: list[Target], case: Case | None,
              steps: dict[str, str]) -> dict[str, Any]:
    """The unsigned certificate (``docs/offboarding.md``, "Deletion certificate")."""
    totals = desk.cases.inventory_totals(purge.purge_id)
    zero = {"objects": 0, "versions": 0, "bytes": 0, "units": 0}

    def part(category: str, *, counted: bool = True) -> dict[str, int]:
        found = totals.get(category, zero)
        shown = {k: found[k] for k in ("objects", "versions", "bytes")}
        return {"count": found["units"], **shown} if counted else shown

    keys = totals.get("data_keys", zero)
    records = (desk.cases.purge_step_details(purge.purge_id, "key_records") or {}).get(
        "records", [])
    head = desk.audit.head().anchor()
    now = desk.now()
    return {
        "certificate_id": new_case_id("D", now), "purge_id": purge.purge_id,
        "tenant_id": purge.tenant_id, "case_id": purge.case_id,
        "contract_end": case.contract_end if case else None,
        "retention_ended_at": case.purge_due if case else None,
        "issued_at": iso(now), "purge_started_at": purge.started_at,
        "purge_completed_at": steps["completed"],
        "deleted": {
            "export_packages": part("export_packages"),
            "migration_statements": part("migration_statements"),
            "backup_snapshots": part("backup_snapshots"),
            "backup_blobs": part("backup_blobs", counted=False),
            "backup_other": part("backup_other", counted=False),
            "open_uploads": {"count": totals.get("open_uploads", zero)["objects"]},
            "data_keys": {"count": keys["objects"], "versions": keys["versions"],
                          "destroyed_at": steps["key_destroyed"], "records": records},
        },
        "locations": [t.uri() for t in where],
        "not_deleted": {"platform_database": NOT_DELETED},
        "audit_head": {"seq": head.seq, "hash": head.hash},
    }


# -- export retention ------------------------------------------------------------------------


def expire_exports(desk: CaseDesk, s3: Any, *, dry_run: bool = False,
                   locked: Callable[[str], AbstractContextManager[Any]]) -> list[dict[str, Any]]:
    """Delete export packages whose retention ended, and incomplete folders older than a day.

    A package lives ``export_retention_days`` after its ``created`` time (datapackage.json),
    and at least until the purge of its tenant's open offboarding case; nothing of a tenant
    on legal hold is deleted. Incomplete folders are deleted under the tenant's lock
    (``locked``), so a running export is never touched.

    Returns:
        One row per package deleted (or kept because of a hold): tenant, export, why.
    """
    bucket = desk.settings.export_bucket
    report: list[dict[str, Any]] = []
    for parent in objects.list_prefixes(s3, bucket, "exports/"):
        tenant = parent.removeprefix("exports/").rstrip("/")
        try:
            validate_tenant_id(tenant)
        except BadInput:
            continue  # not ours: leave it alone
        case = open_case_of(desk.cases, tenant)
        keep_until = purge_at(case, desk.cases.steps(case.case_id)) if case else None
        held = desk.cases.hold(tenant) is not None
        for folder in objects.list_prefixes(s3, bucket, parent, tenant):
            row = _expiry(desk, s3, tenant, folder, keep_until)
            if row is None:
                continue
            if held:
                report.append({**row, "action": "kept: legal hold"})
                continue
            if dry_run:
                report.append({**row, "action": "would delete"})
                continue
            try:
                deleted = _expire(desk, s3, tenant, folder, row, locked)
            except TenantBusy:  # an export of the tenant runs: the next day will do
                deleted = None
            report.append({**row, "versions": deleted, "action": "deleted"} if deleted is not
                          None else {**row, "action": "kept: an export of the tenant runs"})
    return report


def _expiry(desk: CaseDesk, s3: Any, tenant: str, folder: str, keep_until: datetime | None
            ) -> dict[str, Any] | None:
    """Why the folder is due for deletion now, or None while it is retained."""
    bucket, now = desk.settings.export_bucket, desk.now()
    export_id = folder.rstrip("/").rsplit("/", 1)[-1]
    try:
        started = datetime.strptime(validate_export_id(export_id).split("-")[0],
                                    "%Y%m%dT%H%M%SZ").replace(tzinfo=now.tzinfo)
    except (BadInput, ValueError):
        return None  # not an export folder
    marker = folder + "datapackage.json"
    if objects.list_keys(s3, bucket, marker, tenant) == [marker]:
        created = _created(s3, bucket, marker, tenant) or started
        expires = created + timedelta(days=desk.settings.export_retention_days)
        if keep_until is not None:
            expires = max(expires, keep_until)
        reason = "retention ended"
    else:
        written = [m for _, m in objects.list_objects(s3, bucket, folder, tenant)]
        expires = max([started, *written]) + INCOMPLETE_AFTER
        reason = "incomplete"
    if now < expires:
        return None
    return {"tenant_id": tenant, "export_id": export_id, "reason": reason,
            "expired_at": iso(expires), "versions": None}


def _created(s3: Any, bucket: str, key: str, tenant: str) -> datetime | None:
    try:
        created = datetime.fromisoformat(json.loads(objects.read_bytes(s3, bucket, key,
                                                                       tenant))["created"])
    except (ValueError, KeyError, TypeError):
        return None
    return created if created.tzinfo else None


def _expire(desk: CaseDesk, s3: Any, tenant: str, folder: str, row: dict[str, Any],
            locked: Callable[[str], AbstractContextManager[Any]]) -> int | None:
    """Delete one folder, marker first (it stops being an export at once); audited. None: an
    incomplete folder was published meanwhile, and stays."""
    bucket = desk.settings.export_bucket
    if row["reason"] == "incomplete":
        with locked(tenant):  # no export of the tenant runs: its uploads are debris
            if objects.list_keys(s3, bucket, folder + "datapackage.json", tenant):
                return None
            objects.abort_uploads(s3, bucket, folder, tenant)
            deleted = delete_versions(s3, bucket, folder, tenant)
    else:
        deleted = delete_versions(s3, bucket, folder, tenant, lambda k: k.endswith(
            COMMIT_MARKERS)) + delete_versions(s3, bucket, folder, tenant)
    desk.audit.record(AuditKind.EXPORT_DELETED, tenant, "schedule", export_id=row["export_id"],
                      reason=row["reason"], versions_count=deleted)
    return deleted
