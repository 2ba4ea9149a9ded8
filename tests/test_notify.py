"""Notifications over a real SMTP server (aiosmtpd on 127.0.0.1): recipients, subject, body in
the tenant's language, never a link; at most two contacts; STARTTLS and login; honest outcomes
when nothing can be sent; SMTP failures classified as transient or terminal."""

from __future__ import annotations

import datetime as dt
import email
import ipaddress
import ssl
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.policy import default as default_policy
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from pydantic import SecretStr

from kernel.errors import BadInput, TerminalError, TransientError
from kernel.settings import Settings
from notify import (
    Letter,
    PackageFile,
    SmtpConfig,
    export_ready,
    language_of,
    notify_deletion,
    notify_export_ready,
    send,
)
from tests.services import free_port

DELETE_ON = dt.datetime(2026, 12, 26, 10, 15, tzinfo=dt.UTC)
FILES = [PackageFile("datapackage.json", 1234), PackageFile("data/members.csv", 99),
         PackageFile("documents/index.csv", 2048),
         PackageFile("documents/documents-0001.zip", 123_456_789)]
CONTACTS = ["anna@client.example", "Ben.Ops@client.example"]
EXPORT_ID = "20261126T101500Z-3f2a"


@dataclass
class Mailbox:
    """What the server received; ``refuse`` lists recipients it answers 550 to."""

    received: list[tuple[str, list[str], bytes, bool]] = field(default_factory=list)
    refuse: set[str] = field(default_factory=set)

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str,
                          rcpt_options: Any) -> str:
        if address in self.refuse:
            return "550 no such user"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.received.append((envelope.mail_from, list(envelope.rcpt_tos), envelope.content,
                              session.ssl is not None))
        return "250 Message accepted"

    def message(self, index: int = -1) -> EmailMessage:
        parsed = email.message_from_bytes(self.received[index][2], policy=default_policy)
        assert isinstance(parsed, EmailMessage)
        return parsed


def _serve(mailbox: Mailbox, **smtp: Any) -> tuple[Controller, int]:
    port = free_port()
    controller = Controller(mailbox, hostname="127.0.0.1", port=port, **smtp)
    controller.start()
    return controller, port


@pytest.fixture
def mailbox() -> Iterator[tuple[Mailbox, int]]:
    box = Mailbox()
    controller, port = _serve(box)
    yield box, port
    controller.stop()


def _plain(port: int) -> SmtpConfig:
    return SmtpConfig(host="127.0.0.1", port=port, starttls=False, sender="exports@saas.example",
                      timeout=10)


def _body(message: EmailMessage) -> str:
    part = message.get_body(("plain",))
    assert part is not None
    content = part.get_content()
    assert isinstance(content, str)
    return content


def test_export_ready_reaches_both_contacts_with_names_sizes_and_no_link(
        mailbox: tuple[Mailbox, int]) -> None:
    box, port = mailbox
    delivery = notify_export_ready(_plain(port), CONTACTS, tenant_id="t-42", export_id=EXPORT_ID,
                                   files=FILES, delete_on=DELETE_ON)
    assert delivery.sent and delivery.recipients == 2 and delivery.refused == 0
    assert delivery.kind == "export.ready" and delivery.message_id
    mail_from, rcpt_tos, raw, _tls = box.received[0]
    assert mail_from == "exports@saas.example"
    assert rcpt_tos == CONTACTS
    message = box.message()
    assert message["Subject"] == "[t-42] Your data export is ready"
    assert message["To"] == ", ".join(CONTACTS)
    assert message["Auto-Submitted"] == "auto-generated"
    assert message["Content-Language"] == "en"
    body = _body(message)
    for item in FILES:
        assert item.name in body
    assert "99 bytes" in body and "123.5 MB" in body and "1.2 kB" in body
    assert "4 files, 123.5 MB in total (123,460,170 bytes)" in body
    assert "2026-12-26 10:15 UTC" in body and EXPORT_ID in body
    assert "links are never sent by email" in body
    for forbidden in ("http", "://", "X-Amz", "x-amz"):
        assert forbidden not in body and forbidden.encode() not in raw
    assert all(len(line) <= 72 for line in body.splitlines())


