"""A whole offboarding case with the clock driven by the test (issue 12): final backup, export
with working links, "export ready" email on a local SMTP server, retention, deletion notice,
legal hold, purge by the sweeper, certificate. Afterwards nothing of the tenant is left in the
export and backup buckets (versions included), copies of its old snapshots put back cannot be
verified nor restored (the key is gone), the certificate verifies and a changed byte does not,
and the audit chain verifies with every step in it. Also: the contacts source."""

from __future__ import annotations

import email
import json
import sqlite3
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from email.message import EmailMessage
from email.policy import default as default_policy
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from prefect.events.clients import AssertingEventsClient
from prefect.events.worker import EventsWorker
from sqlalchemy import create_engine
from typer.testing import CliRunner

from flows import restore
from flows.context import S3Context
from flows.offboarding_flow import (
    OffboardingRequest,
    export_retention,
    offboarding,
    offboarding_sweeper,
)
from kernel.errors import BadInput, VerificationFailed
from kernel.settings import Settings
from sources.contacts import ContactsRule, read_contacts
from storage import backup_store
from storage.cases import CaseStore
from storage.keys import parse_master_key
from tenant_export.cli import app
from tests.conftest import Platform
from tests.helpers import download
from tests.services import free_port

runner = CliRunner()
CONTACTS: dict[str, list[tuple[str, str | None]]] = {
    "t-1": [("anna@client.example", "en"), ("ben@client.example", None)],
    "t-2": [("other@two.example", "de")]}


# -- fixtures shared with test_purge.py and test_retention_cleanup.py --------------------------


@dataclass
class Mailbox:
    """What the local SMTP server received: (recipients, parsed message)."""

    received: list[tuple[list[str], EmailMessage]] = field(default_factory=list)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        parsed = email.message_from_bytes(envelope.content, policy=default_policy)
        assert isinstance(parsed, EmailMessage)
        self.received.append((list(envelope.rcpt_tos), parsed))
        return "250 Message accepted"


@pytest.fixture
def mailbox(monkeypatch: pytest.MonkeyPatch) -> Iterator[Mailbox]:
    box = Mailbox()
    port = free_port()
    controller = Controller(box, hostname="127.0.0.1", port=port)
    controller.start()
    monkeypatch.setenv("TENANT_EXPORT_SMTP_HOST", "127.0.0.1")
    monkeypatch.setenv("TENANT_EXPORT_SMTP_PORT", str(port))
    monkeypatch.setenv("TENANT_EXPORT_SMTP_STARTTLS", "false")
    monkeypatch.setenv("TENANT_EXPORT_SMTP_FROM", "exports@saas.example")
    yield box
    controller.stop()


@pytest.fixture
def events(monkeypatch: pytest.MonkeyPatch) -> Iterator[EventsWorker]:
    """Prefect events land in a recording client (Prefect's own test client)."""
    AssertingEventsClient.reset()
    worker = EventsWorker.instance(AssertingEventsClient)
    monkeypatch.setattr(EventsWorker, "instance", lambda *_a, **_k: worker)
    yield worker
    worker.drain()


def emitted(worker: EventsWorker) -> list[Any]:
    worker.wait_until_empty()
    recorded: list[Any] = getattr(AssertingEventsClient.last, "events", [])
    return list(recorded)


def add_contacts(platform: Platform) -> None:
    """The platform's table of authorised contacts (tenant content like any other table)."""
    with sqlite3.connect(platform.source_url.removeprefix("sqlite:///")) as db:
        db.execute("CREATE TABLE tenant_contacts (id INTEGER PRIMARY KEY, tenant_id TEXT, "
                   "email TEXT, language TEXT)")
        for tenant, contacts in CONTACTS.items():
            db.executemany("INSERT INTO tenant_contacts (tenant_id, email, language) "
                           "VALUES (?, ?, ?)", [(tenant, a, lang) for a, lang in contacts])


def version(platform: Platform) -> None:
    """Versioned buckets: purge must delete every version, not only the current ones."""
    for bucket in (platform.export_bucket, platform.backup_bucket):
        platform.s3.put_bucket_versioning(Bucket=bucket,
                                          VersioningConfiguration={"Status": "Enabled"})


def versions_under(platform: Platform, bucket: str, prefix: str) -> list[tuple[str, str]]:
    pages = platform.s3.get_paginator("list_object_versions").paginate(Bucket=bucket,
                                                                      Prefix=prefix)
    return [(v["Key"], v["VersionId"]) for p in pages
            for v in p.get("Versions", []) + p.get("DeleteMarkers", [])]


