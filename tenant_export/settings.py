"""One typed settings object, resolved once at the edge (CLI, flow entry) and passed down."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_STATE_DIR = Path(".tenant-export")


class Settings(BaseSettings):
    """Environment contract of DESIGN §3.2 (prefix ``TENANT_EXPORT_``) plus tuning knobs.

    AWS endpoint, credentials and region are not here on purpose: boto3 reads the standard
    ``AWS_*`` variables itself, so the same process works against real S3 or an emulator.
    """

    model_config = SettingsConfigDict(env_prefix="TENANT_EXPORT_", extra="ignore")

    state_dir: Path = Field(
        default=DEFAULT_STATE_DIR,
        description="Local directory for the demo database and the default control database.",
    )
    source_url: str | None = Field(
        default=None,
        description="SQLAlchemy URL of the platform database; default: the demo SQLite file.",
    )
    catalog: Path | None = Field(
        default=None, description="Path of a catalog TOML (DESIGN §3.3); default: discovery."
    )
    documents_bucket: str = Field(default="platform-documents")
    export_bucket: str = Field(default="tenant-exports")
    backup_bucket: str = Field(default="tenant-backups")
    control_url: str | None = Field(
        default=None, description="SQLAlchemy URL of the control database (ledger, audit)."
    )
    master_key: str | None = Field(
        default=None, description="Base64 32-byte key-encryption key, or a KMS key id."
    )
    batch_rows: int = Field(
        default=20_000, ge=1, description="Rows per Arrow batch read from the database."
    )
    zip_part_bytes: int = Field(
        default=2 * 1024**3,
        ge=1,
        description="A ZIP part is closed once it holds this many bytes (whole documents only).",
    )
    lock_wait_seconds: float = Field(
        default=30.0, ge=0, description="How long to wait for the per-tenant lock."
    )

    price_list: Path | None = Field(
        default=None,
        description="Price list TOML for assisted migration; default: 150.00 EUR/h (Annex 1).",
    )
    migration_wait_seconds: int = Field(
        default=7 * 24 * 3600, ge=1,
        description="How long the case flow waits for the next operator input before it asks "
        "again (the case itself stays open).",
    )
    migration_poll_seconds: int = Field(
        default=10, ge=1, description="How often a waiting case flow checks for input."
    )

    keep_daily: int = Field(default=7, ge=0, description="Backups: daily snapshots kept.")
    keep_weekly: int = Field(default=4, ge=0, description="Backups: weekly snapshots kept.")
    keep_monthly: int = Field(default=12, ge=0, description="Backups: monthly snapshots kept.")

    def resolved_source_url(self) -> str:
        """The platform database URL, defaulting to the demo SQLite file."""
        return self.source_url or f"sqlite:///{self.state_dir / 'demo-platform.sqlite'}"

    def resolved_control_url(self) -> str:
        """The control database URL, defaulting to a SQLite file in the state directory."""
        return self.control_url or f"sqlite:///{self.state_dir / 'control.sqlite'}"