@pytest.mark.parametrize(("language", "subject", "phrase"), [
    ("fr", "[t-42] Votre export de données est prêt", "123,5 Mo au total (123\u202f460\u202f170 "
     "octets)"),
    ("de-DE", "[t-42] Ihr Datenexport ist bereit", "insgesamt 123,5 MB (123.460.170 Bytes)"),
    ("es", "[t-42] Your data export is ready", "123.5 MB in total"),
    (None, "[t-42] Your data export is ready", "123.5 MB in total"),
])
def test_messages_in_the_tenant_language(mailbox: tuple[Mailbox, int], language: str | None,
                                         subject: str, phrase: str) -> None:
    box, port = mailbox
    notify_export_ready(_plain(port), CONTACTS[:1], tenant_id="t-42", export_id=EXPORT_ID,
                        files=FILES, delete_on=DELETE_ON, language=language)
    message = box.message()
    assert message["Subject"] == subject
    assert phrase in " ".join(_body(message).split("\n"))
    assert message["Content-Language"] == language_of(language)


@pytest.mark.parametrize(("language", "subject", "phrase"), [
    ("en", "[t-42] Your data will be deleted on 2026-12-26", "Your contract ended on 2026-11-26"),
    ("fr", "[t-42] Vos données seront supprimées le 2026-12-26", "Votre contrat a pris fin le "
     "2026-11-26"),
    ("de", "[t-42] Ihre Daten werden am 2026-12-26 gelöscht", "Ihr Vertrag endete am 2026-11-26"),
])
def test_deletion_notice(mailbox: tuple[Mailbox, int], language: str, subject: str,
                         phrase: str) -> None:
    box, port = mailbox
    delivery = notify_deletion(_plain(port), CONTACTS, tenant_id="t-42", delete_on=DELETE_ON,
                               contract_end=dt.date(2026, 11, 26), export_id=EXPORT_ID,
                               language=language)
    assert delivery.sent and delivery.kind == "deletion.notice"
    message = box.message()
    assert message["Subject"] == subject
    body = _body(message)
    assert phrase in body and EXPORT_ID in body and "2026-12-26 10:15 UTC" in body
    assert "://" not in body


def test_deletion_notice_without_export_asks_for_one(mailbox: tuple[Mailbox, int]) -> None:
    box, port = mailbox
    notify_deletion(_plain(port), CONTACTS, tenant_id="t-42", delete_on=dt.date(2026, 12, 26))
    body = " ".join(_body(box.message()).split())
    assert "request an export before that date" in body
    assert "contract ended" not in body


@pytest.mark.parametrize("letter", [
    Letter("export.ready", "en", "Ready", "Fetch it at https://bucket.s3.example/t-42/x.zip"),
    Letter("export.ready", "en", "Ready", "link: HTTP://example.org/x"),
    Letter("export.ready", "en", "Ready", "X-Amz-Signature=abcdef"),
    Letter("export.ready", "en", "Ready", "s3://tenant-exports/exports/t-42/"),
    Letter("export.ready", "en", "See https://x.example", "no link here"),
])
def test_a_letter_with_a_link_is_refused_before_connecting(mailbox: tuple[Mailbox, int],
                                                           letter: Letter) -> None:
    box, port = mailbox
    with pytest.raises(BadInput, match="contains a link"):
        send(_plain(port), CONTACTS, letter, tenant_id="t-42")
    assert box.received == []


def test_a_file_name_carrying_a_link_is_refused(mailbox: tuple[Mailbox, int]) -> None:
    box, port = mailbox
    files = [*FILES, PackageFile("https://evil.example/?X-Amz-Credential=AKIA", 1)]
    with pytest.raises(BadInput, match="contains a link"):
        notify_export_ready(_plain(port), CONTACTS, tenant_id="t-42", export_id=EXPORT_ID,
                            files=files, delete_on=DELETE_ON)
    assert box.received == []


