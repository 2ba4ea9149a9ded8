"""The portal's own settings (prefix ``TENANT_EXPORT_PORTAL_``), beside the shared ``Settings``.

Resolved once at the edge (``tenant-export portal``, or ``create_app()`` behind another
server) and passed down, like ``kernel.settings.Settings``.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

EXPORT_DEPLOYMENT = "offboarding_export/offboarding-export"


class PortalSettings(BaseSettings):
    """How the portal serves clients: limits, links, cookies, how exports are started."""

    model_config = SettingsConfigDict(env_prefix="TENANT_EXPORT_PORTAL_", extra="ignore",
                                      frozen=True)

    exports_per_day: int = Field(
        default=3, ge=1, le=100,
        description="Exports one tenant may start in any 24 hours (a 429 answer beyond).",
    )
    link_ttl_seconds: int = Field(
        default=300, ge=1, le=3600,
        description="Lifetime of the signed link behind one download click.",
    )
    session_ttl_seconds: int = Field(
        default=8 * 3600, ge=60, le=7 * 86400,
        description="How long a browser stays signed in (the token's own expiry ends it "
        "sooner).",
    )
    secure_cookies: bool | None = Field(
        default=None,
        description="Mark cookies Secure (and name them __Host-...). Unset: Secure exactly when "
        "the request arrived over HTTPS (as the TLS proxy tells through X-Forwarded-Proto).",
    )
    starter: Literal["auto", "prefect", "in-process"] = Field(
        default="auto",
        description="How exports start: through the Prefect deployment, in a thread of the "
        "portal process, or (auto) the deployment when the Prefect API has it.",
    )
    deployment: str = Field(
        default=EXPORT_DEPLOYMENT, description="The export deployment, as flow/deployment.")
    host: str = Field(default="127.0.0.1", description="Address `tenant-export portal` binds.")
    forwarded_allow_ips: str = Field(
        default="127.0.0.1",
        description="Proxies whose X-Forwarded-For/-Proto headers are trusted (comma-separated "
        "addresses; the TLS reverse proxy's).",
    )
