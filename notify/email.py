"""Plain-text email to a tenant's authorised contacts over SMTP.

Three rules hold here, whatever the caller passes: at most two recipients (Annex 1: up to two
authorised contacts per client); no link in any message (a URL or an S3 signature parameter in
the subject or body is refused before connecting); and no pretending (without an SMTP host the
outcome says "not sent"). The password never leaves this module except to ``SMTP.login``.
"""

from __future__ import annotations

import ipaddress
import re
import smtplib
import ssl
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from typing import Any

from pydantic import SecretStr

from kernel.errors import BadInput, TerminalError, TransientError
from kernel.settings import Settings
from notify.messages import Letter, PackageFile, deletion_notice, export_ready

MAX_CONTACTS = 2
_LINK = re.compile(r"[a-z][a-z0-9+.-]*://|x-amz-", re.IGNORECASE)
_ADDRESS = re.compile(r"[^@\s<>()\[\],;:\"\\]+@[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?")


@dataclass(frozen=True)
class SmtpConfig:
    """Where and how to send; ``host`` None means email is not configured."""

    host: str | None
    port: int = 587
    user: str | None = None
    password: SecretStr | None = None
    sender: str = "tenant-export@localhost"
    starttls: bool = True
    timeout: float = 30.0
    tls_context: ssl.SSLContext | None = field(default=None, repr=False)
    """Trust for STARTTLS; None: the system's CA store with hostname checking."""

    @classmethod
    def from_settings(cls, settings: Settings) -> SmtpConfig:
        """The ``TENANT_EXPORT_SMTP_*`` settings."""
        return cls(host=settings.smtp_host or None, port=settings.smtp_port,
                   user=settings.smtp_user or None, password=settings.smtp_password,
                   sender=settings.smtp_from, starttls=settings.smtp_starttls)


@dataclass(frozen=True)
class Delivery:
    """What happened to one notification (counts only: addresses are personal data)."""

    sent: bool
    kind: str
    recipients: int
    reason: str
    refused: int = 0
    message_id: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready, for a flow's result or an audit event."""
        return asdict(self)


def check_no_links(letter: Letter) -> None:
    """Refuse a letter whose subject or body holds a URL (any ``scheme://``) or ``X-Amz-``.

    Raises:
        BadInput: naming where the link is; nothing is sent.
    """
    for where, content in (("subject", letter.subject), ("body", letter.body)):
        found = _LINK.search(content)
        if found:
            raise BadInput(f"refused to send the {letter.kind} email: its {where} contains a "
                           f"link ({found.group(0)!r}...); emails carry names and sizes only")


def contacts_of(contacts: Sequence[str], tenant_id: str) -> list[str]:
    """The distinct, valid addresses (case-insensitive), at most two.

    Raises:
        BadInput: an invalid address, or more than two distinct contacts.
    """
    found: dict[str, str] = {}
    for raw in contacts:
        address = raw.strip() if isinstance(raw, str) else ""
        if not _ADDRESS.fullmatch(address):
            raise BadInput(f"invalid contact address {raw!r}", tenant_id=tenant_id)
        found.setdefault(address.lower(), address)
    if len(found) > MAX_CONTACTS:
        raise BadInput(f"{len(found)} contacts given: a tenant has at most {MAX_CONTACTS} "
                       "authorised contacts (terms, Annex 1)", tenant_id=tenant_id)
    return list(found.values())