def test_at_most_two_contacts(mailbox: tuple[Mailbox, int]) -> None:
    box, port = mailbox
    three = [*CONTACTS, "carl@client.example"]
    with pytest.raises(BadInput, match="at most 2 authorised contacts") as caught:
        notify_export_ready(_plain(port), three, tenant_id="t-42", export_id=EXPORT_ID,
                            files=FILES, delete_on=DELETE_ON)
    assert caught.value.tenant_id == "t-42"
    # the same contact twice (any case) is one contact
    twice = [*CONTACTS, "anna@CLIENT.example", " ben.ops@client.example "]
    delivery = notify_export_ready(_plain(port), twice, tenant_id="t-42", export_id=EXPORT_ID,
                                   files=FILES, delete_on=DELETE_ON)
    assert delivery.recipients == 2 and box.received[0][1] == CONTACTS
    with pytest.raises(BadInput, match="invalid contact"):
        notify_export_ready(_plain(port), ["not an address"], tenant_id="t-42",
                            export_id=EXPORT_ID, files=FILES, delete_on=DELETE_ON)
    assert len(box.received) == 1


def test_nothing_is_pretended(mailbox: tuple[Mailbox, int]) -> None:
    box, port = mailbox
    unconfigured = SmtpConfig(host=None)
    delivery = notify_export_ready(unconfigured, CONTACTS, tenant_id="t-42", export_id=EXPORT_ID,
                                   files=FILES, delete_on=DELETE_ON)
    assert not delivery.sent and delivery.reason.startswith("not sent: no SMTP configured")
    nobody = notify_export_ready(_plain(port), [], tenant_id="t-42", export_id=EXPORT_ID,
                                 files=FILES, delete_on=DELETE_ON)
    assert not nobody.sent and "no authorised contact" in nobody.reason
    assert box.received == []
    assert SmtpConfig.from_settings(Settings(smtp_host=None)).host is None


def test_refused_recipients(mailbox: tuple[Mailbox, int]) -> None:
    box, port = mailbox
    box.refuse = {CONTACTS[1]}
    partly = notify_export_ready(_plain(port), CONTACTS, tenant_id="t-42", export_id=EXPORT_ID,
                                 files=FILES, delete_on=DELETE_ON)
    assert partly.sent and partly.recipients == 1 and partly.refused == 1
    assert box.received[0][1] == CONTACTS[:1]
    box.refuse = set(CONTACTS)
    with pytest.raises(TerminalError, match="refused every recipient"):
        notify_export_ready(_plain(port), CONTACTS, tenant_id="t-42", export_id=EXPORT_ID,
                            files=FILES, delete_on=DELETE_ON)


def test_unreachable_server_is_transient() -> None:
    config = SmtpConfig(host="127.0.0.1", port=free_port(), starttls=False, timeout=5)
    with pytest.raises(TransientError, match="cannot reach SMTP server") as caught:
        notify_export_ready(config, CONTACTS, tenant_id="t-42", export_id=EXPORT_ID,
                            files=FILES, delete_on=DELETE_ON)
    assert caught.value.tenant_id == "t-42"


def test_password_never_crosses_the_network_in_clear() -> None:
    config = SmtpConfig(host="smtp.client.invalid", port=25, starttls=False, user="u",
                        password=SecretStr("pw-123"))
    with pytest.raises(BadInput, match="without STARTTLS"):
        notify_export_ready(config, CONTACTS, tenant_id="t-42", export_id=EXPORT_ID,
                            files=FILES, delete_on=DELETE_ON)
    assert "pw-123" not in repr(config)
    settings = Settings(smtp_host="smtp.saas.example", smtp_user="u",
                        smtp_password=SecretStr("pw-123"))
    assert "pw-123" not in repr(SmtpConfig.from_settings(settings))


