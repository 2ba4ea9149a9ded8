"""What the portal's API answers (and its pages show): the documents of the OpenAPI schema."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field


class ExportState(StrEnum):
    """Where an export stands."""

    REQUESTED = "requested"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    DELETED = "deleted"


class ExportFile(BaseModel):
    """One file of a package (sizes and SHA-256 from its ``datapackage.json``)."""

    path: str = Field(description="Path inside the package, e.g. data/members.csv.")
    bytes: int = Field(ge=0)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    rows: int | None = Field(default=None, description="Data rows, for CSV files.")
    download: str = Field(description="This API's URL that redirects to a short-lived link "
                          "for the file (each call is one audited download).")


class ExportProgress(BaseModel):
    """How far a running export has come: files already written to its package, their size,
    and the time since it started. No percentage: the total is unknown until it ends."""

    files_written: int = Field(ge=0)
    bytes_written: int = Field(ge=0)
    elapsed_seconds: int = Field(ge=0)


class Export(BaseModel):
    """An export of the caller's tenant: requested through the portal, or made for it by the
    operator (then ``id`` is the package's own id)."""

    id: str = Field(description="req-... for a request made here; else the package id.")
    state: ExportState = Field(description="requested, running, completed, failed; deleted "
                               "once the package's retention ended.")
    export_id: str | None = Field(default=None, description="The package's id, once "
                                  "published.")
    requested_at: datetime | None = None
    requested_by: str | None = Field(default=None, description="The contact who asked.")
    started_at: datetime | None = None
    finished_at: datetime | None = None
    failure: str | None = Field(default=None, description="Why it failed, in one line.")
    progress: ExportProgress | None = None
    created_at: datetime | None = Field(default=None, description="When the package was "
                                        "made.")
    retained_until: datetime | None = Field(default=None, description="When the package is "
                                            "deleted (files can be fetched until then).")
    bytes: int | None = Field(default=None, ge=0, description="Size of all files together.")
    files: list[ExportFile] = Field(default_factory=list)


class ExportList(BaseModel):
    """The tenant's exports, newest first, and how many more it may start today."""

    tenant_id: str
    exports: list[Export]
    exports_per_day: int = Field(ge=1, description="Exports a tenant may start in any 24 h.")
    started_last_24h: int = Field(ge=0)


class ExportOptions(BaseModel):
    """Options of a new export (the body may be omitted)."""

    model_config = ConfigDict(extra="forbid", strict=True)  # 0 or "yes" is not a boolean
    excel: bool = Field(default=False, description="Start CSV files with a UTF-8 byte order "
                        "mark, so Excel reads accents right.")


class Problem(BaseModel):
    """Why a request was refused: a stable code and one readable line."""

    error: str = Field(description="unauthorized, not_found, export_running, daily_limit, "
                       "file_changed, unavailable.")
    detail: str
    export_id: str | None = Field(default=None, description="With export_running: the id of "
                                  "the export under way.")
    retry_after_seconds: int | None = Field(default=None, ge=0, description="With "
                                            "daily_limit: when the next export may start.")


class BackupRun(BaseModel):
    """The last backup attempt: a completed snapshot, or a failure recorded after it."""

    state: str = Field(description="completed or failed.")
    at: datetime
    snapshot_id: str | None = None


class RestoreTest(BaseModel):
    """The last restore of one of the tenant's snapshots (a test or a real one)."""

    state: str = Field(description="completed or failed.")
    at: datetime
    snapshot_id: str | None = None


class BackupStatus(BaseModel):
    """The monitoring extract of Annex 1 for the caller's tenant."""

    tenant_id: str
    checked_at: datetime
    last_backup: BackupRun | None = Field(description="None: no backup is known.")
    last_completed_snapshot: BackupRun | None = None
    snapshots_retained: int = Field(ge=0)
    last_restore_test: RestoreTest | None = Field(description="None: no restore recorded.")
    basis: str = Field(description="Where these facts come from.")
