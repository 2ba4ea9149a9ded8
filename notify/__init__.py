"""Notifications: plain-text emails to a tenant's authorised contacts (names and sizes, never a
link). A stage: imports the kernel only, never Prefect nor the other stages."""

from notify.email import (
    Delivery,
    SmtpConfig,
    check_no_links,
    contacts_of,
    notify_deletion,
    notify_export_ready,
    send,
)
from notify.messages import Letter, PackageFile, deletion_notice, export_ready, language_of

__all__ = [
    "Delivery",
    "Letter",
    "PackageFile",
    "SmtpConfig",
    "check_no_links",
    "contacts_of",
    "deletion_notice",
    "export_ready",
    "language_of",
    "notify_deletion",
    "notify_export_ready",
    "send",
]