def tenant_versions(platform: Platform, tenant: str) -> list[tuple[str, str]]:
    return (versions_under(platform, platform.export_bucket, f"exports/{tenant}/")
            + versions_under(platform, platform.export_bucket, f"migrations/{tenant}/")
            + versions_under(platform, platform.backup_bucket, f"backups/{tenant}/"))


def body_of(message: EmailMessage) -> str:
    part = message.get_body(("plain",))
    assert part is not None
    return str(part.get_content())


def audit_events(tenant: str) -> list[dict[str, Any]]:
    result = runner.invoke(app, ["audit", tenant, "--json"])
    assert result.exit_code == 0, result.stderr
    events: list[dict[str, Any]] = json.loads(result.stdout)["events"]
    return events


def copy_aside(platform: Platform, prefix: str) -> dict[str, bytes]:
    keys = [k for k, _ in versions_under(platform, platform.backup_bucket, prefix)]
    return {k: platform.s3.get_object(Bucket=platform.backup_bucket, Key=k)["Body"].read()
            for k in keys}


# -- the whole case ----------------------------------------------------------------------------


def test_whole_case_from_contract_end_to_certificate(
        sqlite_platform: Platform, mailbox: Mailbox, events: EventsWorker,
        tmp_path: Path) -> None:
    platform = sqlite_platform
    add_contacts(platform)
    version(platform)
    backed = runner.invoke(app, ["backup", "t-1", "t-2", "--json"])  # an earlier night
    assert backed.exit_code == 0, backed.stderr
    t2_before = sorted(tenant_versions(platform, "t-2"))
    key_record = backup_store.key_record_key("t-1")  # a second version of the key record
    record = platform.s3.get_object(Bucket=platform.backup_bucket, Key=key_record)["Body"].read()
    platform.s3.put_object(Bucket=platform.backup_bucket, Key=key_record, Body=record)

    t0 = datetime.now(UTC).replace(microsecond=0)
    contract_end = t0.date()
    due = datetime.combine(contract_end, datetime.min.time(), UTC) + timedelta(days=45)
    started = offboarding(OffboardingRequest(tenant_id="t-1", contract_end=contract_end,
                                             retention_days=45, requested_by="operator:maria"),
                          now=t0)

    case = started["case"]
    assert case["state"] == "waiting" and case["retention_ends_at"] == f"{due:%Y-%m-%dT%H:%M:%SZ}"
    assert [s["step"] for s in case["steps"]] == ["opened", "final_backup", "export",
                                                   "export_notice"]
    assert case["next_step"]["step"] == "deletion_notice"
    assert case["next_step"]["due_at"] == f"{due - timedelta(days=7):%Y-%m-%dT%H:%M:%SZ}"
    export = started["export"]  # the links are in the result, for the client
    status, data, _ = download(next(f["url"] for f in export["files"]
                                    if f["path"] == "datapackage.json"))
    assert status == 200 and json.loads(data)["name"]
    (recipients, ready), = mailbox.received
    assert sorted(recipients) == ["anna@client.example", "ben@client.example"]
    assert ready["Subject"] == "[t-1] Your data export is ready"
    text = body_of(ready)
    assert export["export_id"] in text and "datapackage.json" in text
    assert "://" not in text and "x-amz" not in text.lower()
    assert f"{due:%Y-%m-%d} 00:00 UTC" in text  # when the package goes

    with CaseStore(Settings().resolved_control_url()) as cases:  # nightly backups stop
        assert "final backup taken" in cases.backup_exclusions()["t-1"]

    resumed = offboarding(OffboardingRequest(tenant_id="t-1", contract_end=contract_end,
                                             retention_days=45), now=t0 + timedelta(hours=1))
    assert resumed["case"]["case_id"] == case["case_id"]  # a rerun resumes: nothing redone
    assert resumed["export"]["export_id"] == export["export_id"]  # fresh links, same package
    assert len(mailbox.received) == 1

    assert offboarding_sweeper(now=t0 + timedelta(days=1))[0]["outcome"] == "waiting"
    kept = export_retention(now=t0 + timedelta(days=31))  # the case keeps its export
    assert kept == [] and versions_under(platform, platform.export_bucket,
                                         f"exports/t-1/{export['export_id']}/")
    assert len(mailbox.received) == 1

    (noticed,) = offboarding_sweeper(now=due - timedelta(days=7))
    assert noticed["outcome"] == "waiting"
    (recipients, notice) = mailbox.received[1]
    assert sorted(recipients) == ["anna@client.example", "ben@client.example"]
    assert notice["Subject"] == f"[t-1] Your data will be deleted on {due:%Y-%m-%d}"
    notice_text = body_of(notice)
    assert "://" not in notice_text and export["export_id"] in notice_text

    held = runner.invoke(app, ["hold", "t-1", "--reason", "court order 12/2026", "--by",
                               "operator:legal"])
    assert held.exit_code == 0, held.stderr
    snapshots_before = copy_aside(platform, "backups/t-1/snapshots/")
    blobs_before = copy_aside(platform, "backups/t-1/blobs/")
    assert snapshots_before and blobs_before
    assert offboarding_sweeper(now=due)[0]["outcome"] == "held"
    assert versions_under(platform, platform.backup_bucket, "backups/t-1/")  # nothing deleted
    refused = runner.invoke(app, ["purge", "t-1", "--confirm"])
    assert refused.exit_code == 2
    assert "legal hold" in refused.stderr and "court order 12/2026" in refused.stderr
    status_held = json.loads(runner.invoke(app, ["offboard", "status", "t-1", "--json"]).stdout)
    assert status_held["state"] == "held" and "court order" in status_held["next_step"][
        "blocked_by"]
    assert runner.invoke(app, ["hold", "release", "t-1"]).exit_code == 0

    (purged,) = offboarding_sweeper(now=due + timedelta(hours=2))
    assert purged["outcome"] == "purged"
    assert tenant_versions(platform, "t-1") == []  # every version, the key record's too
    assert sorted(tenant_versions(platform, "t-2")) == t2_before  # the neighbour untouched
    assert len(mailbox.received) == 2

    with CaseStore(Settings().resolved_control_url()) as cases:
        assert cases.backup_exclusions()["t-1"].startswith("purged")
    rerun = offboarding(OffboardingRequest(tenant_id="t-1", contract_end=contract_end),
                        now=due + timedelta(days=1))  # a closed case is shown, not reopened
    assert rerun["case"]["case_id"] == case["case_id"] and rerun["export"] is None
    status = json.loads(runner.invoke(app, ["offboard", "status", "t-1", "--json"]).stdout)
    assert status["state"] == "closed" and status["next_step"] is None
    assert status["certificate_id"] == purged["certificate_id"]
    assert [s["step"] for s in status["steps"]] == [
        "opened", "final_backup", "export", "export_notice", "deletion_notice", "purged"]

    out = tmp_path / "t-1-certificate.json"
    again = runner.invoke(app, ["purge", "t-1", "--confirm", "--json", "--certificate-out",
                                str(out)])  # a rerun re-issues the same certificate
    assert again.exit_code == 0, again.stderr
    certificate = json.loads(again.stdout)
    assert out.read_text() == again.stdout
    assert certificate["certificate_id"] == purged["certificate_id"]
    assert certificate["case_id"] == case["case_id"]
    assert certificate["contract_end"] == contract_end.isoformat()
    deleted = certificate["deleted"]
    assert deleted["backup_snapshots"]["count"] == 2  # the earlier night's and the final one
    assert deleted["export_packages"]["count"] == 1
    assert deleted["data_keys"]["count"] == 1 and deleted["data_keys"]["versions"] == 2
    (record,) = deleted["data_keys"]["records"]  # the same record, written twice
    assert record["key_id"].startswith("local:") and record["created_at"]
    assert deleted["backup_blobs"]["objects"] == len(blobs_before)
    assert "platform's own job" in certificate["not_deleted"]["platform_database"]
    verified = runner.invoke(app, ["certificate", "verify", str(out)])
    assert verified.exit_code == 0, verified.stderr
    changed = out.read_text().replace(certificate["case_id"],
                                      certificate["case_id"][:-1] + (
                                          "0" if certificate["case_id"][-1] != "0" else "1"))
    out.write_text(changed)
    assert runner.invoke(app, ["certificate", "verify", str(out)]).exit_code == 1

    for key, content in {**snapshots_before, **blobs_before}.items():  # copies come back
        platform.s3.put_object(Bucket=platform.backup_bucket, Key=key, Body=content)
    old = sorted({k.split("/")[3] for k in snapshots_before})[0]
    ctx = S3Context.open(Settings())
    wrapper = parse_master_key(Settings().master_key_value() or "")
    with pytest.raises(VerificationFailed, match="no data key"):
        restore.verify_snapshot(ctx, wrapper, "t-1", old)
    target = tmp_path / "restored.sqlite"
    with pytest.raises(VerificationFailed, match="no data key"):
        restore.restore_snapshot(ctx, wrapper, "t-1", f"sqlite:///{target}", snapshot_id=old)
    assert not target.exists()
    assert runner.invoke(app, ["verify", "t-1", "--snapshot", old]).exit_code == 1

    chain = runner.invoke(app, ["audit", "verify", "--anchor",
                                f"{certificate['audit_head']['seq']}:"
                                f"{certificate['audit_head']['hash']}"])
    assert chain.exit_code == 0, chain.stderr
    trail = audit_events("t-1")
    steps = [e["details"]["step"] for e in trail if e["kind"] == "case.step"]
    assert steps == ["opened", "final_backup", "export", "export_notice", "deletion_notice",
                     "purged"]
    kinds = [e["kind"] for e in trail]
    for kind in ("notification.sent", "hold.set", "hold.released", "purge.started",
                 "purge.completed", "certificate.issued"):
        assert kind in kinds, kind
    assert kinds.count("certificate.issued") == 1
    released = next(e for e in trail if e["kind"] == "hold.released")
    assert released["actor"].startswith("operator:")
    assert not any("http" in json.dumps(e["details"]) for e in trail)  # never a link

    names = {(e.event, e.resource.id) for e in emitted(events)}
    assert ("tenant.export.ready", "tenant.t-1") in names
    assert ("tenant.offboarding.deletion_notice", "tenant.t-1") in names
    assert ("tenant.purged", "tenant.t-1") in names


