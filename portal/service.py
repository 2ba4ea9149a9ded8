"""What a contact can do, whatever the door (API or web page): list, follow and start its
tenant's exports, fetch their files, read the backup extract.

Every method takes the authenticated ``Contact`` and reads only under its tenant: requests by
``tenant_id`` in the control database, packages under ``exports/<tenant>/`` in the bucket. An
id of another tenant therefore finds nothing and is answered like an id that never existed
(404), never "forbidden", which would confirm that it exists.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

from kernel.errors import VerificationFailed
from kernel.settings import Settings
from kernel.timeparse import shown
from portal.backups import backup_status
from portal.config import PortalSettings
from portal.jobs import WINDOW, Busy, Job, JobStore
from portal.models import (
    BackupStatus,
    Export,
    ExportFile,
    ExportList,
    ExportOptions,
    ExportProgress,
    ExportState,
    Problem,
)
from portal.packages import Package, PackageReader, export_time
from portal.starters import (
    ExportStarter,
    RunUpdate,
    choose_starter,
    failure_line,
    prefect_status,
    stale,
)
from storage.audit import AuditKind, AuditTrail
from storage.s3 import make_client
from storage.snapshots import SnapshotStore
from storage.tokens import Contact, TokenStore

log = logging.getLogger("portal")
LISTED_REQUESTS = 100
"""The newest requests a listing shows (a tenant may start a few a day)."""
_REQUEST_ID = re.compile(r"req-\d{8}T\d{6}Z-[0-9a-f]{8}")
StarterFactory = Callable[[Settings, PortalSettings, JobStore], ExportStarter]


class Refusal(Exception):
    """A request the portal refuses: HTTP status, a stable code, one readable line."""

    def __init__(self, status: int, error: str, detail: str, *,
                 headers: dict[str, str] | None = None, **extra: Any) -> None:
        super().__init__(detail)
        self.status, self.error, self.detail = status, error, detail
        self.headers, self.extra = headers or {}, extra

    def problem(self) -> Problem:
        """The JSON body."""
        return Problem(error=self.error, detail=self.detail, **self.extra)


def not_found(what: str) -> Refusal:
    """The same answer for "never existed" and "another tenant's"."""
    return Refusal(404, "not_found", f"no {what} for this account")


def _named(ref: str) -> str:
    """An id or path from the request, quoted and cut short for a message."""
    return shown(ref, 100)


@dataclass
class Portal:
    """The portal's services, opened once per process and shared by every request."""

    settings: Settings
    config: PortalSettings
    tokens: TokenStore
    jobs: JobStore
    audit: AuditTrail
    packages: PackageReader
    snapshots: SnapshotStore
    starter: ExportStarter
    clock: Callable[[], datetime]

    @classmethod
    def open(cls, settings: Settings, config: PortalSettings, *,
             starter: StarterFactory | None = None,
             clock: Callable[[], datetime] | None = None) -> Portal:
        """Stores on the control database, one S3 client, the starter the settings ask for."""
        now = clock or (lambda: datetime.now(UTC))
        url = settings.resolved_control_url()
        jobs = JobStore(url, clock=now)
        s3 = make_client(settings)
        return cls(settings=settings, config=config, tokens=TokenStore(url, clock=now),
                   jobs=jobs, audit=AuditTrail(url, clock=now),
                   packages=PackageReader(s3, settings.export_bucket),
                   snapshots=SnapshotStore(s3, settings.backup_bucket),
                   starter=(starter or choose_starter)(settings, config, jobs), clock=now)

    def close(self) -> None:
        """Release the database engines."""
        for store in (self.tokens, self.jobs, self.audit):
            store.close()

    # -- reading -------------------------------------------------------------------------------

    def exports(self, who: Contact) -> ExportList:
        """The tenant's requests and retained packages, newest first."""
        tenant = who.tenant_id
        jobs = [self._refreshed(j) for j in self.jobs.jobs(tenant)[:LISTED_REQUESTS]]
        packages = {p.export_id: p for p in self.packages.packages(tenant)}
        claimed = {j.export_id for j in jobs if j.export_id}
        views = [self._view(j, packages.get(j.export_id or "")) for j in jobs]
        views += [self._view(None, p) for i, p in packages.items() if i not in claimed]
        views.sort(key=lambda v: v.requested_at or v.created_at or datetime.min.replace(
            tzinfo=UTC), reverse=True)
        started = len(self.jobs.counted_since(tenant, self.clock() - WINDOW))
        return ExportList(tenant_id=tenant, exports=views,
                          exports_per_day=self.config.exports_per_day, started_last_24h=started)

    def export(self, who: Contact, ref: str) -> Export:
        """One export by the id the listing gave (a request id or a package id)."""
        job, package = self._find(who, ref)
        return self._view(job, package, ref=ref)

    def backups(self, who: Contact) -> BackupStatus:
        """The monitoring extract of Annex 1."""
        return backup_status(who.tenant_id, self.snapshots, self.audit, self.clock())

    # -- acting --------------------------------------------------------------------------------

    def start(self, who: Contact, options: ExportOptions, channel: str) -> Export:
        """Start an export of the tenant: at most one at a time, at most N in 24 hours.

        Raises:
            Refusal: 409 while one is requested or running, 429 beyond the daily limit, 503
            when the starter could not launch it (it then does not count).
        """
        tenant = who.tenant_id
        active = self.jobs.active(tenant)
        current = self._refreshed(active) if active is not None else None
        if current is not None and current.active:
            raise _busy(current)
        now = self.clock()
        counted = self.jobs.counted_since(tenant, now - WINDOW)
        if len(counted) >= self.config.exports_per_day:
            free_at = datetime.fromisoformat(counted[0]) + WINDOW
            wait = max(1, math.ceil((free_at - now).total_seconds()))
            raise Refusal(429, "daily_limit", f"{len(counted)} exports were started in the "
                          f"last 24 hours, the most allowed ({self.config.exports_per_day}); "
                          f"the next may start in {wait} s", headers={"Retry-After": str(wait)},
                          retry_after_seconds=wait)
        try:
            job = self.jobs.create(tenant, who.contact, who.token_id, excel=options.excel)
        except Busy as busy:
            raise _busy(busy.job) from None
        try:
            self.audit.record(AuditKind.EXPORT_REQUESTED, tenant, who.contact,
                              request_id=job.request_id, token_id=who.token_id,
                              channel=channel, excel=options.excel)
            run_ref = self.starter.start(job)
        except Exception as err:
            self.jobs.failed(job.request_id, f"could not start: {failure_line(err)}")
            log.error("export request %s of tenant %s could not start", job.request_id,
                      tenant, exc_info=err)
            raise Refusal(503, "unavailable", "the export could not be started; try again "
                          "later") from err
        self.jobs.started(job.request_id, self.starter.name, run_ref)
        return self.export(who, job.request_id)

    def download(self, who: Contact, ref: str, path: str, channel: str) -> str:
        """A link to one file of a retained package, signed for one click (a bearer secret:
        the caller redirects to it and never logs it). Recorded in the audit trail first.

        Raises:
            Refusal: 404 for an unknown export or a path that is not one of its files, 410
            when the object no longer matches the manifest.
        """
        _, package = self._find(who, ref)
        file = package.file(path) if package is not None else None
        if package is None or file is None:
            raise not_found(f"file {_named(path)} in export {_named(ref)}")
        try:
            self.packages.check(package, file)
        except VerificationFailed as err:
            raise Refusal(410, "file_changed", f"{path} of export {ref} is no longer "
                          "available as published; start a new export") from err
        ttl = self.config.link_ttl_seconds
        self.audit.record(AuditKind.DOWNLOAD, who.tenant_id, who.contact,
                          export_id=package.export_id, file=path, bytes=file.bytes,
                          link_ttl_seconds=ttl, token_id=who.token_id, channel=channel)
        return self.packages.sign(package, file, ttl)

    # -- internals -----------------------------------------------------------------------------

    def _find(self, who: Contact, ref: str) -> tuple[Job | None, Package | None]:
        """The request and/or package ``ref`` names under the caller's tenant, or 404."""
        tenant = who.tenant_id
        if _REQUEST_ID.fullmatch(ref):
            job = self.jobs.get(tenant, ref)
            if job is None:
                raise not_found(f"export {_named(ref)}")
            job = self._refreshed(job)
            package = self.packages.package(tenant, job.export_id) if job.export_id else None
            return job, package
        package = self.packages.package(tenant, ref)
        if package is None:
            raise not_found(f"export {_named(ref)}")
        job = next((j for j in self.jobs.jobs(tenant) if j.export_id == ref), None)
        return job, package

    def _refreshed(self, job: Job) -> Job:
        """An active request brought up to date with its run (as far as it can be read)."""
        if not job.active:
            return job
        try:
            update = self._status(job)
            if update is not None:
                self._apply(job, update)
        except Exception as err:  # noqa: BLE001 - an unreadable run leaves the request as is
            log.warning("could not read the run of export request %s: %s", job.request_id,
                        failure_line(err))
        return self.jobs.get(job.tenant_id, job.request_id) or job

    def _status(self, job: Job) -> RunUpdate | None:
        if job.starter == self.starter.name:
            return self.starter.status(job)
        if job.starter == "prefect" and job.run_ref:
            return prefect_status(job.run_ref)
        return stale(job, self.clock())  # in-process elsewhere, or never reached a starter

    def _apply(self, job: Job, update: RunUpdate) -> None:
        if update.state == "running" and job.state == "requested":
            self.jobs.running(job.request_id, update.started_at)
        elif update.state == "failed":
            self.jobs.failed(job.request_id, update.failure or "failed")
        elif update.state == "completed":
            package = self._published_by(job, update)
            if package is None:
                self.jobs.failed(job.request_id, "the run completed but no package of it "
                                 "was found in the export bucket")
            else:
                self.jobs.completed(job.request_id, package.export_id)

    def _published_by(self, job: Job, update: RunUpdate) -> Package | None:
        """The package a run made, known only by its time (a deployment's result is not
        kept): the oldest unclaimed one started within the run, which the per-tenant lock
        runs one at a time."""
        begun = update.started_at or datetime.fromisoformat(job.started_at or job.requested_at)
        ended = update.finished_at or self.clock()
        floor = begun.replace(microsecond=0) - timedelta(seconds=1)
        claimed = self.jobs.claimed(job.tenant_id)
        found = [p for p in self.packages.packages(job.tenant_id)
                 if p.export_id not in claimed
                 and floor <= export_time(p.export_id) <= ended + timedelta(seconds=1)]
        return min(found, key=lambda p: p.export_id) if found else None

    def _view(self, job: Job | None, package: Package | None, ref: str | None = None) -> Export:
        ident = ref or (job.request_id if job else package.export_id if package else "")
        state = ExportState(job.state) if job else ExportState.COMPLETED
        if state is ExportState.COMPLETED and package is None:
            state = ExportState.DELETED
        fields: dict[str, Any] = {"id": ident, "state": state}
        if job is not None:
            fields.update(export_id=job.export_id, requested_at=job.requested_at,
                          requested_by=job.contact, started_at=job.started_at,
                          finished_at=job.finished_at, failure=job.failure,
                          progress=self._progress(job))
        if package is not None:
            created = datetime.fromisoformat(package.created_at) if package.created_at else None
            retention = timedelta(days=self.settings.export_retention_days)
            fields.update(
                export_id=package.export_id, created_at=created,
                retained_until=created + retention if created else None,
                bytes=package.total_bytes,
                files=[ExportFile(path=f.path, bytes=f.bytes, sha256=f.sha256, rows=f.rows,
                                  download=f"/v1/exports/{quote(ident)}/files/{quote(f.path)}")
                       for f in package.files])
        return Export.model_validate(fields)

    def _progress(self, job: Job) -> ExportProgress | None:
        if job.state != "running":
            return None
        since = datetime.fromisoformat(job.started_at or job.requested_at)
        elapsed = max(0, int((self.clock() - since).total_seconds()))
        staged = self.packages.staged(job.tenant_id, since)
        return ExportProgress(files_written=staged.files_written if staged else 0,
                              bytes_written=staged.bytes_written if staged else 0,
                              elapsed_seconds=elapsed)


def _busy(job: Job | None) -> Refusal:
    what = (f"export {job.request_id} is {job.state} since {job.requested_at}" if job
            else "an export is already under way")
    return Refusal(409, "export_running", f"{what}: one export at a time; wait for it to "
                   "finish", export_id=job.request_id if job else None)
