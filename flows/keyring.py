"""The key-encryption key of the backups, resolved from the settings for one run."""

from __future__ import annotations

from kernel.errors import BadInput
from kernel.settings import Settings
from storage.keys import KeyWrapper, parse_master_key


def master_key(settings: Settings) -> KeyWrapper:
    """The key wrapper of ``TENANT_EXPORT_MASTER_KEY`` (refused when unset)."""
    value = settings.master_key_value()
    if not value:
        raise BadInput("TENANT_EXPORT_MASTER_KEY is not set: backups are encrypted under it "
                       "(generate one with `tenant-export keygen`; keep it in a secret store)")
    return parse_master_key(value)