def test_offboard_cli_refuses_bad_input_and_writes_nothing(sqlite_platform: Platform) -> None:
    cases = [
        (["offboard", "t-1", "--contract-end", "26.11.2026"], "not an ISO 8601 date"),
        (["offboard", "nosuch", "--contract-end", "2026-11-26"], "unknown tenant 'nosuch'"),
        (["offboard", "t-1", "--contract-end", "2026-11-26", "--notice-days", "0"], "Usage"),
        (["offboard", "status", "t-1"], "has no offboarding case"),
        (["hold", "release", "t-1"], "not on legal hold"),
        (["hold", "t-1", "--reason", " "], "needs a reason"),
    ]
    for args, message in cases:
        result = runner.invoke(app, args)
        assert result.exit_code == 2, (args, result.stdout, result.stderr)
        assert message in result.stderr, (args, result.stderr)
    assert audit_events("t-1") == []


# -- contacts ------------------------------------------------------------------------------------


def test_contacts_come_from_the_platform_at_most_two(tmp_path: Path) -> None:
    db = tmp_path / f"p-{uuid.uuid4().hex[:6]}.sqlite"
    engine = create_engine(f"sqlite:///{db}")
    assert read_contacts(engine, ContactsRule(), "t-1").addresses == ()  # no table: none
    with pytest.raises(BadInput, match="does not exist"):
        read_contacts(engine, ContactsRule(table="people"), "t-1")
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE tenant_contacts (tenant_id TEXT, email TEXT, language TEXT)")
        conn.executemany("INSERT INTO tenant_contacts VALUES (?, ?, ?)", [
            ("t-1", "b@x.example", None), ("t-1", "a@x.example", "fr"),
            ("t-2", "c@x.example", "de"), ("t-2", "d@x.example", None),
            ("t-2", "e@x.example", None)])
    found = read_contacts(engine, ContactsRule(), "t-1")
    assert found.addresses == ("a@x.example", "b@x.example") and found.language == "fr"
    with pytest.raises(BadInput, match="at most 2"):
        read_contacts(engine, ContactsRule(), "t-2")
    engine.dispose()


