"""One typed settings object, resolved once at the edge (CLI, demo, a worker's flow run) and
passed down; nothing below the edge reads the environment.

Secrets (the master key, database URLs that may carry a password, S3 credentials) are
``SecretStr``: ``repr``, logs and Prefect parameters show ``**********``, never the value.
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

STATE_DIR_NAME = "tenant-export"


def default_state_dir() -> Path:
    """``$XDG_STATE_HOME/tenant-export``, else ``~/.local/state/tenant-export``: absolute, so the
    CLI run from any folder, ``serve`` and workers of one installation share one control DB."""
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base).absolute() / STATE_DIR_NAME


def _secret(value: SecretStr | None) -> str | None:
    return value.get_secret_value() if value is not None else None


class Settings(BaseSettings):
    """Environment contract of DESIGN §3.2 (prefix ``TENANT_EXPORT_``) plus tuning knobs."""

    model_config = SettingsConfigDict(env_prefix="TENANT_EXPORT_", extra="ignore", frozen=True,
                                      populate_by_name=True)

    state_dir: Path = Field(
        default_factory=default_state_dir,
        description="Local state: the demo platform and the default control database. An "
        "absolute path (a relative one is made absolute when the settings are resolved).",
    )
    source_url: SecretStr | None = Field(
        default=None,
        description="SQLAlchemy URL of the platform database; default: the demo SQLite file.",
    )
    catalog: Path | None = Field(
        default=None, description="Path of a catalog TOML (DESIGN §3.3); default: discovery."
    )
    documents_bucket: str = Field(default="platform-documents")
    export_bucket: str = Field(default="tenant-exports")
    backup_bucket: str = Field(default="tenant-backups")
    control_url: SecretStr | None = Field(
        default=None,
        description="SQLAlchemy URL of the control database (migration ledger, audit trail, "
        "snapshot registry, lock holders, offboarding cases, portal tokens); default: "
        "control.sqlite in the state directory.",
    )
    master_key: SecretStr | None = Field(
        default=None, description="Base64 32-byte key-encryption key, or a KMS key id."
    )
    previous_master_key: SecretStr | None = Field(
        default=None, description="The master key being retired (base64 or a KMS key id): "
        "only `keys rewrap` reads with it, to rewrap every key record under master_key.")
    kms_endpoint_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("TENANT_EXPORT_KMS_ENDPOINT_URL", "AWS_ENDPOINT_URL_KMS"),
        description="KMS endpoint (an emulator, a VPC endpoint); default: boto3's own rules.")
    restore_target_url: SecretStr | None = Field(
        default=None,
        description="Database URL a restore writes into when the run names no target (it may "
        "carry a password, so it is never a flow parameter).",
    )

    s3_endpoint_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("TENANT_EXPORT_S3_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3",
                                      "AWS_ENDPOINT_URL"),
        description="S3 endpoint (MinIO, Ceph, an emulator); default: AWS.",
    )
    s3_region: str | None = Field(
        default=None,
        validation_alias=AliasChoices("TENANT_EXPORT_S3_REGION", "AWS_REGION",
                                      "AWS_DEFAULT_REGION"),
        description="S3 region; default us-east-1.",
    )
    s3_access_key_id: str | None = Field(
        default=None, description="Explicit S3 access key id; default: boto3's credential chain "
        "(AWS_* variables, profile, instance role).",
    )
    s3_secret_access_key: SecretStr | None = Field(
        default=None, description="Explicit S3 secret key, with s3_access_key_id.",
    )

    batch_rows: int = Field(
        default=20_000, ge=1, le=10_000_000,
        description="Rows per Arrow batch read from the database.",
    )
    batch_bytes: int = Field(
        default=64 * 1024**2, ge=1024, le=2 * 1024**3,
        description="A batch read from the database is cut once its values hold about this "
        "many bytes (wide rows would otherwise fill memory at batch_rows rows).",
    )
    arrow_reads: bool = Field(
        default=True,
        description="Read tables with ADBC (Arrow from the driver, PostgreSQL by COPY) where "
        "that is exact; false reads every table as Python tuples (slower, same bytes).",
    )
    fetch_concurrency: int = Field(
        default=16, ge=1, le=256,
        description="Object requests (document reads, uploads) in flight at once.",
    )
    zip_part_bytes: int = Field(
        default=2 * 1024**3,
        ge=1,
        description="A ZIP part is closed once it holds this many bytes (whole documents only).",
    )
    lock_wait_seconds: float = Field(
        default=30.0, ge=0, le=86_400, description="How long to wait for the per-tenant lock."
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

    export_retention_days: int = Field(
        default=30, ge=1, le=3650,
        description="Export packages are deleted this many days after they were made (and "
        "offboarding data this many days after the contract end).",
    )
    smtp_host: str | None = Field(default=None, description="SMTP server for notifications; "
                                  "unset: no email is sent (and the run says so).")
    smtp_port: int = Field(default=587, ge=1, le=65535)
    smtp_user: str | None = Field(default=None)
    smtp_password: SecretStr | None = Field(default=None)
    smtp_from: str = Field(default="tenant-export@localhost",
                           description="Sender address of notifications.")
    smtp_starttls: bool = Field(default=True, description="Upgrade the SMTP connection "
                                "with STARTTLS (off only for a local relay).")
    signing_key: SecretStr | None = Field(
        default=None, description="Ed25519 private key (base64, 32 bytes) that signs "
        "deletion certificates; default: one kept in the state directory.")

    dogstatsd_host: str | None = Field(
        default=None,
        validation_alias=AliasChoices("TENANT_EXPORT_DOGSTATSD_HOST", "DD_AGENT_HOST"),
        description="Datadog agent (DogStatsD) host; unset: no datagrams are sent.")
    dogstatsd_port: int = Field(
        default=8125, ge=1, le=65535,
        validation_alias=AliasChoices("TENANT_EXPORT_DOGSTATSD_PORT", "DD_DOGSTATSD_PORT"))
    offboarding_notice_days: int = Field(
        default=7, ge=1, le=90, description="The deletion notice goes out this many days "
        "before an offboarded tenant's data is purged.")

    keep_daily: int = Field(default=7, ge=0, description="Backups: daily snapshots kept.")
    keep_weekly: int = Field(default=4, ge=0, description="Backups: weekly snapshots kept.")
    keep_monthly: int = Field(default=12, ge=0, description="Backups: monthly snapshots kept.")

    @field_validator("state_dir")
    @classmethod
    def _absolute(cls, value: Path) -> Path:
        return value.expanduser().absolute()

    def resolved_source_url(self) -> str:
        """The platform database URL, defaulting to the demo SQLite file."""
        return _secret(self.source_url) or f"sqlite:///{self.state_dir / 'demo-platform.sqlite'}"

    def resolved_control_url(self) -> str:
        """The control database URL, defaulting to a SQLite file in the state directory."""
        return _secret(self.control_url) or f"sqlite:///{self.state_dir / 'control.sqlite'}"

    def master_key_value(self) -> str | None:
        """The master key itself (only the key wrapper should ever ask)."""
        return _secret(self.master_key)

    def restore_target_value(self) -> str | None:
        """The configured restore target URL, password included."""
        return _secret(self.restore_target_url)

    def smtp_password_value(self) -> str | None:
        """The SMTP password, when one is configured."""
        return _secret(self.smtp_password)

    def signing_key_value(self) -> str | None:
        """The certificate signing key, when one is configured."""
        return _secret(self.signing_key)

    def s3_secret_value(self) -> str | None:
        """The explicit S3 secret key, when one is configured."""
        return _secret(self.s3_secret_access_key)