def _certificate() -> tuple[bytes, bytes]:
    """A self-signed certificate for 127.0.0.1 (PEM cert, PEM key)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    key_pem = key.private_bytes(serialization.Encoding.PEM,
                                serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


@pytest.fixture
def tls_mailbox(tmp_path: Any) -> Iterator[tuple[Mailbox, int, ssl.SSLContext, list[str]]]:
    """A server that requires STARTTLS and a login (user ``ops``, password ``s3cret``)."""
    cert_pem, key_pem = _certificate()
    (tmp_path / "cert.pem").write_bytes(cert_pem)
    (tmp_path / "key.pem").write_bytes(key_pem)
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(tmp_path / "cert.pem", tmp_path / "key.pem")
    logins: list[str] = []

    def authenticator(server: Any, session: Any, envelope: Any, mechanism: str,
                      auth_data: Any) -> AuthResult:
        ok = (isinstance(auth_data, LoginPassword) and auth_data.login == b"ops"
              and auth_data.password == b"s3cret")
        if ok:
            logins.append(mechanism)
        return AuthResult(success=ok, handled=False)  # unhandled failure: server answers 535

    box = Mailbox()
    controller, port = _serve(box, tls_context=server_ctx, require_starttls=True,
                              authenticator=authenticator, auth_required=True)
    client_ctx = ssl.create_default_context(cadata=cert_pem.decode())
    yield box, port, client_ctx, logins
    controller.stop()


def test_starttls_and_login(tls_mailbox: tuple[Mailbox, int, ssl.SSLContext, list[str]]) -> None:
    box, port, trust, logins = tls_mailbox
    config = SmtpConfig(host="127.0.0.1", port=port, user="ops", password=SecretStr("s3cret"),
                        tls_context=trust, timeout=10)
    delivery = notify_export_ready(config, CONTACTS, tenant_id="t-42", export_id=EXPORT_ID,
                                   files=FILES, delete_on=DELETE_ON, language="de")
    assert delivery.sent
    assert box.received[0][3] is True  # delivered over TLS
    assert logins
    assert box.message()["Subject"] == "[t-42] Ihr Datenexport ist bereit"


def test_wrong_password_and_untrusted_certificate_are_terminal(
        tls_mailbox: tuple[Mailbox, int, ssl.SSLContext, list[str]]) -> None:
    box, port, trust, _logins = tls_mailbox
    wrong = SmtpConfig(host="127.0.0.1", port=port, user="ops", password=SecretStr("nope"),
                       tls_context=trust, timeout=10)
    with pytest.raises(TerminalError, match=r"SMTP login to 127\.0\.0\.1 failed") as caught:
        notify_export_ready(wrong, CONTACTS, tenant_id="t-42", export_id=EXPORT_ID,
                            files=FILES, delete_on=DELETE_ON)
    assert "nope" not in str(caught.value)
    untrusted = SmtpConfig(host="127.0.0.1", port=port, user="ops",
                           password=SecretStr("s3cret"), timeout=10)  # system CAs only
    with pytest.raises(TerminalError, match=r"STARTTLS with 127\.0\.0\.1 failed"):
        notify_export_ready(untrusted, CONTACTS, tenant_id="t-42", export_id=EXPORT_ID,
                            files=FILES, delete_on=DELETE_ON)
    assert box.received == []


def test_compose_refuses_what_is_not_a_name_and_a_size() -> None:
    with pytest.raises(BadInput, match="invalid package file"):
        export_ready(tenant_id="t-42", export_id=EXPORT_ID,
                     files=[PackageFile("a\nSubject: x", 1)], delete_on=DELETE_ON)
    with pytest.raises(BadInput, match="needs the package's files"):
        export_ready(tenant_id="t-42", export_id=EXPORT_ID, files=[], delete_on=DELETE_ON)
    with pytest.raises(BadInput, match="time zone"):
        export_ready(tenant_id="t-42", export_id=EXPORT_ID, files=FILES,
                     delete_on=dt.datetime(2026, 12, 26))  # naive: the point
    with pytest.raises(BadInput, match="invalid tenant id"):
        export_ready(tenant_id="../x", export_id=EXPORT_ID, files=FILES, delete_on=DELETE_ON)