def test_case_dates_follow_the_contract_end() -> None:
    from flows.offboarding import notice_due
    from storage.cases import Case

    case = Case("O-1", "t-1", "2026-11-26", 30, 7, "2026-12-26T00:00:00Z",
                "2026-11-26T09:00:00Z", "operator")
    assert notice_due(case) == datetime(2026, 12, 19, tzinfo=UTC)
    assert date.fromisoformat(case.contract_end) + timedelta(days=30) == date(2026, 12, 26)


def test_a_deployments_run_may_not_bring_the_clock_forward(monkeypatch: pytest.MonkeyPatch
                                                           ) -> None:
    """Anyone who can start a run could otherwise purge every open case early."""
    from prefect.runtime import deployment

    from flows.offboarding_flow import replay_clock

    ahead = datetime.now(UTC) + timedelta(days=40)
    past = datetime.now(UTC) - timedelta(days=3)
    assert replay_clock(ahead) == ahead  # in-process (tests, the CLI's replay): allowed
    monkeypatch.setattr(deployment, "id", "2d6d2cbe-7a3b-4a6e-9d0e-2f0b4c1b7a11", raising=False)
    with pytest.raises(BadInput, match="in the future"):
        replay_clock(ahead)
    assert replay_clock(past) == past and replay_clock(None) is None
    with pytest.raises(BadInput, match="dated by the real clock"):  # offboarding, purge
        replay_clock(past, past=False)
    assert replay_clock(None, past=False) is None