def send(config: SmtpConfig, contacts: Sequence[str], letter: Letter, *,
         tenant_id: str) -> Delivery:
    """Send ``letter`` to the tenant's contacts (one message, every contact in To).

    Returns:
        ``Delivery``: ``sent`` True once the server accepted it for at least one contact;
        False with the reason when there is no contact or no SMTP host.

    Raises:
        BadInput: a link in the letter, bad or too many contacts, or credentials that would
            cross the network unencrypted.
        TransientError: the server cannot be reached or answered 4xx (retry later).
        TerminalError: TLS, login or every recipient refused.
    """
    check_no_links(letter)
    recipients = contacts_of(contacts, tenant_id)
    if not recipients:
        return Delivery(False, letter.kind, 0, "not sent: the tenant has no authorised contact")
    if not config.host:
        return Delivery(False, letter.kind, len(recipients),
                        "not sent: no SMTP configured (set TENANT_EXPORT_SMTP_HOST)")
    if config.user and not config.starttls and not _loopback(config.host):
        raise BadInput(f"refused to log in to {config.host} without STARTTLS: the SMTP password "
                       "would cross the network in clear", tenant_id=tenant_id)
    message = _message(config, recipients, letter)
    try:
        refused = _deliver(config, config.host, message, recipients)
    except smtplib.SMTPRecipientsRefused:
        raise TerminalError(f"{letter.kind} email: the SMTP server refused every recipient",
                            tenant_id=tenant_id) from None
    except smtplib.SMTPAuthenticationError as err:
        raise TerminalError(f"SMTP login to {config.host} failed ({err.smtp_code})",
                            tenant_id=tenant_id) from None
    except smtplib.SMTPNotSupportedError as err:
        raise TerminalError(f"SMTP server {config.host}: {err}", tenant_id=tenant_id) from None
    except smtplib.SMTPResponseException as err:
        kind = TransientError if 400 <= err.smtp_code < 500 else TerminalError
        raise kind(f"SMTP server {config.host} answered {err.smtp_code} "
                   f"{_text(err.smtp_error)}", tenant_id=tenant_id) from None
    except ssl.SSLError as err:
        raise TerminalError(f"STARTTLS with {config.host} failed: {err.reason or err}",
                            tenant_id=tenant_id) from None
    except (OSError, smtplib.SMTPException) as err:
        raise TransientError(f"cannot reach SMTP server {config.host}:{config.port}: "
                             f"{str(err) or type(err).__name__}", tenant_id=tenant_id) from None
    accepted = len(recipients) - len(refused)
    reason = "sent" if not refused else f"sent; {len(refused)} recipient(s) refused"
    return Delivery(True, letter.kind, accepted, reason, len(refused), message["Message-ID"])


def _message(config: SmtpConfig, recipients: list[str], letter: Letter) -> EmailMessage:
    message = EmailMessage()
    message["From"] = config.sender
    message["To"] = ", ".join(recipients)
    message["Subject"] = letter.subject
    message["Date"] = format_datetime(datetime.now(UTC))
    message["Message-ID"] = make_msgid(domain=config.sender.rpartition("@")[2] or None)
    message["Auto-Submitted"] = "auto-generated"
    message.set_content(letter.body, charset="utf-8", cte="quoted-printable")
    message["Content-Language"] = letter.language  # after set_content, which clears Content-*
    return message


def _deliver(config: SmtpConfig, host: str, message: EmailMessage,
             recipients: list[str]) -> dict[str, Any]:
    with smtplib.SMTP(host, config.port, timeout=config.timeout) as smtp:
        smtp.ehlo()
        if config.starttls:
            smtp.starttls(context=config.tls_context or ssl.create_default_context())
            smtp.ehlo()
        if config.user:
            password = config.password.get_secret_value() if config.password else ""
            smtp.login(config.user, password)
        return dict(smtp.send_message(message, from_addr=config.sender, to_addrs=recipients))


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _text(value: bytes | str) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def notify_export_ready(config: SmtpConfig, contacts: Sequence[str], *, tenant_id: str,
                        export_id: str, files: Sequence[PackageFile],
                        delete_on: date | datetime, language: str | None = None) -> Delivery:
    """Compose and send "your export is ready" (see ``messages.export_ready``)."""
    letter = export_ready(tenant_id=tenant_id, export_id=export_id, files=files,
                          delete_on=delete_on, language=language)
    return send(config, contacts, letter, tenant_id=tenant_id)


def notify_deletion(config: SmtpConfig, contacts: Sequence[str], *, tenant_id: str,
                    delete_on: date | datetime, contract_end: date | None = None,
                    export_id: str | None = None, language: str | None = None) -> Delivery:
    """Compose and send "your data will be deleted on DATE" (see ``messages.deletion_notice``)."""
    letter = deletion_notice(tenant_id=tenant_id, delete_on=delete_on, contract_end=contract_end,
                             export_id=export_id, language=language)
    return send(config, contacts, letter, tenant_id=tenant_id)
