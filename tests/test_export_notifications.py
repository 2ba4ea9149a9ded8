"""What an export tells the outside (issues 12 and 13): the tenant's contacts get the
"export ready" email (names and sizes, never a link, the deletion date), the audit trail holds
export.requested / export.completed / links.minted / notification.sent (or export.failed with
its one-line reason), a ``tenant.export.ready`` Prefect event names ``tenant.<id>``, the metrics
count the export; the result says whether the email went out and if not why."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import pytest
from prefect.events.worker import EventsWorker

from kernel.errors import UnknownTenant
from kernel.settings import Settings
from monitoring import METADATA, FigureStore
from storage.audit import AuditTrail
from storage.control import open_control
from tests.conftest import Platform
from tests.package_checks import export
from tests.test_offboarding import Mailbox, add_contacts, body_of, emitted
from tests.test_offboarding import events as events  # noqa: PLC0414 - a fixture, re-used
from tests.test_offboarding import mailbox as mailbox  # noqa: PLC0414 - a fixture, re-used


def audit_events(tenant: str) -> list[dict[str, Any]]:
    trail = AuditTrail(Settings().resolved_control_url())
    try:
        return [e.as_dict() for e in trail.events(tenant)]
    finally:
        trail.close()


def figures(tenant: str) -> dict[str, float]:
    engine = open_control(Settings().resolved_control_url(), METADATA)
    try:
        return {f.family: f.value for f in FigureStore(engine).figures() if f.tenant_id == tenant}
    finally:
        engine.dispose()


@pytest.fixture
def agent(monkeypatch: pytest.MonkeyPatch) -> Iterator[socket.socket]:
    """A local DogStatsD "agent" the runs report to."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(10)
    monkeypatch.setenv("TENANT_EXPORT_DOGSTATSD_HOST", "127.0.0.1")
    monkeypatch.setenv("TENANT_EXPORT_DOGSTATSD_PORT", str(sock.getsockname()[1]))
    yield sock
    sock.close()


def datagrams(sock: socket.socket) -> str:
    lines = []
    sock.settimeout(2)
    try:
        while True:
            lines.append(sock.recv(65536).decode())
    except TimeoutError:
        pass
    return "\n".join(lines)


def test_contacts_told_audited_measured_and_announced(
        sqlite_platform: Platform, mailbox: Mailbox, events: EventsWorker,
        agent: socket.socket) -> None:
    add_contacts(sqlite_platform)
    result = export("t-1", requested_by="portal:anna@client.example")
    assert result["notice"] == {"sent": True, "recipients": 2, "reason": "sent"}

    (recipients, message), = mailbox.received
    assert sorted(recipients) == ["anna@client.example", "ben@client.example"]
    assert message["Subject"] == "[t-1] Your data export is ready"
    text = body_of(message)
    assert "://" not in text and "x-amz" not in text.lower()  # names and sizes only
    for f in result["files"][1:]:  # every file of the package, by name
        assert f["path"] in text
    assert result["files"][0]["path"] not in text  # the archive repeats them: not counted
    created = datetime.fromisoformat(result["created_at"])
    assert f"{created + timedelta(days=30):%Y-%m-%d %H:%M} UTC" in text  # deletion date
    assert result["package_expires_at"] == (created + timedelta(days=30)).isoformat()

    trail = audit_events("t-1")
    kinds = [e["kind"] for e in trail]
    assert kinds[-4:] == ["export.requested", "export.completed", "links.minted",
                          "notification.sent"]
    assert all(e["actor"] == "portal:anna@client.example" for e in trail[-4:])
    minted = trail[-2]["details"]
    assert minted == {"export_id": result["export_id"], "link_ttl_seconds": 3600,
                      "files_count": len(result["files"])}
    completed = trail[-3]["details"]
    assert completed["export_id"] == result["export_id"]
    assert completed["files_count"] == len(result["files"]) - 1
    assert completed["bytes"] == sum(f["bytes"] for f in result["files"][1:])
    assert not any("http" in json.dumps(e["details"]) for e in trail)  # never a link

    ready = [e for e in emitted(events) if e.event == "tenant.export.ready"]
    assert len(ready) == 1 and ready[0].resource.id == "tenant.t-1"
    assert ready[0].payload["export_id"] == result["export_id"]
    assert "http" not in json.dumps(ready[0].payload)

    kept = figures("t-1")
    assert kept["export.completed"] == 1 and kept["export.last_bytes"] == completed["bytes"]
    assert kept["export.last_duration_seconds"] > 0
    sent = datagrams(agent)
    assert "tenant_export.export.completed:1|c|#tenant:t-1" in sent
    assert f"tenant_export.export.last_bytes:{completed['bytes']}|g|#tenant:t-1" in sent


def test_the_result_says_why_no_email_went_out(sqlite_platform: Platform, mailbox: Mailbox,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    add_contacts(sqlite_platform)
    asked_not = export("t-1", notify=False)["notice"]
    assert asked_not["sent"] is False and "not asked for" in asked_not["reason"]
    assert export("t-empty")["notice"] == {
        "sent": False, "recipients": 0,
        "reason": "not sent: the tenant has no authorised contact"}
    assert mailbox.received == []
    monkeypatch.delenv("TENANT_EXPORT_SMTP_HOST")
    unconfigured = export("t-1")["notice"]
    assert unconfigured["sent"] is False and "no SMTP configured" in unconfigured["reason"]
    assert mailbox.received == []


def test_a_failed_export_is_audited_and_counted(sqlite_platform: Platform) -> None:
    with pytest.raises(UnknownTenant):
        export("nobody")
    failed = audit_events("nobody")
    assert [e["kind"] for e in failed] == ["export.requested", "export.failed"]
    assert failed[-1]["details"]["reason"] == "unknown tenant 'nobody'"
    assert figures("nobody")["export.failed"] == 1
